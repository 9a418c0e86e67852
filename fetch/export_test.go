package fetch

// HeldBytes is the bytes of leaves the Reader holds in memory, for tests.
func (r *Reader) HeldBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, s := range r.st {
		n += int64(len(s.data))
	}
	return n
}

// AheadLeaves is how many leaves past the window the Reader has asked of
// peers or holds until they are stored, and the most it may, for tests.
func (r *Reader) AheadLeaves() (n, most int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.curLeaf()
	return r.aheadLocked(cur+r.f.windowLeaves(), min(len(r.leaves), cur+r.f.cfg.ReadAhead)), r.f.aheadLeaves()
}
