package meshtest

import (
	"context"
	"fmt"
	"testing"

	"github.com/ipfs/go-cid"
	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/mesh"
)

// DefaultName is the mesh name NewNode and Crowd use when the Config leaves
// Name empty.
const DefaultName = "meshtest"

// LocalConfig returns cfg made fit for a node on this machine only: Name
// DefaultName if empty, InMemory unless DataDir is set, ListenAddrs
// mesh.LoopbackAddrs(cfg.Role) if empty, mDNS and NAT port mapping Off.
func LocalConfig(cfg mesh.Config) mesh.Config {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.DataDir == "" {
		cfg.InMemory = true
	}
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = mesh.LoopbackAddrs(cfg.Role)
	}
	cfg.MDNS = mesh.Off
	cfg.NATPortMap = mesh.Off
	return cfg
}

// NewNode starts a node with LocalConfig(cfg) for the test tb, which fails
// at once if the node cannot start; the node is closed when the test ends.
func NewNode(tb testing.TB, cfg mesh.Config) *mesh.Node {
	tb.Helper()
	n, err := mesh.New(context.Background(), LocalConfig(cfg))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close() })
	return n
}

// WaitProvider waits until n's provider table lists a holder of c (an
// announcement has reached it), or ctx ends.
func WaitProvider(ctx context.Context, n *mesh.Node, c cid.Cid) error {
	t := n.Announcer().Table()
	changes := t.Subscribe(ctx)
	for len(t.Providers(c, 1)) == 0 {
		select {
		case <-changes:
		case <-ctx.Done():
			return fmt.Errorf("meshtest: no provider of %s announced: %w", c, ctx.Err())
		}
	}
	return nil
}

// StartOrigin starts an origin for the test tb, which fails at once if it
// cannot start; the origin is closed when the test ends.
func StartOrigin(tb testing.TB, cfg OriginConfig) *Origin {
	tb.Helper()
	o, err := NewOrigin(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(o.Close)
	return o
}

// LeakOptions are the goleak options for a TestMain whose tests run mesh
// nodes: they ignore the goroutines of meshcdn's dependencies that outlive
// every node by design (badger's and ristretto's package-level workers,
// glog's flush daemon, go-libp2p-pubsub's loops, which end shortly after
// Close with no way to wait for them, and the global opencensus worker).
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(m, meshtest.LeakOptions()...) }
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2.(*defaultPolicy[...]).processItems"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2.(*Cache[...]).processItems"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p-pubsub.(*PubSub).processLoop"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p-pubsub.(*PubSub).handleNewStream"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	}
}
