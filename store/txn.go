package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/meshcdn/meshcdn/internal/dagfile"
)

// Txn stores the blocks of one piece of content so that it lands whole or not
// at all: blocks put through a Txn, and blocks already held that it puts
// again, cannot be evicted while it is open. Commit names the content (its
// blocks are then evicted together, or never if pinned); Discard, or a failed
// Commit followed by Discard, deletes the blocks that the Txn added and
// nothing else holds. Always call Discard, also after Commit (it does nothing
// then). A Txn is safe for concurrent use.
type Txn struct {
	s        *Store
	held     map[*blockMeta]bool // true for blocks this Txn wrote
	expected []string            // keys in s.expect naming this Txn
	done     bool
}

// errTxnDone is returned by a Txn's calls made after (or racing with) its
// Discard or Commit.
var errTxnDone = errors.New("store: Txn finished")

// Begin opens a Txn.
func (s *Store) Begin() *Txn {
	return &Txn{s: s, held: make(map[*blockMeta]bool)}
}

// hold keeps b from eviction until the Txn ends. The caller holds s.mu.
func (t *Txn) hold(b *blockMeta, isNew bool) {
	if _, ok := t.held[b]; ok {
		return
	}
	t.held[b] = isNew
	if b.elem != nil {
		t.s.lru.Remove(b.elem)
		b.elem = nil
	}
	b.refs++
}

// forget undoes hold for a block whose write failed. The caller holds s.mu.
func (t *Txn) forget(b *blockMeta) {
	if _, ok := t.held[b]; ok {
		delete(t.held, b)
		b.refs--
	}
}

// Put checks a block against its CID and stores it as part of the Txn. It
// fails with ErrHashMismatch for a block that does not match, and with
// ErrQuotaExceeded when the block cannot fit even after eviction.
func (t *Txn) Put(ctx context.Context, b blocks.Block) error {
	if t.isDone() {
		return errTxnDone
	}
	return t.s.putChecked(ctx, b, t)
}

// Expect holds the blocks cs name for the Txn, as Put does, without their
// bytes: those the store holds now at once, the others when they are put,
// by anyone (a fetch putting blocks one by one, as bitswap does). A block
// it holds this way is not the Txn's: Discard leaves it in the store,
// evictable. It keeps content fetched block by block whole until Commit
// while other writes evict to make room.
func (t *Txn) Expect(cs ...cid.Cid) error {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if t.done {
		return errTxnDone
	}
	for _, c := range cs {
		key := string(c.Hash())
		if b := s.blocks[key]; b != nil && !b.missing {
			t.hold(b, false)
		}
		// Listed even when held: a write under way may fail, and the
		// block is then put again as a new one.
		if s.expect == nil {
			s.expect = make(map[string][]*Txn)
		}
		if !slices.Contains(s.expect[key], t) {
			s.expect[key] = append(s.expect[key], t)
			t.expected = append(t.expected, key)
		}
	}
	return nil
}

// unexpect takes the Txn off the store's expected blocks. The caller holds
// s.mu.
func (t *Txn) unexpect() {
	for _, key := range t.expected {
		l := slices.DeleteFunc(t.s.expect[key], func(e *Txn) bool { return e == t })
		if len(l) == 0 {
			delete(t.s.expect, key)
		} else {
			t.s.expect[key] = l
		}
	}
	t.expected = nil
}

func (t *Txn) isDone() bool {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.done
}

// Commit names root as held content. Every block of root's DAG must be held
// (put through this Txn or already in the store), else it fails with
// ErrIncomplete; each inner node read is checked against its CID. With pin,
// the content is pinned.
func (t *Txn) Commit(ctx context.Context, root cid.Cid, pin bool) error {
	if t.isDone() {
		return fmt.Errorf("store: commit %s: %w", root, errTxnDone)
	}
	order, err := t.claimDAG(ctx, root)
	if err != nil {
		return err
	}
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if t.done { // discarded while its DAG was walked
		return fmt.Errorf("store: commit %s: %w", root, errTxnDone)
	}
	if rm := s.roots[string(root.Hash())]; rm != nil {
		return t.touch(ctx, rm, pin)
	}
	rm := &rootMeta{c: root, pinned: pin, used: time.Now()}
	rm.saved = rm.used
	seen := make(map[*blockMeta]bool, len(order))
	for _, b := range order {
		if !seen[b] {
			seen[b] = true
			rm.blocks = append(rm.blocks, b)
			rm.size += b.size
		}
	}
	if s.readOnly {
		return fmt.Errorf("store: commit %s: %w", root, ErrReadOnly)
	}
	if err := s.saveRoot(ctx, rm); err != nil {
		return fmt.Errorf("store: commit %s: %w", root, err)
	}
	s.attachRoot(rm)
	if pin {
		s.pinsChanged()
	}
	t.release(true)
	s.emit(Event{Kind: Added, Root: root, Size: rm.size, Pinned: pin})
	return nil
}

