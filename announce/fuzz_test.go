package announce

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode checks that Decode never panics, that what it accepts obeys the
// documented limits, and that every accepted message has exactly one
// encoding: re-encoding gives the input back (when it has no duplicates).
// The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(mustHex(f, goodHex))
	f.Add(mustHex(f, "01 02 0000 0001 "+rootHex))
	f.Add(mustHex(f, "01 01 00b4 0002 "+rootHex+rootHex))
	f.Add(mustHex(f, "02 03 0078 0001 "+rootHex))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decode error %v wraps no sentinel", err)
			}
			return
		}
		if len(b) > MaxMessageSize || len(m.Roots) == 0 {
			t.Fatalf("Decode accepted %d bytes with %d roots", len(b), len(m.Roots))
		}
		if (m.Kind != Drop) != (m.TTL > 0) {
			t.Fatalf("Decode gave kind %v with ttl %v", m.Kind, m.TTL)
		}
		out, err := Encode(m.Kind, m.TTL, m.Roots)
		if err != nil {
			t.Fatalf("Encode(Decode(%x)) = %v", b, err)
		}
		if len(out) != 1 {
			t.Fatalf("Encode(Decode(%x)) gave %d messages", b, len(out))
		}
		count := int(b[4])<<8 | int(b[5])
		if count == len(m.Roots) && !bytes.Equal(out[0], b) {
			t.Fatalf("Encode(Decode(%x)) = %x: two encodings of one message", b, out[0])
		}
	})
}
