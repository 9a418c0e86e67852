package announce

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestValidatorTokenBucket(t *testing.T) {
	v := newValidator("me", 2, 3, &counters{}, nil)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !v.allow("p", now) {
			t.Fatalf("message %d of the burst refused", i)
		}
	}
	if v.allow("p", now) {
		t.Fatal("4th message of a burst of 3 allowed")
	}
	if !v.allow("q", now) {
		t.Fatal("another author is limited by p's flood")
	}
	// 2/s: after 500 ms one more.
	now = now.Add(500 * time.Millisecond)
	if !v.allow("p", now) || v.allow("p", now) {
		t.Fatal("after 500 ms at 2/s, want exactly one more")
	}
	// Never more than the burst, however long the pause.
	now = now.Add(time.Hour)
	for i := range 3 {
		if !v.allow("p", now) {
			t.Fatalf("message %d after a pause refused", i)
		}
	}
	if v.allow("p", now) {
		t.Fatal("burst grew beyond 3 after a pause")
	}
}

func TestValidatorBucketsBounded(t *testing.T) {
	v := newValidator("me", 1, 2, &counters{}, nil)
	now := time.Unix(1000, 0)
	// A flooding author, then many new ones: the map stays bounded.
	v.allow("flood", now)
	v.allow("flood", now)
	for i := range 3 * maxBuckets {
		v.allow(peer.ID(fmt.Sprint("idle-", i)), now)
		if len(v.buckets) > maxBuckets {
			t.Fatalf("%d buckets, cap %d", len(v.buckets), maxBuckets)
		}
	}
}
