package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/store"
)

// originCall is one origin request shared by the fetches that want the same
// leaf at once (STYLE: concurrent fetches of one CID share one load). It is
// cancelled when the last of them gives up.
type originCall struct {
	done    chan struct{}
	data    []byte
	err     error
	waiters int
	cancel  context.CancelFunc
}

// originShared is originLeaf, shared among concurrent callers for one leaf.
func (f *Fetcher) originShared(ctx context.Context, t Target, l store.Leaf) ([]byte, error) {
	key := l.Cid.KeyString()
	f.callMu.Lock()
	c := f.calls[key]
	if c == nil {
		cctx, cancel := context.WithCancel(f.ctx)
		c = &originCall{done: make(chan struct{}), cancel: cancel}
		f.calls[key] = c
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			c.data, c.err = f.originLeaf(cctx, t, l)
			f.callMu.Lock()
			if f.calls[key] == c {
				delete(f.calls, key)
			}
			f.callMu.Unlock()
			cancel()
			close(c.done)
		}()
	}
	c.waiters++
	f.callMu.Unlock()

	select {
	case <-c.done:
		return c.data, c.err
	case <-ctx.Done():
		f.callMu.Lock()
		c.waiters--
		if c.waiters == 0 {
			c.cancel()
			if f.calls[key] == c {
				delete(f.calls, key) // later callers start afresh
			}
		}
		f.callMu.Unlock()
		return nil, ctx.Err()
	}
}

// errOriginStatus is wrapped by errors for unexpected HTTP statuses.
var errOriginStatus = errors.New("unexpected status")

// originLeaf fetches one leaf from the target's origin and verifies it: a
// Range request on the plain file if t.URL is set, else the raw block from
// the trustless gateway t.Gateway. A leaf of unknown size (Size < 0, a raw
// root opened without its size) is read up to one chunk.
func (f *Fetcher) originLeaf(ctx context.Context, t Target, l store.Leaf) ([]byte, error) {
	var req *http.Request
	var err error
	limit := l.Size
	if limit < 0 {
		limit = dagfile.ChunkSize
	}
	if t.URL != "" {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
		if err != nil {
			return nil, fmt.Errorf("fetch: origin request: %w", err)
		}
		if limit == 0 {
			return f.verify(l.Cid, nil)
		}
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", l.Offset, l.Offset+limit-1))
	} else {
		u := strings.TrimSuffix(t.Gateway, "/") + "/ipfs/" + l.Cid.String() + "?format=raw"
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("fetch: gateway request: %w", err)
		}
		req.Header.Set("Accept", "application/vnd.ipld.raw")
	}
	start := time.Now()
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch: origin %s: %w", l.Cid, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusOK && (t.URL == "" || l.Offset == 0):
		// A gateway answers 200; a plain origin that ignores Range sends
		// the whole file, of which the first leaf is the head.
	case resp.StatusCode == http.StatusOK:
		// A plain origin that ignores Range (python's http.server, some
		// proxies) sends the whole file: skip to the leaf. Correct, but it
		// costs the origin the bytes before the leaf on every request.
		f.log.Debug("origin ignores Range requests", "cid", l.Cid, "bytes", l.Offset)
		if _, err := io.CopyN(io.Discard, resp.Body, l.Offset); err != nil {
			return nil, fmt.Errorf("fetch: origin %s: skipping to offset %d of a whole-file answer: %w", l.Cid, l.Offset, err)
		}
	default:
		return nil, fmt.Errorf("fetch: origin %s: %w %s", l.Cid, errOriginStatus, resp.Status)
	}
	var data []byte
	if l.Size >= 0 && t.URL != "" {
		data = make([]byte, l.Size)
		if _, err := io.ReadFull(resp.Body, data); err != nil {
			return nil, fmt.Errorf("fetch: origin %s: %w", l.Cid, err)
		}
	} else {
		data, err = io.ReadAll(io.LimitReader(resp.Body, limit))
		if err != nil {
			return nil, fmt.Errorf("fetch: origin %s: %w", l.Cid, err)
		}
	}
	data, err = f.verify(l.Cid, data)
	if err == nil && len(data) >= 256<<10 {
		f.noteOriginRate(float64(len(data)) / max(time.Since(start).Seconds(), 1e-6))
	}
	return data, err
}

// noteOriginRate folds one origin request's bytes per second into the
// Fetcher's estimate (an exponentially weighted average).
func (f *Fetcher) noteOriginRate(r float64) {
	f.rateMu.Lock()
	defer f.rateMu.Unlock()
	if f.originRate == 0 {
		f.originRate = r
	} else {
		f.originRate = 0.8*f.originRate + 0.2*r
	}
}

// originCapacity is what the origin is estimated to give one fetch, in
// bytes per second (0: not known yet).
func (f *Fetcher) originCapacity() float64 {
	f.rateMu.Lock()
	defer f.rateMu.Unlock()
	return f.originRate * float64(f.cfg.OriginConcurrency)
}

// verify checks data against c.
func (f *Fetcher) verify(c cid.Cid, data []byte) ([]byte, error) {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return nil, &VerifyError{Cid: c, Source: SourceOrigin, Err: err}
	}
	if !got.Equals(c) {
		return nil, &VerifyError{Cid: c, Source: SourceOrigin}
	}
	return data, nil
}
