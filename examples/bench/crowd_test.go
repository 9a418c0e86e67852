package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestPlainClientTogether: the plain HTTP baseline's client fetches the
// first path alone and, together, the others at once (the server sees
// them in flight at the same time); else one after another.
func TestPlainClientTogether(t *testing.T) {
	paths := []string{"index.html", "a", "b", "c"}
	for _, together := range []bool{false, true} {
		var mu sync.Mutex
		inFlight, most := 0, 0
		var firstAlone bool
		all := make(chan struct{}) // closed when the last three are in flight together
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			if r.URL.Path == "/index.html" {
				firstAlone = inFlight == 1
			} else if inFlight == len(paths)-1 {
				close(all)
			}
			mu.Unlock()
			if r.URL.Path != "/index.html" {
				select { // held open for the others, or for 300 ms one after another
				case <-all:
				case <-time.After(300 * time.Millisecond):
				}
			}
			w.Write([]byte("x"))
			mu.Lock()
			inFlight--
			mu.Unlock()
		}))
		ttfbs, failed := plainClient(context.Background(), srv.URL, paths, together)
		srv.Close()
		if failed != 0 || len(ttfbs) != len(paths) {
			t.Fatalf("together %v: %d failed, %d TTFBs, want 0 and %d", together, failed, len(ttfbs), len(paths))
		}
		if overlap := most > 1; overlap != together || !firstAlone {
			t.Errorf("together %v: at most %d requests in flight at once; the page alone: %v", together, most, firstAlone)
		}
	}
}
