package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
)

// busyOrigin answers its first len(statuses) requests with those statuses
// (and retryAfter as Retry-After, if set), then serves data.
type busyOrigin struct {
	data       []byte
	statuses   []int
	retryAfter string
	n          *atomic.Int32
}

func (o busyOrigin) RoundTrip(req *http.Request) (*http.Response, error) {
	i := int(o.n.Add(1)) - 1
	rec := httptest.NewRecorder()
	if i < len(o.statuses) {
		if o.retryAfter != "" {
			rec.Header().Set("Retry-After", o.retryAfter)
		}
		rec.WriteHeader(o.statuses[i])
		return rec.Result(), nil
	}
	http.ServeContent(rec, req, "file", modTime, bytes.NewReader(o.data))
	return rec.Result(), nil
}

// TestOriginBusyRetried: an origin that answers 429 or 503 is asked again
// after its Retry-After (1 s without one, and up to a quarter more of
// jitter), at most twice; a Retry-After over 5 s, a third busy answer or
// another status fail the origin at once, with an *OriginStatusError
// that tells the status and the Retry-After. Before, the first 503 of an
// origin under a crowd's load failed the fetch.
func TestOriginBusyRetried(t *testing.T) {
	a := makeAsset(t, 75, 100<<10)
	const busy, many = http.StatusServiceUnavailable, http.StatusTooManyRequests
	for _, tc := range []struct {
		name       string
		statuses   []int
		retryAfter string
		ok         bool
		min, max   time.Duration // elapsed
		requests   int32
		wantStatus int
		wantAfter  time.Duration
	}{
		{"503 with Retry-After 2", []int{busy}, "2", true, 2 * time.Second, 2500 * time.Millisecond, 2, 0, 0},
		{"429 twice without Retry-After", []int{many, many}, "", true, 2 * time.Second, 2500 * time.Millisecond, 3, 0, 0},
		{"503 three times", []int{busy, busy, busy}, "1", false, 2 * time.Second, 2500 * time.Millisecond, 3, busy, time.Second},
		{"Retry-After too long", []int{busy}, "60", false, 0, 0, 1, busy, time.Minute},
		{"404", []int{http.StatusNotFound}, "1", false, 0, 0, 1, http.StatusNotFound, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var n atomic.Int32
				o := busyOrigin{data: a.data, statuses: tc.statuses, retryAfter: tc.retryAfter, n: &n}
				got, _, d, err := bubbleRead(t, context.Background(), fetch.Config{HTTPClient: &http.Client{Transport: o}}, a)
				if tc.ok && (err != nil || !bytes.Equal(got, a.data)) {
					t.Fatalf("ReadAll = %d bytes, %v; want the %d bytes", len(got), err, len(a.data))
				}
				var se *fetch.OriginStatusError
				if !tc.ok {
					if !errors.As(err, &se) || !errors.Is(err, fetch.ErrUnavailable) {
						t.Fatalf("ReadAll = %v, want ErrUnavailable with an *OriginStatusError", err)
					}
					if u := "http://origin.invalid/file"; se.StatusCode != tc.wantStatus || se.RetryAfter != tc.wantAfter || se.URL != u {
						t.Errorf("OriginStatusError = %+v, want status %d, Retry-After %v, URL %s", se, tc.wantStatus, tc.wantAfter, u)
					}
				}
				if d < tc.min || d > tc.max {
					t.Errorf("took %v, want %v to %v", d, tc.min, tc.max)
				}
				if got := n.Load(); got != tc.requests {
					t.Errorf("%d origin requests, want %d", got, tc.requests)
				}
			})
		})
	}
}
