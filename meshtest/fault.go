package meshtest

import (
	"io"
	"log"
	"net/http"
	"time"
)

// FaultKind says what an Origin does wrong with a request.
type FaultKind int

const (
	// FaultNone serves the request normally (after Fault.Delay).
	FaultNone FaultKind = iota
	// FaultStatus answers with Fault.Status (default 500) and no content.
	FaultStatus
	// FaultHang never answers: no status line, no byte, until the client
	// gives up or the Origin closes.
	FaultHang
	// FaultStall sends the headers and Fault.After body bytes, then
	// nothing more while keeping the connection open, until the client
	// gives up or the Origin closes; then the connection is cut.
	FaultStall
	// FaultTruncate sends the headers (with the full Content-Length) and
	// Fault.After body bytes, then cuts the connection.
	FaultTruncate
	// FaultCorrupt sends the whole body with every byte from offset
	// Fault.After on inverted: the right length, wrong bytes.
	FaultCorrupt
)

// Fault is what an Origin does to one request. The zero Fault serves it
// normally. Offsets count from the first byte of the response body (the
// start of the requested range, for a Range request).
type Fault struct {
	Kind FaultKind
	// Status is FaultStatus's code. Default 500. RetryAfter, if set, is
	// its Retry-After header.
	Status     int
	RetryAfter string
	// After is the body bytes sent before a stall, truncation or
	// corruption starts.
	After int64
	// Delay is added to OriginConfig.Latency before the first byte.
	Delay time.Duration
}

// FaultFunc picks the fault for a request. FaultStatus and FaultHang apply
// to every request (the manifest's, and paths the site does not have);
// FaultStall, FaultTruncate, FaultCorrupt and Delay only to asset requests.
// It runs on the request's goroutine, concurrently with other requests, and
// must not keep r.
type FaultFunc func(r *http.Request) Fault

// SetFault makes fn decide the fault of every request from now on;
// nil serves every request normally again. Requests under way keep the fault
// they were given. Safe to call while the origin serves.
func (o *Origin) SetFault(fn FaultFunc) {
	if fn == nil {
		o.fault.Store(nil)
		return
	}
	o.fault.Store(&fn)
}

// FaultAll returns a FaultFunc that gives f to every request.
func FaultAll(f Fault) FaultFunc { return func(*http.Request) Fault { return f } }

// FaultPath returns a FaultFunc that gives f to requests for path p and
// serves the others normally.
func FaultPath(p string, f Fault) FaultFunc {
	return func(r *http.Request) Fault {
		if r.URL.Path == "/"+p {
			return f
		}
		return Fault{}
	}
}

// discardLog silences the origin's http.Server (connections that clients
// cut off are expected here).
var discardLog = log.New(io.Discard, "", 0)
