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

// StuckAfter is how long a reader waits on a leaf asked of peers before
// asking again (stuckAfter).
const StuckAfter = stuckAfter
