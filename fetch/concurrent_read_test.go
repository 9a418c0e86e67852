package fetch_test

import (
	"context"
	"sync"
	"testing"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestConcurrentReadsShareOnePosition: a Reader is safe for concurrent use
// and its Reads share one position, so Reads from several goroutines
// together return each byte of the content exactly once: as many bytes as
// the file holds, with the same sum. Two Reads used to be handed the same
// bytes when both waited on the same position.
func TestConcurrentReadsShareOnePosition(t *testing.T) {
	a := makeAsset(t, 42, 3*MiB+3)
	cl := newNode(t, fetch.Config{})
	cl.hold(t, a)
	r, err := cl.f.Open(context.Background(), a.t)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var (
		mu         sync.Mutex
		total, sum int64
		wg         sync.WaitGroup
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1024)
			for {
				n, err := r.Read(buf)
				mu.Lock()
				total += int64(n)
				for _, b := range buf[:n] {
					sum += int64(b)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	var want int64
	for _, b := range a.data {
		want += int64(b)
	}
	if total != int64(len(a.data)) || sum != want {
		t.Errorf("concurrent Reads returned %d bytes summing to %d, want %d summing to %d", total, sum, len(a.data), want)
	}
}
