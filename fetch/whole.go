package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/meshcdn/meshcdn/store"
)

// An origin that ignores Range requests answers each with the whole file
// (200). Asking it for one leaf at a time would send the file once per
// leaf, so the first such answer marks the file and the origin (scheme and
// host), and from then on a fetch of the file, or from an origin that has
// not honoured a Range request, reads the file once: one request, its body
// cut into leaves, each verified and delivered as it comes (whole below).
// An origin that honours Range for some files and not others (a CDN that
// answers a cache miss whole, a dynamic path) is marked by file only: a
// whole read asks "Range: bytes=0-", which such an origin answers 206, and
// one 206 from an origin keeps its other files read leaf by leaf (shared
// with peers and striped, where a whole read sends a copy per node).

// maxNoRangeURLs bounds the files remembered for ignoring Range; past it,
// only origins are.
const maxNoRangeURLs = 4096

// originKey is what noRange is keyed by: the URL's scheme and host.
func originKey(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Scheme + "://" + p.Host
}

func (f *Fetcher) noteIgnoresRange(u string) {
	if f.noRangeN.Load() < maxNoRangeURLs {
		if _, known := f.noRangeURL.LoadOrStore(u, true); !known {
			f.noRangeN.Add(1)
		}
	}
	if _, known := f.noRange.LoadOrStore(originKey(u), true); !known {
		f.log.Info("origin ignores Range requests: its files are read whole until one honours Range", "origin", originKey(u))
	}
}

// noteHonoursRange records that the origin of u has answered a Range
// request with 206.
func (f *Fetcher) noteHonoursRange(u string) {
	if _, known := f.okRange.LoadOrStore(originKey(u), true); !known {
		if _, ignored := f.noRange.Load(originKey(u)); ignored {
			f.log.Info("origin honours Range requests for some files: only those that ignored it are read whole", "origin", originKey(u))
		}
	}
}

// ignoresRange reports whether u is read whole: the file has answered a
// Range request with all of it, or its origin has and has never honoured
// one.
func (f *Fetcher) ignoresRange(u string) bool {
	if _, ok := f.noRangeURL.Load(u); ok {
		return true
	}
	_, ignored := f.noRange.Load(originKey(u))
	_, honoured := f.okRange.Load(originKey(u))
	return ignored && !honoured
}

// testHookWhole, set by tests, runs as a whole-file read begins, with
// the lock held.
var testHookWhole func(r *Reader)

// goWhole reads the whole file from the origin once and delivers every
// leaf not yet fetched, in file order, as it arrives. It runs while the
// reader has no other origin request for the file; the leaves' origin
// requests are placeholders that it fulfils. The caller holds mu and has
// set r.whole.
func (r *Reader) goWhole(q *req) {
	if h := testHookWhole; h != nil {
		h(r)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.readWhole(q.ctx)
		live := q.ctx.Err() == nil // not cancelled: the read failed on its own
		r.mu.Lock()
		if r.whole == q {
			r.whole = nil
		}
		for i := range r.st {
			// Placeholders the read did not fulfil are given up.
			if s := &r.st[i]; s.origin != nil {
				s.origin.cancel()
				s.origin = nil
				r.originBusy--
			}
		}
		slept := errors.Is(err, errSlept) // not the origin's failure (watchdog): asked again
		if err != nil && live && !slept {
			r.stats.OriginErrors++
			r.originDead = err
			r.notifyLocked()
		}
		changed := err != nil && live && errors.Is(err, ErrChanged) && r.noPeerHope() // see goOrigin
		r.mu.Unlock()
		q.cancel()
		if err != nil && live {
			if changed {
				r.fail(fmt.Errorf("%w: %s: %w", ErrUnavailable, r.t.Cid, err))
			}
			r.f.log.Info("origin failed", "cid", r.t.Cid, "err", err)
		}
		r.wake()
	}()
}

// readWhole is goWhole's request.
func (r *Reader) readWhole(ctx context.Context) error {
	f := r.f
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.t.URL, nil)
	if err != nil {
		return fmt.Errorf("fetch: origin request: %w", err)
	}
	// All of it, as a range: an origin that honours Range answers 206, and
	// its other files are then read leaf by leaf (noteHonoursRange).
	req.Header.Set("Range", "bytes=0-")
	req.Header.Set("Accept-Encoding", "identity")
	resp, wd, err := f.originDo(req, cancel, r.noteOriginSent)
	if err != nil {
		return fmt.Errorf("fetch: origin %s: %w", r.t.Cid, err)
	}
	defer resp.Body.Close()
	defer wd.stop()
	r.mu.Lock()
	leaves := r.leaves
	r.mu.Unlock()
	first := store.Leaf{Cid: r.t.Cid}
	if len(leaves) > 0 {
		first = leaves[0]
	}
	if err := f.checkResponse(r.t, first, resp); err != nil {
		return err
	}
	end := int64(-1) // past the bytes the answer holds; -1: all
	if resp.StatusCode == http.StatusPartialContent {
		first, last, ok := rangeBounds(resp.Header.Get("Content-Range"))
		if !ok || first != 0 {
			return fmt.Errorf("fetch: origin %s: %w %s with %q to a whole-file request", r.t.Cid, errOriginStatus, resp.Status, resp.Header.Get("Content-Range"))
		}
		// The file honours Range now: what this answer does not hold is
		// asked for leaf by leaf.
		if _, was := f.noRangeURL.LoadAndDelete(r.t.URL); was {
			f.noRangeN.Add(-1)
		}
		end = last + 1
	}
	for i, l := range leaves {
		if end >= 0 && l.Offset+l.Size > end {
			break
		}
		data := make([]byte, l.Size)
		if _, err := io.ReadFull(resp.Body, data); err != nil {
			return fmt.Errorf("fetch: origin %s: %w", l.Cid, wd.explain(err))
		}
		if !r.wantsWhole(i) {
			continue
		}
		if _, err := f.verifyOrigin(r.t, l.Cid, data); err != nil {
			return err
		}
		r.mu.Lock()
		s := &r.st[i]
		if s.origin == nil {
			s.origin = r.newReq()
			r.originBusy++
		}
		from := s.origin
		r.mu.Unlock()
		r.deliver(i, data, SourceOrigin, "", from)
	}
	return nil
}

// wantsWhole reports whether leaf i still needs the bytes the whole-file
// read has for it.
func (r *Reader) wantsWhole(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &r.st[i]
	return !r.closed && s.data == nil && (s.origin != nil || !s.fetched)
}

// originFatal reports whether an origin error means the origin cannot give
// this file now, so that it is not asked again for the fetch: an HTTP
// status other than success, a timeout (a hung origin counts as a dead
// one), a refused connection, or the file having changed. Other errors (a
// connection cut mid-body) are tried again up to three times.
func originFatal(err error) bool {
	var op *net.OpError
	return errors.Is(err, errOriginStatus) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrChanged) || (errors.As(err, &op) && op.Op == "dial")
}

// noPeerHope reports that no peer is known to hold the content and none
// has sent any of it, so a failed origin ends the fetch at once. The caller
// holds mu.
func (r *Reader) noPeerHope() bool {
	return r.prov == provNone && r.stats.PeerBytes == 0
}
