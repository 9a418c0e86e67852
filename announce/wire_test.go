package announce

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
)

func testCid(t testing.TB, codec uint64, data string) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte(data), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(codec, h)
}

func ExampleEncode() {
	h1, _ := mh.Sum([]byte("hello\n"), mh.SHA2_256, -1)
	h2, _ := mh.Sum([]byte("world\n"), mh.SHA2_256, -1)
	roots := []cid.Cid{cid.NewCidV1(cid.Raw, h1), cid.NewCidV1(cid.DagProtobuf, h2)}

	have, _ := Encode(Have, 3*time.Minute, roots)
	drop, _ := Encode(Drop, 0, roots[:1])
	fetch, _ := Encode(Fetch, 2*time.Minute, roots[1:])
	fmt.Println(hex.EncodeToString(have[0]))
	fmt.Println(hex.EncodeToString(drop[0]))
	fmt.Println(hex.EncodeToString(fetch[0]))

	m, _ := Decode(have[0])
	fmt.Println(m.Kind, m.TTL, m.Roots[0])
	m, _ = Decode(fetch[0])
	fmt.Println(m.Kind, m.TTL, m.Roots[0])
	// Output:
	// 010100b4000224015512205891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be032401701220e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317
	// 01020000000124015512205891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
	// 0203007800012401701220e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317
	// HAVE 3m0s bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am
	// FETCH 2m0s bafybeihcldjer7njjrrxknqh67cestxa7s7jf4nhnp62y6k4twcbahvtc4
}

func TestEncodeSplitsAtMaxMessageSize(t *testing.T) {
	roots := make([]cid.Cid, 1000)
	for i := range roots {
		roots[i] = testCid(t, cid.Raw, fmt.Sprint(i))
	}
	msgs, err := Encode(Have, time.Minute, roots)
	if err != nil {
		t.Fatal(err)
	}
	var got []cid.Cid
	for _, b := range msgs {
		if len(b) > MaxMessageSize {
			t.Fatalf("message of %d bytes, max %d", len(b), MaxMessageSize)
		}
		m, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode()) = %v", err)
		}
		got = append(got, m.Roots...)
	}
	if len(msgs) != 3 || len(got) != len(roots) {
		t.Fatalf("Encode(1000 roots) = %d messages with %d roots, want 3 with 1000", len(msgs), len(got))
	}
	for i := range got {
		if !got[i].Equals(roots[i]) {
			t.Fatalf("root %d = %s, want %s", i, got[i], roots[i])
		}
	}
	if n := (MaxMessageSize - headerSize) / 37; n != 442 {
		t.Fatalf("roots per message = %d, the docs say 442", n)
	}
}

func TestEncodeRejects(t *testing.T) {
	raw := testCid(t, cid.Raw, "x")
	v0 := cid.NewCidV0(raw.Hash())
	blake, _ := mh.Sum([]byte("x"), mh.BLAKE3, 32)
	for _, tc := range []struct {
		name  string
		kind  Kind
		ttl   time.Duration
		roots []cid.Cid
	}{
		{"have ttl 0", Have, 0, []cid.Cid{raw}},
		{"have ttl too long", Have, 65536 * time.Second, []cid.Cid{raw}},
		{"drop with ttl", Drop, time.Second, []cid.Cid{raw}},
		{"fetch ttl 0", Fetch, 0, []cid.Cid{raw}},
		{"unknown kind", Kind(9), time.Second, []cid.Cid{raw}},
		{"cidv0", Have, time.Second, []cid.Cid{v0}},
		{"blake3", Have, time.Second, []cid.Cid{cid.NewCidV1(cid.Raw, blake)}},
		{"undefined", Have, time.Second, []cid.Cid{cid.Undef}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Encode(tc.kind, tc.ttl, tc.roots); err == nil {
				t.Fatalf("Encode(%v, %v, %v) = nil error, want one", tc.kind, tc.ttl, tc.roots)
			}
		})
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	rootHex = "24 01 55 1220 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
	goodHex = "01 01 00b4 0001 " + rootHex
)

func TestDecodeRejects(t *testing.T) {
	if _, err := Decode(mustHex(t, goodHex)); err != nil {
		t.Fatalf("Decode(good) = %v", err)
	}
	blake, _ := mh.Sum([]byte("x"), mh.BLAKE3, 32)
	blakeCid := cid.NewCidV1(cid.Raw, blake).Bytes()
	v0 := testCid(t, cid.Raw, "x").Hash()
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"version 3", mustHex(t, "03 01 00b4 0001 "+rootHex), ErrUnknownVersion},
		{"version 2 HAVE", mustHex(t, "02 01 00b4 0001 "+rootHex), ErrMalformed},
		{"version 2 DROP", mustHex(t, "02 02 0000 0001 "+rootHex), ErrMalformed},
		{"version 1 FETCH", mustHex(t, "01 03 0078 0001 "+rootHex), ErrMalformed},
		{"fetch ttl 0", mustHex(t, "02 03 0000 0001 "+rootHex), ErrMalformed},
		{"version 0", mustHex(t, "00"), ErrUnknownVersion},
		{"short header", mustHex(t, "01 01 00b4 00"), ErrMalformed},
		{"kind 4", mustHex(t, "01 04 00b4 0001 "+rootHex), ErrMalformed},
		{"version 2 kind 4", mustHex(t, "02 04 00b4 0001 "+rootHex), ErrMalformed},
		{"have ttl 0", mustHex(t, "01 01 0000 0001 "+rootHex), ErrMalformed},
		{"drop ttl 1", mustHex(t, "01 02 0001 0001 "+rootHex), ErrMalformed},
		{"count 0", mustHex(t, "01 01 00b4 0000"), ErrMalformed},
		{"count too big", mustHex(t, "01 01 00b4 0002 "+rootHex), ErrMalformed},
		{"count huge", mustHex(t, "01 01 00b4 ffff "+rootHex), ErrMalformed},
		{"trailing byte", mustHex(t, goodHex+"00"), ErrMalformed},
		{"length 0", mustHex(t, "01 01 00b4 0001 00 00"), ErrMalformed},
		{"length past end", mustHex(t, "01 01 00b4 0001 25 015512205891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"), ErrMalformed},
		{"length short", mustHex(t, "01 01 00b4 0001 23 015512205891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be"), ErrMalformed},
		{"cidv0", append(mustHex(t, "01 01 00b4 0001 22"), v0...), ErrMalformed},
		{"blake3", append(append(mustHex(t, "01 01 00b4 0001"), byte(len(blakeCid))), blakeCid...), ErrMalformed},
		{"garbage 1 MiB", bytes.Repeat([]byte{1}, 1<<20), ErrTooLarge},
		{"one over max", append(mustHex(t, goodHex), make([]byte, MaxMessageSize)...)[:MaxMessageSize+1], ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode(%x) = %v, %v, want %v", tc.in[:min(len(tc.in), 64)], m, err, tc.want)
			}
		})
	}
}

func TestDecodeDedupes(t *testing.T) {
	m, err := Decode(mustHex(t, "01 01 00b4 0002 "+rootHex+rootHex))
	if err != nil || len(m.Roots) != 1 {
		t.Fatalf("Decode(root twice) = %v, %v, want one root", m, err)
	}
}

func TestAddrsRoundTrip(t *testing.T) {
	a := ma.StringCast("/ip4/127.0.0.1/tcp/4001")
	b := ma.StringCast("/ip6/::1/udp/4001/quic-v1")
	in := []ma.Multiaddr{a, b, a}
	for range MaxAddrs {
		in = append(in, ma.StringCast("/ip4/10.0.0.1/tcp/1"))
	}
	msg, err := EncodeAddrs(90*time.Second, in)
	if err != nil {
		t.Fatal(err)
	}
	if msg[0] != VersionAddrs || Kind(msg[1]) != Addrs {
		t.Fatalf("header %x, want version %d kind %d", msg[:2], VersionAddrs, Addrs)
	}
	m, err := Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	// Duplicates go once: a, b and the third address, 3 in all.
	if m.Kind != Addrs || m.TTL != 90*time.Second || len(m.Addrs) != 3 || !m.Addrs[0].Equal(a) || !m.Addrs[1].Equal(b) || len(m.Roots) != 0 {
		t.Fatalf("Decode(EncodeAddrs) = %+v", m)
	}
	many := make([]ma.Multiaddr, 0, MaxAddrs+2)
	for i := range MaxAddrs + 2 {
		many = append(many, ma.StringCast(fmt.Sprintf("/ip4/10.0.0.%d/tcp/1", i)))
	}
	if msg, err = EncodeAddrs(time.Minute, many); err != nil {
		t.Fatal(err)
	}
	if m, err = Decode(msg); err != nil || len(m.Addrs) != MaxAddrs {
		t.Fatalf("Decode(EncodeAddrs(%d addresses)) = %d addresses, %v, want %d", len(many), len(m.Addrs), err, MaxAddrs)
	}
	for _, bad := range []time.Duration{0, (MaxTTLSeconds + 1) * time.Second} {
		if _, err := EncodeAddrs(bad, in); err == nil {
			t.Errorf("EncodeAddrs(ttl %v) did not fail", bad)
		}
	}
	if _, err := EncodeAddrs(time.Minute, nil); err == nil {
		t.Error("EncodeAddrs(no addresses) did not fail")
	}
}

func TestDecodeAddrsRejects(t *testing.T) {
	addr := hex.EncodeToString(ma.StringCast("/ip4/127.0.0.1/tcp/4001").Bytes()) // 8 bytes
	good := "03 04 0078 0001 0008 " + addr
	if _, err := Decode(mustHex(t, good)); err != nil {
		t.Fatalf("Decode(good) = %v", err)
	}
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"other kind in version 3", "03 01 00b4 0001 " + rootHex, ErrUnknownVersion},
		{"ttl 0", "03 04 0000 0001 0008 " + addr, ErrMalformed},
		{"count 0", "03 04 0078 0000", ErrMalformed},
		{"count over MaxAddrs", "03 04 0078 0009 0008 " + addr, ErrMalformed},
		{"count too big", "03 04 0078 0002 0008 " + addr, ErrMalformed},
		{"length 0", "03 04 0078 0001 0000", ErrMalformed},
		{"length past end", "03 04 0078 0001 0009 " + addr, ErrMalformed},
		{"length over 1024", "03 04 0078 0001 0401 " + addr, ErrMalformed},
		{"not a multiaddr", "03 04 0078 0001 0002 ffff", ErrMalformed},
		{"trailing byte", good + "00", ErrMalformed},
		{"short header", "03 04 0078 00", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(mustHex(t, tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode(%s) = %v, %v, want %v", tc.in, m, err, tc.want)
			}
		})
	}
}
