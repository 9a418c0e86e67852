package store_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

// signalReader closes reached once n bytes have been read from it.
type signalReader struct {
	r       io.Reader
	n       int64
	reached chan struct{}
	once    sync.Once
}

func (r *signalReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.n -= int64(n); r.n <= 0 {
		r.once.Do(func() { close(r.reached) })
	}
	return n, err
}

// TestImportsRacingCloseFailWithErrClosed: Close while imports write to
// badger (once the first has read all its input, so blocks are in flight). Every import that fails, fails with an error that wraps
// ErrClosed, not badger's own ("DB Closed", "Writes are blocked"), so that
// a caller can tell a closed store from a broken one.
func TestImportsRacingCloseFailWithErrClosed(t *testing.T) {
	ctx := context.Background()
	for round := range 5 {
		s, err := store.New(store.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 4)
		reached := make(chan struct{})
		for i := range errs {
			r := io.Reader(testutil.Reader(uint64(round*10+i), 8*mib))
			if i == 0 {
				r = &signalReader{r: r, n: 8 * mib, reached: reached}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.Import(ctx, r, store.ImportOptions{Pin: i%2 == 0})
			}()
		}
		<-reached
		if err := s.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && !errors.Is(err, store.ErrClosed) {
				t.Errorf("round %d: Import racing Close = %v, want an error wrapping ErrClosed", round, err)
			}
		}
	}
}
