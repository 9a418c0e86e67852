package fetch

import (
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

var (
	// ErrClosed is returned by calls on a closed Fetcher or Reader.
	ErrClosed = errors.New("fetch: closed")

	// ErrConfig is returned (wrapped) by New for a Config it cannot use: a
	// missing Host or Store, a negative duration or count.
	ErrConfig = errors.New("fetch: bad config")

	// ErrVerify is what every *VerifyError matches with errors.Is: bytes
	// that do not hash to the CID they were sent for.
	ErrVerify = errors.New("fetch: block failed verification")

	// ErrUnavailable reports that no source could deliver a block: the
	// origin failed (or there is none) and no peer delivered within
	// Config.StallTimeout. The blocks fetched until then stay in the store.
	ErrUnavailable = errors.New("fetch: content unavailable")

	// ErrChanged reports that the origin's file no longer matches the
	// content asked for (the manifest's entry is stale: the site was
	// redeployed): its size differs from the Target's, or a leaf it sent
	// does not hash to the CID the manifest gives. Every *ChangedError
	// matches it. A fetch fails with it at once when no peer is known to
	// hold the content (peers may otherwise complete it); it is not a
	// lying peer and penalises no one. Load the site's manifest again.
	ErrChanged = errors.New("fetch: content changed at the origin")

	// ErrNoRoute reports content that cannot be fetched as asked: a file of
	// more than one leaf without its inner nodes and with no peer or
	// gateway to give them, a Target without a CID, or a CID whose hash
	// no bytes are verified against (only sha2-256 with its whole 32-byte
	// digest, and identity).
	ErrNoRoute = errors.New("fetch: no way to fetch")

	// ErrMalformed reports content whose blocks are authentic (each hashes
	// to its CID) but do not make the file its description says: a leaf
	// longer or shorter than the root's block sizes, or than the size a
	// manifest gives a single-leaf file. No source can serve it as
	// described, so the fetch fails; no peer is penalised, as none lied.
	// Every *MalformedError matches it.
	ErrMalformed = errors.New("fetch: content does not match its description")
)

// Source names where bytes came from. It is also the value of the "source"
// label of the Prometheus metrics.
type Source string

// The sources of bytes.
const (
	SourceLocal  Source = "local"
	SourcePeer   Source = "peer"
	SourceOrigin Source = "origin"
)

// VerifyError reports a block whose bytes did not match its CID. It matches
// ErrVerify with errors.Is and wraps the underlying cause, if any.
type VerifyError struct {
	// Cid is the CID the bytes were asked for. For a block a peer sent
	// unasked (bitswap names a received block by the hash of its bytes, so
	// a corrupted block arrives under a CID nobody asked for), it is the
	// CID the bytes hash to.
	Cid cid.Cid
	// Source is where the bytes came from.
	Source Source
	// Peer is the peer that sent them; empty for the origin.
	Peer peer.ID
	// Err is the cause, if any.
	Err error
}

// Error describes the failure.
func (e *VerifyError) Error() string {
	from := string(e.Source)
	if e.Peer != "" {
		from = "peer " + e.Peer.String()
	}
	s := fmt.Sprintf("fetch: block %s from %s failed verification", e.Cid, from)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is reports whether target is ErrVerify.
func (e *VerifyError) Is(target error) bool { return target == ErrVerify }

// Unwrap returns the cause.
func (e *VerifyError) Unwrap() error { return e.Err }

// OriginStatusError reports an origin's answer with a status a fetch cannot
// use: a 404, a 500, a 429 or 503 that the retries its Retry-After allows
// did not cure (Fetcher asks again after a 429 or 503 at most twice, when
// Retry-After is absent or at most 5 s). The fetch goes on from peers, or
// fails with ErrUnavailable wrapping it.
type OriginStatusError struct {
	// URL is what was asked for (the file, or the gateway's block URL).
	URL string
	// Leaf is the leaf asked for.
	Leaf cid.Cid
	// StatusCode and Status are the answer's (404, "404 Not Found").
	StatusCode int
	Status     string
	// RetryAfter is the answer's Retry-After (0: none, or not a 429 or
	// 503): when the origin said it would serve again.
	RetryAfter time.Duration
}

// Error describes the answer.
func (e *OriginStatusError) Error() string {
	s := fmt.Sprintf("fetch: origin %s: %s answered %s", e.Leaf, e.URL, e.Status)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (Retry-After %v)", e.RetryAfter)
	}
	return s
}

// Is reports whether target is errOriginStatus: an origin status error
// ends the origin's part in the fetch (originFatal).
func (e *OriginStatusError) Is(target error) bool { return target == errOriginStatus }

// ChangedError reports an origin file that no longer matches the content a
// fetch asked for. It matches ErrChanged with errors.Is.
type ChangedError struct {
	// URL is the origin file.
	URL string
	// Root is the content asked for (the manifest's CID for the file).
	Root cid.Cid
	// Leaf is the leaf whose bytes failed verification; undefined when the
	// size told the change.
	Leaf cid.Cid
	// Size is the size the Target gives; OriginSize the one the origin
	// told (Content-Length or Content-Range), or -1 if the size told
	// nothing.
	Size, OriginSize int64
}

// Error describes the change.
func (e *ChangedError) Error() string {
	if e.OriginSize >= 0 {
		return fmt.Sprintf("fetch: %s (%s) changed at the origin: %d bytes there, %d expected", e.URL, e.Root, e.OriginSize, e.Size)
	}
	return fmt.Sprintf("fetch: %s (%s) changed at the origin: leaf %s does not match", e.URL, e.Root, e.Leaf)
}

// Is reports whether target is ErrChanged.
func (e *ChangedError) Is(target error) bool { return target == ErrChanged }

// MalformedError reports a leaf whose verified bytes are not as many as the
// content's description says (see ErrMalformed). It matches ErrMalformed
// with errors.Is.
type MalformedError struct {
	// Root is the content asked for, Leaf the leaf that did not fit.
	Root, Leaf cid.Cid
	// Size is how many bytes the leaf has; Declared how many the root's
	// block sizes (or the Target's Size) say it has.
	Size, Declared int64
}

// Error describes the mismatch.
func (e *MalformedError) Error() string {
	return fmt.Sprintf("fetch: %s: leaf %s is %d bytes, its description says %d", e.Root, e.Leaf, e.Size, e.Declared)
}

// Is reports whether target is ErrMalformed.
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }
