package store

import (
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

var (
	// ErrQuotaExceeded means the bytes could not be stored without going over
	// the quota, even after evicting every unpinned content not in use.
	ErrQuotaExceeded = errors.New("store: quota exceeded")
	// ErrClosed is returned by every call made after Close.
	ErrClosed = errors.New("store: closed")
	// ErrIncomplete means a root's DAG is missing blocks in the store.
	ErrIncomplete = errors.New("store: content incomplete")
	// ErrCorrupt means stored bytes no longer hash to their CID; see
	// *CorruptError.
	ErrCorrupt = errors.New("store: corrupt block")
	// ErrHashMismatch means a block handed to Put does not hash to its CID.
	ErrHashMismatch = errors.New("store: block does not match its CID")
	// ErrNotPinned is returned by Unpin for content that is not pinned.
	ErrNotPinned = errors.New("store: not pinned")
	// ErrDiskFull means a write was refused because the disk holding the
	// store has less than DiskMargin free after it (or its free space
	// cannot be read, as when the directory was removed). Nothing was
	// written; what the store holds can still be read.
	ErrDiskFull = errors.New("store: disk full")
	// ErrReadOnly means the store refuses every write for its lifetime:
	// it was opened read-only because the disk was full (Health says why).
	ErrReadOnly = errors.New("store: read-only")
)

// CorruptError reports a stored block whose bytes no longer hash to its CID
// (bit rot, a tampered file). The block is never returned; Get fails with this
// error and the block is removed from the store so that it can be fetched
// again. errors.Is(err, ErrCorrupt) holds.
type CorruptError struct {
	Cid cid.Cid
}

// Error says which block was corrupt and how.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("store: block %s: stored bytes do not match its hash", e.Cid)
}

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }
