package store

import (
	"errors"
	"testing"

	"github.com/dgraph-io/badger/v4/y"
)

// TestIsChecksumError: badger reports a value whose CRC32C fails as
// y.Wrapf(y.ErrChecksumMismatch, ...), which keeps only the text.
func TestIsChecksumError(t *testing.T) {
	vp := struct{ Fid, Len, Offset uint32 }{1, 1048658, 1048678}
	if err := y.Wrapf(y.ErrChecksumMismatch, "value corrupted for vp: %+v", vp); !isChecksumError(err) {
		t.Errorf("isChecksumError(%q) = false", err)
	}
	if err := errors.New("read /x/000001.vlog: input/output error"); isChecksumError(err) {
		t.Errorf("isChecksumError(%q) = true", err)
	}
}
