package store

import (
	"context"
	"sync"

	"github.com/ipfs/go-cid"
)

// EventKind says what happened to content.
type EventKind int

const (
	// Added: content became held (Import, AddRoot, Txn.Commit).
	Added EventKind = iota + 1
	// Evicted: content was evicted to make room.
	Evicted
	// Removed: content was removed by Remove, or because a block of it was
	// found corrupt.
	Removed
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case Added:
		return "added"
	case Evicted:
		return "evicted"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// Event tells a subscriber that content came or went.
type Event struct {
	Kind   EventKind
	Root   cid.Cid
	Size   int64 // bytes of the content's distinct blocks
	Pinned bool  // for Added
	// Missed counts the events this subscriber lost, because its buffer was
	// full, just before this one.
	Missed int
}

// subscriptionBuffer is how many events wait for a slow subscriber before
// newer ones are lost (and counted in Event.Missed).
const subscriptionBuffer = 256

type subscription struct {
	ch     chan Event
	missed int
	quit   chan struct{}
	once   sync.Once
}

// stop closes the subscription. The caller holds s.mu.
func (sub *subscription) stop() {
	sub.once.Do(func() {
		close(sub.ch)
		close(sub.quit)
	})
}

// Subscribe returns a channel of content events until ctx is done or the
// Store closes, when the channel is closed. The store never waits for a
// subscriber: when the channel's buffer (256 events) is full, events are lost
// and the next event delivered says how many in Missed.
func (s *Store) Subscribe(ctx context.Context) <-chan Event {
	sub := &subscription{ch: make(chan Event, subscriptionBuffer), quit: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(sub.ch)
		return sub.ch
	}
	s.subs[sub] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			delete(s.subs, sub)
			sub.stop()
			s.mu.Unlock()
		case <-sub.quit:
		}
	}()
	return sub.ch
}

// emit sends an event to every subscriber without waiting. The caller holds
// s.mu.
func (s *Store) emit(ev Event) {
	for sub := range s.subs {
		ev.Missed = sub.missed
		select {
		case sub.ch <- ev:
			sub.missed = 0
		default:
			sub.missed++
		}
	}
}
