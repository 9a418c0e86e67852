package announce

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// maxBuckets bounds the per-author rate limiters kept.
const maxBuckets = 4096

type bucket struct {
	tokens float64
	last   time.Time
}

// validator is the topic validator: it rejects what is unsigned, oversized
// or malformed, ignores unknown versions and authors over their rate, and
// hands the decoded Message on in ValidatorData.
type validator struct {
	self   peer.ID
	rate   float64
	burst  float64
	n      *counters
	replay *replayGuard

	mu      sync.Mutex
	buckets map[peer.ID]*bucket
}

// newValidator returns the validator of self's topic; evidence (may be
// nil) ranks authors for the replay guard as for the Table.
func newValidator(self peer.ID, rate, burst float64, n *counters, evidence func(peer.ID) int) *validator {
	return &validator{self: self, rate: rate, burst: burst, n: n, buckets: make(map[peer.ID]*bucket),
		replay: newReplayGuard(maxReplayAuthors, evidence)}
}

func (v *validator) validate(_ context.Context, _ peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	// Our own publishes pass through here too, with ReceivedFrom set to
	// this host (msg.Local means something else: WithLocalPublication).
	own := msg.ReceivedFrom == v.self
	if !own {
		// pubsub has verified any signature present; require one, whatever
		// the PubSub's signing policy.
		if len(msg.Signature) == 0 || len(msg.From) == 0 {
			v.n.unsigned.Add(1)
			return pubsub.ValidationReject
		}
		if len(msg.Data) > MaxMessageSize {
			v.n.oversized.Add(1)
			return pubsub.ValidationReject
		}
		if !v.allow(msg.GetFrom(), time.Now()) {
			v.n.rateLimd.Add(1)
			return pubsub.ValidationIgnore
		}
	}
	m, err := Decode(msg.Data)
	switch {
	case err == nil:
	case errors.Is(err, ErrUnknownVersion):
		v.n.unknownVersion.Add(1)
		return pubsub.ValidationIgnore
	case errors.Is(err, ErrTooLarge):
		v.n.oversized.Add(1)
		return pubsub.ValidationReject
	default:
		v.n.malformed.Add(1)
		return pubsub.ValidationReject
	}
	if !own {
		if len(msg.GetSeqno()) != 8 {
			v.n.malformed.Add(1)
			return pubsub.ValidationReject
		}
		if !v.replay.accept(msg.GetFrom(), seqno(msg)) {
			v.n.replayed.Add(1)
			return pubsub.ValidationIgnore
		}
		v.n.received.Add(1)
	}
	msg.ValidatorData = m
	return pubsub.ValidationAccept
}

// allow takes a token from p's bucket.
func (v *validator) allow(p peer.ID, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	b := v.buckets[p]
	if b == nil {
		if len(v.buckets) >= maxBuckets {
			v.pruneLocked(now)
		}
		b = &bucket{tokens: v.burst, last: now}
		v.buckets[p] = b
	}
	b.tokens = min(v.burst, b.tokens+now.Sub(b.last).Seconds()*v.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pruneLocked forgets full buckets (authors idle long enough to be back at
// their burst); if that frees less than an eighth of the map it also forgets
// random ones down to seven eighths, so that a stream of new authors costs
// O(1) per message on average. Forgetting an author at worst gives it a
// fresh burst.
func (v *validator) pruneLocked(now time.Time) {
	for p, b := range v.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*v.rate >= v.burst {
			delete(v.buckets, p)
		}
	}
	for p := range v.buckets {
		if len(v.buckets) <= maxBuckets*7/8 {
			return
		}
		delete(v.buckets, p)
	}
}

// seqno is the gossipsub sequence number of msg, 0 without one. Go and
// JavaScript gossipsub both count it up from the start time in
// nanoseconds, per author.
func seqno(msg *pubsub.Message) uint64 {
	b := msg.GetSeqno()
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
