package mesh

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// TestBitswapStreamsAdmitFullSpeedSender pins that an app node's resource
// manager admits 64 inbound bitswap streams from one peer at once: a seed
// sending 8 blocks at a time holds more than 8 streams open at the app
// (boxo closes each in the background after writing it), and a stream
// refused is a block dropped. With the limit at 16, a loaded app node
// refused them and fetches stalled for 3 s or failed (see
// BenchmarkNodeThroughput).
func TestBitswapStreamsAdmitFullSpeedSender(t *testing.T) {
	cfg := Config{}.withDefaults()
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	p := peer.ID("seed")
	var open []network.StreamManagementScope
	defer func() {
		for _, s := range open {
			s.Done()
		}
	}()
	for i := range 64 {
		s, err := rm.OpenStream(p, network.DirInbound)
		if err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
		open = append(open, s)
		if err := s.SetProtocol(bitswapProtocols[0]); err != nil {
			t.Fatalf("stream %d of one peer refused for bitswap: %v", i+1, err)
		}
	}
}
