package mesh

import (
	"context"
	"errors"
	"testing"
)

// TestFollowClosedWhileStarting: Close that runs, and returns, while Follow
// is starting its follower (after Follow found the node open) leaves
// Follow failing with ErrClosed, no follower running on the closed node.
// Before, Follow checked for Close and later added its goroutine to the
// node's WaitGroup: the follower started after Close had waited for every
// goroutine and returned (and a Follow racing Close was a WaitGroup misuse
// under the race detector).
func TestFollowClosedWhileStarting(t *testing.T) {
	n, err := New(context.Background(), Config{Name: "follow-close", InMemory: true,
		ListenAddrs: LoopbackAddrs(RoleApp), MDNS: Off, NATPortMap: Off})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	testHookFollowStarting = func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
	}
	defer func() { testHookFollowStarting = nil }()
	f, err := n.Follow(FollowConfig{URL: "http://127.0.0.1:1/manifest.json"})
	if f != nil {
		f.Close()
	}
	if f != nil || !errors.Is(err, ErrClosed) {
		t.Fatalf("Follow with the node closed as it started: follower %t, error %v; want no follower, ErrClosed", f != nil, err)
	}
}
