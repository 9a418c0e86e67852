package fetch

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/internal/wake"
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
	// counted: a caller has taken the leaf as the origin's (the others
	// count it as local in the Fetcher's totals: one request, once).
	counted atomic.Bool
	// heard are the last-byte times (Reader.LastByte) of the callers,
	// each set as the body's bytes come: one waiting on a request
	// another started sees its progress. Under Fetcher.callMu.
	heard map[*atomic.Int64]int
}

// hear sets every caller's last-byte time to now. The caller holds
// Fetcher.callMu.
func (c *originCall) hear(now int64) {
	for h := range c.heard {
		h.Store(now)
	}
}

// originShared is originLeaf, shared among concurrent callers for one leaf
// from one URL (or gateway): the same bytes at another URL (a file copied
// under two names) are another request, which may fare otherwise. What the
// origin sent for the shared request is told to sent, the sink of the
// caller that started it; every caller's heard is set to the time of the
// body's last bytes as they come. own reports, with the bytes, that this
// caller is the first to take them: the Fetcher's totals count the
// request's leaf once as the origin's.
func (f *Fetcher) originShared(ctx context.Context, t Target, l store.Leaf, sent func(int64), heard *atomic.Int64) (data []byte, own bool, err error) {
	key := t.URL + "\n" + t.Gateway + "\n" + l.Cid.KeyString()
	f.callMu.Lock()
	c := f.calls[key]
	if c == nil {
		cctx, cancel := context.WithCancel(f.ctx)
		c = &originCall{done: make(chan struct{}), cancel: cancel, heard: make(map[*atomic.Int64]int)}
		f.calls[key] = c
		tell := func(n int64) {
			sent(n)
			f.callMu.Lock()
			c.hear(time.Now().UnixNano())
			f.callMu.Unlock()
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			c.data, c.err = f.originLeaf(cctx, t, l, tell)
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
	c.heard[heard]++
	f.callMu.Unlock()
	defer func() {
		f.callMu.Lock()
		if c.heard[heard]--; c.heard[heard] == 0 {
			delete(c.heard, heard)
		}
		f.callMu.Unlock()
	}()

	select {
	case <-c.done:
		return c.data, c.err == nil && c.counted.CompareAndSwap(false, true), c.err
	case <-ctx.Done():
		f.callMu.Lock()
		c.waiters--
		last := c.waiters == 0
		if last {
			c.cancel()
			if f.calls[key] == c {
				delete(f.calls, key) // later callers start afresh
			}
		}
		f.callMu.Unlock()
		if last {
			// The cancelled request ends at once; waiting for it means
			// what the origin sent for it is counted when the fetch ends.
			<-c.done
		}
		return nil, false, ctx.Err()
	}
}

// errOriginStatus is wrapped by errors for unexpected HTTP statuses.
var errOriginStatus = errors.New("unexpected status")

// originLeaf is originLeafOnce, asked again after a 429 or 503 as
// retryWait allows.
func (f *Fetcher) originLeaf(ctx context.Context, t Target, l store.Leaf, sent func(int64)) ([]byte, error) {
	for tries := 0; ; tries++ {
		data, err := f.originLeafOnce(ctx, t, l, sent)
		wait, again := retryWait(err, tries)
		if !again {
			return data, err
		}
		f.log.Debug("origin busy: asked again", "cid", l.Cid, "after", wait, "err", err)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, err
		}
	}
}

// originLeafOnce fetches one leaf from the target's origin and verifies it: a
// Range request on the plain file if t.URL is set, else the raw block from
// the trustless gateway t.Gateway. A leaf of unknown size (Size < 0, a raw
// root opened without its size) is read up to one chunk. The response
// headers must come within Config.OriginHeaderTimeout and each 16 KiB of
// the body within Config.OriginIdleTimeout (idleProgress). What the origin sent is told to
// sent (see meteredBody) once the body is closed.
func (f *Fetcher) originLeafOnce(ctx context.Context, t Target, l store.Leaf, sent func(int64)) ([]byte, error) {
	var req *http.Request
	var err error
	limit := l.Size
	if limit < 0 {
		limit = dagfile.ChunkSize
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if t.URL != "" {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
		if err != nil {
			return nil, fmt.Errorf("fetch: origin request: %w", err)
		}
		if limit == 0 {
			return f.verifyOrigin(t, l.Cid, nil)
		}
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", l.Offset, l.Offset+limit-1))
		// Byte ranges are of the file's own bytes: without this header
		// any content coding is acceptable (RFC 9110, 12.5.3).
		req.Header.Set("Accept-Encoding", "identity")
	} else {
		var u string
		u, err = gatewayURL(t.Gateway, l.Cid)
		if err != nil {
			return nil, fmt.Errorf("fetch: gateway request: %w", err)
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("fetch: gateway request: %w", err)
		}
		req.Header.Set("Accept", "application/vnd.ipld.raw")
	}
	start, together := time.Now(), f.originStarted()
	defer f.originEnded()
	resp, wd, err := f.originDo(req, cancel, sent)
	if err != nil {
		return nil, fmt.Errorf("fetch: origin %s: %w", l.Cid, err)
	}
	defer resp.Body.Close()
	defer wd.stop()
	if err := f.checkResponse(t, l, resp); err != nil {
		return nil, err
	}
	var data []byte
	if l.Size >= 0 && t.URL != "" {
		data = make([]byte, l.Size)
		_, err = io.ReadFull(resp.Body, data)
	} else {
		data, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	}
	if err != nil {
		return nil, fmt.Errorf("fetch: origin %s: %w", l.Cid, wd.explain(err))
	}
	data, err = f.verifyOrigin(t, l.Cid, data)
	if err == nil && len(data) >= 256<<10 {
		f.noteOriginRate(float64(len(data))/max(time.Since(start).Seconds(), 1e-6), max(together, f.originInFlight()))
	}
	return data, err
}

// gatewayURL is the URL of block c at the trustless gateway base:
// BASE/ipfs/CID?format=raw, the base's own query (a signed URL's token)
// kept as it is, before format=raw.
func gatewayURL(base string, c cid.Cid) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u = u.JoinPath("ipfs", c.String())
	if u.RawQuery != "" {
		u.RawQuery += "&"
	}
	u.RawQuery += "format=raw"
	return u.String(), nil
}

// checkResponse looks at the status and size headers of an origin's
// answer for leaf l and positions a whole-file answer at the leaf.
func (f *Fetcher) checkResponse(t Target, l store.Leaf, resp *http.Response) error {
	size := t.knownSize()
	if err := decodeBody(l, resp); err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		if t.URL != "" {
			f.noteHonoursRange(t.URL)
		}
		return checkPartial(t, l, resp)
	case resp.StatusCode == http.StatusOK && t.URL == "":
		return nil // a gateway's raw block
	case resp.StatusCode == http.StatusOK:
		// A plain origin that ignores Range (python's http.server, some
		// proxies) sends the whole file.
		if size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != size {
			return &ChangedError{URL: t.URL, Root: t.Cid, Size: size, OriginSize: resp.ContentLength}
		}
		if size > dagfile.ChunkSize || resp.ContentLength > dagfile.ChunkSize {
			f.noteIgnoresRange(t.URL)
		}
		if l.Offset > 0 {
			f.log.Debug("origin ignores Range requests", "cid", l.Cid, "bytes", l.Offset)
			if _, err := io.CopyN(io.Discard, resp.Body, l.Offset); err != nil {
				return fmt.Errorf("fetch: origin %s: skipping to offset %d of a whole-file answer: %w", l.Cid, l.Offset, err)
			}
		}
		return nil
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && t.URL != "" && size > l.Offset:
		// The file is shorter than the leaf's offset now.
		return &ChangedError{URL: t.URL, Root: t.Cid, Size: size, OriginSize: rangeTotal(resp.Header.Get("Content-Range"))}
	default:
		e := &OriginStatusError{URL: t.URL, Leaf: l.Cid, StatusCode: resp.StatusCode, Status: resp.Status}
		if resp.Request != nil {
			e.URL = resp.Request.URL.Redacted() // a gateway's block URL; the URL redirected to
		}
		if e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusServiceUnavailable {
			e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return e
	}
}

// retryAfter reads a Retry-After header, delay-seconds or an HTTP date
// (RFC 9110, 10.2.3), as the wait from now; 0 when absent, malformed or
// past.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(24*time.Hour/time.Second))) * time.Second
	}
	if at, err := http.ParseTime(h); err == nil && at.After(now) {
		return at.Sub(now)
	}
	return 0
}

