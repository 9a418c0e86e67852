package announce

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// FuzzDecode checks that Decode never panics, that what it accepts obeys the
// documented limits, and that every accepted message of roots has exactly
// one encoding: re-encoding gives the input back (when it has no
// duplicates). An ADDRS message (no roots) encodes again to the same
// addresses. The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(mustHex(f, goodHex))
	f.Add(mustHex(f, "01 02 0000 0001 "+rootHex))
	f.Add(mustHex(f, "01 01 00b4 0002 "+rootHex+rootHex))
	f.Add(mustHex(f, "02 03 0078 0001 "+rootHex))
	f.Add([]byte{})
	addrs, err := EncodeAddrs(time.Minute, []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(addrs)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decode error %v wraps no sentinel", err)
			}
			return
		}
		if m.Kind == Addrs {
			checkAddrs(t, b, m)
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

// checkAddrs checks an ADDRS message m that Decode accepted from b: within
// the limits, no roots, and EncodeAddrs of its addresses decodes to the
// same addresses, duplicates sent once.
func checkAddrs(t *testing.T, b []byte, m Message) {
	t.Helper()
	if len(b) > MaxMessageSize || len(m.Roots) != 0 || len(m.Addrs) == 0 || len(m.Addrs) > MaxAddrs || m.TTL <= 0 {
		t.Fatalf("Decode accepted ADDRS of %d bytes: %d roots, %d addresses, ttl %v", len(b), len(m.Roots), len(m.Addrs), m.TTL)
	}
	out, err := EncodeAddrs(m.TTL, m.Addrs)
	if err != nil {
		t.Fatalf("EncodeAddrs(Decode(%x)) = %v", b, err)
	}
	m2, err := Decode(out)
	if err != nil {
		t.Fatalf("Decode(EncodeAddrs(Decode(%x))) = %v", b, err)
	}
	var want []ma.Multiaddr
	for _, a := range m.Addrs {
		if !slices.ContainsFunc(want, a.Equal) {
			want = append(want, a)
		}
	}
	if !slices.EqualFunc(m2.Addrs, want, ma.Multiaddr.Equal) || m2.TTL != m.TTL {
		t.Fatalf("ADDRS %x encoded again as %x: %v for %v, ttl %v", b, out, m2.Addrs, want, m2.TTL)
	}
}
