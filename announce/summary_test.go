package announce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/store"
)

func rawRoot(t testing.TB, i int) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte{byte(i >> 16), byte(i >> 8), byte(i)}, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

func testPeer(t testing.TB) peer.ID {
	t.Helper()
	p, err := peer.Decode("12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSummaryRoundTrip(t *testing.T) {
	in := Summary{
		TTL: 180 * time.Second,
		Own: []cid.Cid{rawRoot(t, 1), rawRoot(t, 2)},
		Others: []Holder{{
			Peer:  testPeer(t),
			Addrs: []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/udp/4001/quic-v1"), ma.StringCast("/ip6/::1/tcp/4001")},
			Roots: []cid.Cid{rawRoot(t, 3)},
		}},
	}
	b, err := EncodeSummary(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeSummary(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.TTL != in.TTL || len(out.Own) != 2 || !out.Own[1].Equals(in.Own[1]) || len(out.Others) != 1 ||
		out.Others[0].Peer != in.Others[0].Peer || len(out.Others[0].Addrs) != 2 || !out.Others[0].Addrs[1].Equal(in.Others[0].Addrs[1]) ||
		!out.Others[0].Roots[0].Equals(in.Others[0].Roots[0]) {
		t.Fatalf("DecodeSummary(EncodeSummary(%+v)) = %+v", in, out)
	}
	// No roots at all: the header alone.
	b, err = EncodeSummary(Summary{TTL: time.Second})
	if err != nil || !bytes.Equal(b, []byte{1, 0, 1}) {
		t.Fatalf("EncodeSummary(empty) = %x, %v; want 010001", b, err)
	}
}

// TestEncodeSummaryBounds: an answer never exceeds MaxSummarySize or
// MaxSummaryHolders; own roots go first.
func TestEncodeSummaryBounds(t *testing.T) {
	own := make([]cid.Cid, 40000) // 37 bytes each: 1.4 MiB
	for i := range own {
		own[i] = rawRoot(t, i)
	}
	b, err := EncodeSummary(Summary{TTL: time.Minute, Own: own, Others: []Holder{{Peer: testPeer(t), Roots: own[:1]}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxSummarySize {
		t.Fatalf("answer of %d bytes, over MaxSummarySize", len(b))
	}
	s, err := DecodeSummary(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (MaxSummarySize - 3 - 4) / 37; len(s.Own) != want || len(s.Others) != 0 {
		t.Errorf("%d own roots and %d holders fit, want %d and 0", len(s.Own), len(s.Others), want)
	}

	var holders []Holder
	for i := range MaxSummaryHolders + 10 {
		id, err := peer.IDFromBytes(append([]byte{0, 36, 8, 1, 18, 32}, bytes.Repeat([]byte{byte(i)}, 32)...))
		if err != nil {
			t.Fatal(err)
		}
		holders = append(holders, Holder{Peer: id, Roots: []cid.Cid{rawRoot(t, i)}})
	}
	b, err = EncodeSummary(Summary{TTL: time.Minute, Others: holders})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := DecodeSummary(b); err != nil || len(s.Others) != MaxSummaryHolders {
		t.Errorf("%d holders given: decoded %d, %v; want %d", len(holders), len(s.Others), err, MaxSummaryHolders)
	}
}

func TestDecodeSummaryRejects(t *testing.T) {
	root := rawRoot(t, 1).Bytes()
	pid := []byte(testPeer(t))
	group := func(p []byte, addrs [][]byte, roots ...[]byte) []byte {
		b := []byte{byte(len(p))}
		b = append(b, p...)
		b = append(b, byte(len(addrs)))
		for _, a := range addrs {
			b = binary.BigEndian.AppendUint16(b, uint16(len(a)))
			b = append(b, a...)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(roots)))
		for _, r := range roots {
			b = append(b, byte(len(r)))
			b = append(b, r...)
		}
		return b
	}
	hdr := []byte{1, 0, 180}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/1").Bytes()
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"version 2", []byte{2, 0, 1}, ErrUnknownVersion},
		{"short header", []byte{1, 0}, ErrMalformed},
		{"ttl 0", []byte{1, 0, 0}, ErrMalformed},
		{"own group not first", cat(hdr, group(pid, nil, root), group(nil, nil, root)), ErrMalformed},
		{"holder twice", cat(hdr, group(pid, nil, root), group(pid, nil, root)), ErrMalformed},
		{"no roots", cat(hdr, group(nil, nil)), ErrMalformed},
		{"addresses for self", cat(hdr, group(nil, [][]byte{addr}, root)), ErrMalformed},
		{"bad peer ID", cat(hdr, group([]byte{1, 2, 3}, nil, root)), ErrMalformed},
		{"bad address", cat(hdr, group(pid, [][]byte{{0xff, 0xff}}, root)), ErrMalformed},
		{"truncated root", cat(hdr, group(nil, nil, root))[:30], ErrMalformed},
		{"trailing byte", cat(hdr, group(nil, nil, root), []byte{7}), ErrMalformed},
		{"sha1 root", cat(hdr, group(nil, nil, cid.NewCidV1(cid.Raw, mustSum(t, mh.SHA1)).Bytes())), ErrMalformed},
		{"too large", make([]byte, MaxSummarySize+1), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeSummary(tt.b); !errors.Is(err, tt.want) {
				t.Errorf("DecodeSummary(%s) = %v, want %v", tt.name, err, tt.want)
			}
		})
	}
	if _, err := DecodeSummaryRequest([]byte{1}); !errors.Is(err, ErrMalformed) {
		t.Errorf("DecodeSummaryRequest(1 byte) = %v, want ErrMalformed", err)
	}
	if _, err := DecodeSummaryRequest([]byte{2, 1}); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("DecodeSummaryRequest(version 2) = %v, want ErrUnknownVersion", err)
	}
	if r, err := DecodeSummaryRequest([]byte{1, 0xff}); err != nil || !r.Others {
		t.Errorf("DecodeSummaryRequest(unknown flags) = %+v, %v; want Others and no error", r, err)
	}
}

func mustSum(t *testing.T, code uint64) mh.Multihash {
	h, err := mh.Sum([]byte("x"), code, -1)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func FuzzDecodeSummary(f *testing.F) {
	b, err := EncodeSummary(Summary{TTL: time.Minute, Own: []cid.Cid{rawRoot(f, 1)},
		Others: []Holder{{Peer: testPeer(f), Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")}, Roots: []cid.Cid{rawRoot(f, 2)}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{1, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSummary(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("DecodeSummary error %v wraps no sentinel", err)
			}
			return
		}
		out, err := EncodeSummary(s)
		if err != nil {
			t.Fatalf("EncodeSummary(DecodeSummary(%x)) = %v", b, err)
		}
		again, err := DecodeSummary(out)
		if err != nil || len(again.Own) != len(s.Own) || len(again.Others) != len(s.Others) {
			t.Fatalf("re-decoding %x: %+v, %v; want %+v", out, again, err, s)
		}
	})
}

// summaryPeer is a host with a store and a SummaryService.
func summaryPeer(t *testing.T, table *Table, timeout time.Duration) (host.Host, *store.Store, *SummaryService) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	st, err := store.New(store.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := NewSummaryService(SummaryConfig{Name: "sum", Host: h, Holdings: st, Table: table, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return h, st, s
}

// TestSummaryServiceOverHosts: a seed answers with what it holds and, when
// asked, the holders its table lists (not the asker), with addresses.
func TestSummaryServiceOverHosts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	table := NewTable(TableConfig{})
	defer table.Close()
	seedHost, seedStore, _ := summaryPeer(t, table, 0)
	appHost, _, app := summaryPeer(t, nil, 0)
	content, err := seedStore.Import(ctx, strings.NewReader("held by the seed\n"), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := testPeer(t)
	seedHost.Peerstore().AddAddrs(other, []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")}, time.Hour)
	table.Add(other, time.Minute, rawRoot(t, 7))
	table.Add(appHost.ID(), time.Minute, rawRoot(t, 8)) // the asker: not told back
	if err := appHost.Connect(ctx, peer.AddrInfo{ID: seedHost.ID(), Addrs: seedHost.Addrs()}); err != nil {
		t.Fatal(err)
	}
	sum, err := app.Request(ctx, seedHost.ID(), SummaryRequest{Others: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Own) != 1 || !sum.Own[0].Equals(content.Root) || sum.TTL != DefaultSummaryTTL {
		t.Errorf("own = %v ttl %v, want [%s] ttl %v", sum.Own, sum.TTL, content.Root, DefaultSummaryTTL)
	}
	if len(sum.Others) != 1 || sum.Others[0].Peer != other || len(sum.Others[0].Addrs) != 1 || !sum.Others[0].Roots[0].Equals(rawRoot(t, 7)) {
		t.Errorf("others = %+v, want %s with one address and one root", sum.Others, other)
	}
	sum, err = app.Request(ctx, seedHost.ID(), SummaryRequest{})
	if err != nil || len(sum.Others) != 0 || len(sum.Own) != 1 {
		t.Errorf("without Others: %+v, %v; want own roots only", sum, err)
	}
}

// TestSummaryRequestBounded: a peer that never answers, or answers more
// than MaxSummarySize, costs the asker a bounded wait and an error.
func TestSummaryRequestBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	badHost, _, bad := summaryPeer(t, nil, 0)
	bad.Close() // replace its handler with misbehaving ones
	appHost, _, app := summaryPeer(t, nil, 500*time.Millisecond)
	if err := appHost.Connect(ctx, peer.AddrInfo{ID: badHost.ID(), Addrs: badHost.Addrs()}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	badHost.SetStreamHandler(SummaryProtocol("sum"), func(st network.Stream) {
		<-release
		st.Reset()
	})
	start := time.Now()
	if _, err := app.Request(ctx, badHost.ID(), SummaryRequest{}); err == nil {
		t.Fatal("Request to a peer that never answers succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Request to a silent peer took %v with a 500 ms timeout", d)
	}

	badHost.SetStreamHandler(SummaryProtocol("sum"), func(st network.Stream) {
		io.ReadFull(st, make([]byte, 2))
		st.Write([]byte{1, 0, 60})
		st.Write(make([]byte, MaxSummarySize))
		st.Close()
	})
	app2Host, _, app2 := summaryPeer(t, nil, 10*time.Second)
	if err := app2Host.Connect(ctx, peer.AddrInfo{ID: badHost.ID(), Addrs: badHost.Addrs()}); err != nil {
		t.Fatal(err)
	}
	if _, err := app2.Request(ctx, badHost.ID(), SummaryRequest{}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Request answered with %d bytes = %v, want ErrTooLarge", MaxSummarySize+3, err)
	}
}
