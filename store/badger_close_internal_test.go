package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-datastore"
)

// TestBadgerPutRacingClose: writes racing Close end, with ErrClosed once
// closed. Badger's Update that passed its closed check as Close stopped
// its watermark waited for a read timestamp for ever (CI: an Import racing
// Close hung the store's tests for 13 minutes); the adapter now lets Close
// wait for the writes under way and refuses new ones.
func TestBadgerPutRacingClose(t *testing.T) {
	v := make([]byte, 64<<10)
	for round := range 40 {
		kv, err := openBadgerKV(t.TempDir(), false, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					if err := kv.Put(context.Background(), datastore.NewKey(fmt.Sprintf("/%d/%d", w, i)), v); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond) // Close at different points of the writes
		if err := kv.Close(); err != nil {
			t.Fatalf("round %d: Close = %v", round, err)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: writes racing Close still blocked 20 s after it", round)
		}
		close(errs)
		for err := range errs {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("round %d: a write after Close = %v, want ErrClosed", round, err)
			}
		}
	}
}
