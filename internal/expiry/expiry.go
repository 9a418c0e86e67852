// Package expiry holds keys each until a deadline of its own, within
// memory proportional to the keys still live: the refused peers of a
// fetch's Gater, the peers a node asked for blocks.
package expiry

import (
	"sync"
	"time"
)

// sweepAt is the number of keys held from which a Set drops the expired
// ones.
const sweepAt = 256

// Set holds keys until their deadlines. Expired keys are dropped all at
// once when the set holds twice as many as after the last sweep (and at
// least sweepAt), so an Add costs O(1) amortised and the set holds at most
// about twice the keys still live. The zero value is ready to use; a Set
// is safe for concurrent use.
type Set[K comparable] struct {
	mu        sync.Mutex
	until     map[K]time.Time
	nextSweep int
}

// Add holds k until until (replacing an earlier deadline); now is the
// time expired keys are judged at if the set is swept.
func (s *Set[K]) Add(k K, until, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.until == nil {
		s.until = make(map[K]time.Time)
	}
	if len(s.until) >= max(s.nextSweep, sweepAt) {
		for q, u := range s.until {
			if !now.Before(u) {
				delete(s.until, q)
			}
		}
		s.nextSweep = 2 * len(s.until)
	}
	s.until[k] = until
}

// Has reports whether k is held at now: added with a deadline after now.
func (s *Set[K]) Has(k K, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.until[k]
	return ok && now.Before(u)
}

// Len is the number of keys the set holds, expired ones not yet swept
// included.
func (s *Set[K]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.until)
}