// claimDAG walks root's DAG through the store and holds every block of it
// for the transaction, in DAG order; a block that is not held gives
// ErrIncomplete.
func (t *Txn) claimDAG(ctx context.Context, root cid.Cid) ([]*blockMeta, error) {
	s := t.s
	var order []*blockMeta
	claim := func(c cid.Cid) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		for {
			if s.closed {
				return ErrClosed
			}
			if t.done {
				return errTxnDone
			}
			b := s.blocks[string(c.Hash())]
			if waited, err := s.awaitWriteLocked(ctx, b); err != nil {
				return err
			} else if waited {
				continue
			}
			if !b.held() {
				return fmt.Errorf("%w: block %s missing", ErrIncomplete, c)
			}
			b.c = c
			t.hold(b, false)
			order = append(order, b)
			return nil
		}
	}
	var rawSize int64
	if root.Type() == cid.Raw {
		s.mu.Lock()
		_, err := s.awaitWriteLocked(ctx, s.blocks[string(root.Hash())])
		s.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("store: commit %s: %w", root, err)
		}
		n, err := s.GetSize(ctx, root)
		if err != nil {
			return nil, fmt.Errorf("store: commit %s: %w: %v", root, ErrIncomplete, err)
		}
		rawSize = int64(n)
	}
	_, err := dagfile.Walk(ctx, s, root, rawSize,
		func(b blocks.Block) error { return claim(b.Cid()) },
		func(l dagfile.Leaf) error { return claim(l.Cid) })
	switch {
	case err == nil:
		return order, nil
	case errors.Is(err, ErrClosed) || errors.Is(err, ErrIncomplete) || errors.Is(err, errTxnDone):
		return nil, fmt.Errorf("store: commit %s: %w", root, err)
	case ipld.IsNotFound(err):
		return nil, fmt.Errorf("store: commit %s: %w: %v", root, ErrIncomplete, err)
	default:
		return nil, fmt.Errorf("store: commit %s: %w", root, err)
	}
}

// touch commits content the store already holds: it is used now, and
// pinned if asked. The caller holds s.mu.
func (t *Txn) touch(ctx context.Context, rm *rootMeta, pin bool) error {
	s := t.s
	rm.used = time.Now()
	if rm.elem != nil {
		s.lru.MoveToBack(rm.elem)
	}
	if pin && !rm.pinned {
		if err := s.pin(ctx, rm); err != nil {
			return err
		}
	}
	t.release(true)
	return nil
}

// pin pins held content. The caller holds s.mu.
func (s *Store) pin(ctx context.Context, rm *rootMeta) error {
	if s.readOnly {
		return fmt.Errorf("store: pin %s: %w", rm.c, ErrReadOnly)
	}
	rm.pinned = true
	if err := s.saveRoot(ctx, rm); err != nil {
		rm.pinned = false
		return fmt.Errorf("store: pin %s: %w", rm.c, err)
	}
	rm.saved = rm.used
	s.lru.Remove(rm.elem)
	rm.elem = nil
	for _, b := range rm.blocks {
		if b.pinRefs == 0 && !b.missing {
			s.pinned += b.size
		}
		b.pinRefs++
	}
	s.pinsChanged()
	return nil
}

// Discard ends the Txn. If it was not committed, the blocks it wrote that
// nothing else holds are deleted; blocks that were held before stay. It is
// safe to call more than once.
func (t *Txn) Discard() {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.release(false)
}

// release drops the Txn's holds. The caller holds s.mu.
func (t *Txn) release(committed bool) {
	if t.done {
		return
	}
	t.done = true
	t.unexpect()
	s := t.s
	for b, isNew := range t.held {
		b.refs--
		if b.refs > 0 || s.blocks[b.key] != b {
			continue
		}
		if b.pending != nil {
			// A Put still writing it: write makes it a loose block when
			// it lands (or forgets it if it fails).
			continue
		}
		if b.missing {
			delete(s.blocks, b.key)
			s.nmissing--
			continue
		}
		if isNew && !committed && !s.closed {
			if err := s.deleteBlock(context.Background(), b); err != nil {
				s.log.Error("discarding block", "cid", b.c, "err", err)
			}
			continue
		}
		b.elem = s.lru.PushBack(b)
	}
	t.held = nil
}

// awaitWriteLocked waits, if b is being written, until it is (or ctx ends)
// and reports whether it waited: a block another fetch of the same content
// is writing (a pin beside a gateway's read) is there once written;
// counted missing, the pin failed with ErrIncomplete. The caller holds
// s.mu, which is released while waiting.
func (s *Store) awaitWriteLocked(ctx context.Context, b *blockMeta) (bool, error) {
	if b == nil || b.pending == nil {
		return false, nil
	}
	wait := b.pending
	s.mu.Unlock()
	defer s.mu.Lock()
	select {
	case <-wait:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