// Origin retries: a 429 or 503 is asked again at most maxOriginRetries
// times, after its Retry-After (defaultRetryAfter when it has none) and a
// quarter more at most of jitter, so that a crowd told the same wait does
// not come back at once; a Retry-After over maxRetryAfter is not waited
// for (the fetch goes on from peers, or fails, and the caller may wait).
const (
	maxOriginRetries  = 2
	defaultRetryAfter = time.Second
	maxRetryAfter     = 5 * time.Second
)

// retryWait reports whether an origin request that failed with err, after
// tries retries, is asked again, and after how long.
func retryWait(err error, tries int) (time.Duration, bool) {
	var se *OriginStatusError
	if tries >= maxOriginRetries || !errors.As(err, &se) ||
		se.StatusCode != http.StatusTooManyRequests && se.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	d := se.RetryAfter
	if d == 0 {
		d = defaultRetryAfter
	}
	if d > maxRetryAfter {
		return 0, false
	}
	return d + rand.N(d/4+1), true
}

// checkPartial checks a 206 answer for leaf l against its Content-Range
// and positions the body at the leaf: the range sent may start before the
// leaf's (a server may send more than asked), but must hold all of it. An
// answer without a Content-Range is taken as the range asked for.
func checkPartial(t Target, l store.Leaf, resp *http.Response) error {
	h := resp.Header.Get("Content-Range")
	if total := rangeTotal(h); t.URL != "" && t.knownSize() >= 0 && total >= 0 && total != t.knownSize() {
		return &ChangedError{URL: t.URL, Root: t.Cid, Size: t.knownSize(), OriginSize: total}
	}
	first, last, ok := rangeBounds(h)
	if t.URL == "" || !ok {
		return nil
	}
	if first > l.Offset || l.Size >= 0 && last < l.Offset+l.Size-1 {
		return fmt.Errorf("fetch: origin %s: %w %s with bytes %d-%d, not all of the leaf's (%d bytes from %d)",
			l.Cid, errOriginStatus, resp.Status, first, last, l.Size, l.Offset)
	}
	if skip := l.Offset - first; skip > 0 {
		if _, err := io.CopyN(io.Discard, resp.Body, skip); err != nil {
			return fmt.Errorf("fetch: origin %s: skipping to offset %d of bytes %d-%d: %w", l.Cid, l.Offset, first, last, err)
		}
	}
	return nil
}

