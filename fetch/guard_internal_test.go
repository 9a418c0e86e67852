package fetch

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestGuardPrune: the guard forgets a peer's disconnect, blocks and
// answers once they are older than any Reader asks about, and keeps recent
// ones; before, only disconnects were forgotten, and a seed kept an entry
// for every peer that ever sent it a block.
func TestGuardPrune(t *testing.T) {
	g := &guard{
		f:        &Fetcher{cfg: Config{StallTimeout: 5 * time.Second}},
		gone:     map[peer.ID]time.Time{},
		useful:   map[peer.ID]time.Time{},
		answered: map[peer.ID]time.Time{},
	}
	now := time.Now()
	old, fresh := peer.ID("old"), peer.ID("fresh")
	maps := map[string]map[peer.ID]time.Time{"gone": g.gone, "useful": g.useful, "answered": g.answered}
	for _, m := range maps {
		m[old] = now.Add(-recentFor - 6*time.Second)
		m[fresh] = now.Add(-recentFor + time.Second)
	}
	g.pruneLocked(now)
	for name, m := range maps {
		if _, ok := m[old]; ok {
			t.Errorf("%s: an entry older than the horizon was kept", name)
		}
		if _, ok := m[fresh]; !ok {
			t.Errorf("%s: an entry within the horizon was dropped", name)
		}
	}
}
