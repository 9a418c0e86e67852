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
// leaf, so the first such answer marks the origin (scheme and host), and
// from then on a fetch from it reads the file once: one request, its body
// cut into leaves, each verified and delivered as it comes (whole below).

// originKey is what noRange is keyed by: the URL's scheme and host.
func originKey(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Scheme + "://" + p.Host
}

func (f *Fetcher) noteIgnoresRange(u string) {
	if _, known := f.noRange.LoadOrStore(originKey(u), true); !known {
		f.log.Info("origin ignores Range requests: files from it are read whole", "origin", originKey(u))
	}
}

// ignoresRange reports whether the origin of u has answered a Range request
// with the whole file.
func (f *Fetcher) ignoresRange(u string) bool {
	_, ok := f.noRange.Load(originKey(u))
	return ok
}

// goWhole reads the whole file from the origin once and delivers every
// leaf not yet fetched, in file order, as it arrives. It runs while the
// reader has no other origin request for the file; the leaves' origin
// requests are placeholders that it fulfils. The caller holds mu and has
// set r.whole.
func (r *Reader) goWhole(q *req) {
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
		if err != nil && live {
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
	if resp.StatusCode == http.StatusPartialContent {
		return fmt.Errorf("fetch: origin %s: %w %s to a whole-file request", r.t.Cid, errOriginStatus, resp.Status)
	}
	for i, l := range leaves {
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