// rangeBounds parses the range of a Content-Range header ("bytes
// 0-99/1234"): its first and last byte.
func rangeBounds(h string) (first, last int64, ok bool) {
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, false
	}
	spec, _, _ = strings.Cut(spec, "/")
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, false
	}
	return first, last, true
}

// decodeBody undoes the content coding of a response the transport did
// not decode (it asked for none, and none is asked with a Range): an
// origin may send gzip unasked, or a file stored gzipped with its
// Content-Encoding. A 200 in gzip is decoded (its Content-Length, of the
// coded bytes, no longer counts); any other coding, or a 206 of coded
// bytes (a range of the coded file, not of the file), is an origin error.
func decodeBody(l store.Leaf, resp *http.Response) error {
	coding := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	if coding == "" || coding == "identity" || resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return nil
	}
	if resp.StatusCode != http.StatusOK || coding != "gzip" && coding != "x-gzip" {
		return fmt.Errorf("fetch: origin %s: %w %s with Content-Encoding %q", l.Cid, errOriginStatus, resp.Status, coding)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		return fmt.Errorf("fetch: origin %s: Content-Encoding gzip: %w", l.Cid, err)
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{zr, resp.Body}
	resp.ContentLength = -1
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	return nil
}

// rangeTotal is the complete length of a Content-Range header ("bytes
// 0-99/1234" or "bytes */1234"), or -1.
func rangeTotal(h string) int64 {
	i := strings.LastIndexByte(h, '/')
	if i < 0 {
		return -1
	}
	n, err := strconv.ParseInt(h[i+1:], 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// knownSize is the file's size if the Target says it (with inner nodes or
// a positive size), else -1.
func (t Target) knownSize() int64 {
	if t.Size > 0 || len(t.Nodes) > 0 {
		return t.Size
	}
	return -1
}

// originDo sends an origin request under Config.OriginHeaderTimeout and
// returns the response with its body read under Config.OriginIdleTimeout;
// cancel must cancel the request's context. The caller stops the watchdog
// and closes the body; reading and closing it tell sent (if not nil) what
// the origin sent (meteredBody).
func (f *Fetcher) originDo(req *http.Request, cancel context.CancelFunc, sent func(int64)) (*http.Response, *watchdog, error) {
	wd := newWatchdog(f.cfg.OriginHeaderTimeout, "no response headers", cancel)
	asked := time.Now()
	resp, err := f.http.Do(req)
	if err != nil {
		wd.stop()
		return nil, wd, wd.explain(err)
	}
	wd.rearm(f.cfg.OriginIdleTimeout, fmt.Sprintf("under %d KiB of body", idleProgress>>10))
	resp.Body = &meteredBody{ReadCloser: &idleBody{ReadCloser: resp.Body, wd: wd},
		length: resp.ContentLength, rtt: time.Since(asked), headers: time.Now(), sink: sent}
	return resp, wd, nil
}

// meteredBody counts what the origin sent in one response body, which is
// what Stats.OriginSentBytes adds up: every body byte read off the wire,
// whether it was kept or thrown away (a hedge cut off, a leaf that lost
// the race, the bytes skipped in a whole-file answer), plus, for a body
// closed before its end, an estimate of the bytes that were in flight and
// are lost with the connection: the bandwidth-delay product, the rate the
// body came at times the time the response headers took (one round trip
// and the origin's think time), at most 256 KiB and what remained. The
// headers themselves are not counted. It tells the sink the bytes of each
// read as they come (a fetch sees its origin's progress within a leaf),
// and on close the estimate of those lost, if any.
type meteredBody struct {
	io.ReadCloser
	length  int64         // the Content-Length, -1 if unknown
	rtt     time.Duration // from the request to its headers
	headers time.Time
	sink    func(int64)

	mu   sync.Mutex
	read int64
	eof  bool
	done bool
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	b.read += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	tell := n > 0 && !b.done && b.sink != nil
	b.mu.Unlock()
	if tell {
		b.sink(int64(n))
	}
	return n, err
}

func (b *meteredBody) Close() error {
	err := b.ReadCloser.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return err
	}
	b.done = true
	if est := inFlight(b.read, b.length, b.eof, time.Since(b.headers), b.rtt); b.sink != nil && est > 0 {
		b.sink(est)
	}
	return err
}

// maxInFlight bounds the estimate of one cut response's bytes in flight:
// a socket receive buffer's worth. The time to the headers overstates the
// round trip when the origin queues the response before its first write.
const maxInFlight = 256 << 10

// inFlight estimates the body bytes an origin had sent but a reader had
// not read when it closed the body after read of length bytes (length < 0:
// unknown) over elapsed: the bandwidth-delay product (the rate so far
// times rtt, at most maxInFlight), at most what remained. A body read to
// its end has none.
func inFlight(read, length int64, eof bool, elapsed, rtt time.Duration) int64 {
	if eof || (length >= 0 && read >= length) || read == 0 || elapsed <= 0 {
		return 0
	}
	est := min(int64(float64(read)*rtt.Seconds()/elapsed.Seconds()), maxInFlight)
	if length >= 0 {
		est = min(est, length-read)
	}
	return max(est, 0)
}

// watchdog cancels an origin request that says nothing for too long, and
// tells its errors apart from others. A nil *watchdog (no timeout) does
// nothing. A timer that fires wake.Late or more after it was due found the
// process itself not running (a laptop that slept, where the monotonic
// clock counts the sleep, as on Windows; a stopped process): the request is
// cut all the same, its connection suspect (the origin, unanswered while
// the laptop slept, retransmits only after a backoff of tens of seconds),
// but with errSlept, which neither kills the origin for the fetch nor
// counts as its failure: the leaf is asked again at once. Before, a fetch
// from the origin under way when the app slept for longer than
// OriginIdleTimeout failed at the wake (the gateway cut its response).
type watchdog struct {
	mu      sync.Mutex
	timer   *time.Timer
	cancel  context.CancelFunc
	d       time.Duration
	due     time.Time // when the timer is set to fire
	what    string
	fired   string // what had not come when it fired; "" while it has not
	slept   bool   // it fired late
	stopped bool
}

// errSlept is what explain says of a request cut by a watchdog that fired
// late: not the origin's failure.
var errSlept = errors.New("cut after this process slept through it")

func newWatchdog(d time.Duration, what string, cancel context.CancelFunc) *watchdog {
	w := &watchdog{cancel: cancel}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = time.AfterFunc(time.Hour, w.fire)
	w.timer.Stop()
	w.arm(d, what)
	return w
}

// fire cancels the request, noting whether the timer fired late.
func (w *watchdog) fire() {
	w.mu.Lock()
	if w.stopped || w.fired != "" {
		w.mu.Unlock()
		return
	}
	w.slept = wake.Slept(w.due, time.Now())
	w.fired = fmt.Sprintf("%s for %v", w.what, w.d)
	w.mu.Unlock()
	w.cancel()
}

// arm starts the timer for d (negative: no timeout). The caller holds mu.
func (w *watchdog) arm(d time.Duration, what string) {
	w.d, w.what = d, what
	if d >= 0 && w.fired == "" {
		w.due = time.Now().Add(d)
		w.timer.Reset(d)
	}
}

// rearm restarts the timer with a new duration and meaning.
func (w *watchdog) rearm(d time.Duration, what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer.Stop()
	w.arm(d, what)
}

// kick restarts the timer: bytes came.
func (w *watchdog) kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.d >= 0 && w.fired == "" {
		w.due = time.Now().Add(w.d)
		w.timer.Reset(w.d)
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

// explain returns err, or if the watchdog fired, an error saying what did
// not come in time that matches context.DeadlineExceeded (errSlept if it
// fired late).
func (w *watchdog) explain(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fired == "" {
		return err
	}
	if w.slept {
		return fmt.Errorf("origin request %w (%s): asked again", errSlept, w.fired)
	}
	return fmt.Errorf("origin timed out: %s: %w", w.fired, context.DeadlineExceeded)
}

// idleProgress is the least an origin's body must bring within each
// OriginIdleTimeout to count as alive: an origin that trickles a byte now
// and then (a slow-loris, a link all but dead) would otherwise hold a
// fetch forever, each byte restarting the timer. 16 KiB per 10 s is about
// 1.6 KiB/s, far below any origin worth waiting for.
const idleProgress = 16 << 10

// idleBody is a response body that kicks the watchdog each time
// idleProgress more bytes have come.
type idleBody struct {
	io.ReadCloser
	wd  *watchdog
	got int // bytes since the last kick
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.got += n
	if b.got >= idleProgress {
		b.got = 0
		b.wd.kick()
	}
	return n, err
}

// originStarted counts an origin request in flight and returns how many
// are, itself included; originEnded counts it out.
func (f *Fetcher) originStarted() int {
	f.rateMu.Lock()
	defer f.rateMu.Unlock()
	f.originN++
	return f.originN
}

func (f *Fetcher) originEnded() {
	f.rateMu.Lock()
	defer f.rateMu.Unlock()
	f.originN--
}

// originInFlight is how many origin requests are in flight.
func (f *Fetcher) originInFlight() int {
	f.rateMu.Lock()
	defer f.rateMu.Unlock()
	return f.originN
}

// noteOriginRate folds one origin request's bytes per second r into the
// Fetcher's estimates (exponentially weighted averages): of one request,
// and, times together (the requests in flight with it, itself included),
// of what the origin gives its requests together.
func (f *Fetcher) noteOriginRate(r float64, together int) {
	f.rateMu.Lock()
	defer f.rateMu.Unlock()
	all := r * float64(max(together, 1))
	if f.originRate == 0 {
		f.originRate, f.originAll = r, all
	} else {
		f.originRate = 0.8*f.originRate + 0.2*r
		f.originAll = 0.8*f.originAll + 0.2*all
	}
}

// originRequestRate is what one origin request has been giving, in bytes
// per second (0: not measured yet).
func (f *Fetcher) originRequestRate() float64 {
	f.rateMu.Lock()
	defer f.rateMu.Unlock()
	return f.originRate
}

// originCapacity is what the origin is estimated to give one fetch, in
// bytes per second (0: not known yet): what its requests have given
// together, as measured. It was once one request's rate times
// OriginConcurrency, as if parallel requests never shared a link: the
// demo's apps, behind a 25 MiB/s uplink with 30 ms to the origin, measured
// a lone request at 14 MiB/s, took the origin for 56, counted a seed
// sending them 15-22 MiB/s as slower than it, and took leaf after leaf
// from the origin while the seed sent them too. Measured requests that ran
// alone say nothing of what parallel ones would give: the estimate is then
// low, and peers count as slow only below half a lone request's rate.
func (f *Fetcher) originCapacity() float64 {
	f.rateMu.Lock()
	defer f.rateMu.Unlock()
	return f.originAll
}

// verifyOrigin checks data from t's origin against c: bytes of a plain
// file that do not match are the file having changed (*ChangedError), bytes
// of a gateway a lying source (*VerifyError).
func (f *Fetcher) verifyOrigin(t Target, c cid.Cid, data []byte) ([]byte, error) {
	data, err := f.verify(c, data)
	if err != nil && t.URL != "" {
		return nil, &ChangedError{URL: t.URL, Root: t.Cid, Leaf: c, Size: t.knownSize(), OriginSize: -1}
	}
	return data, err
}

// verify checks data against c (dagfile.CheckBytes).
func (f *Fetcher) verify(c cid.Cid, data []byte) ([]byte, error) {
	err := dagfile.CheckBytes(c, data)
	var mismatch *dagfile.HashError
	switch {
	case errors.As(err, &mismatch):
		return nil, &VerifyError{Cid: c, Source: SourceOrigin}
	case err != nil:
		return nil, &VerifyError{Cid: c, Source: SourceOrigin, Err: err}
	}
	return data, nil
}
