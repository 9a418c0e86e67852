package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	badger4 "github.com/ipfs/go-ds-badger4"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

// asset is content a damage test stored: its bytes, root and leaves.
type asset struct {
	data   []byte
	root   cid.Cid
	leaves []store.Leaf
	pinned bool
}

// damageFixture stores three pinned assets and one unpinned one in a
// badger store in dir and closes it.
func damageFixture(t *testing.T, dir string) []asset {
	t.Helper()
	ctx := context.Background()
	s, err := store.New(store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var out []asset
	for i, size := range []int64{3*mib + 11, 4*mib + 22, 2*mib + 33, 3*mib + 44} {
		a := asset{data: testutil.Bytes(uint64(40+i), size), pinned: i < 3}
		c, err := s.Import(ctx, bytes.NewReader(a.data), store.ImportOptions{Pin: a.pinned})
		if err != nil {
			t.Fatal(err)
		}
		a.root = c.Root
		if a.leaves, err = store.Leaves(ctx, s, c.Root, size); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkNoWrongByte reads every leaf of every asset: each is the right bytes
// or an error, never wrong bytes. It returns the leaves that failed.
func checkNoWrongByte(t *testing.T, s *store.Store, assets []asset) map[string]bool {
	t.Helper()
	ctx := context.Background()
	lost := map[string]bool{}
	for _, a := range assets {
		for _, l := range a.leaves {
			for _, get := range []func(context.Context, cid.Cid) (interface{ RawData() []byte }, error){
				func(ctx context.Context, c cid.Cid) (interface{ RawData() []byte }, error) {
					return s.GetForPeer(ctx, c)
				},
				func(ctx context.Context, c cid.Cid) (interface{ RawData() []byte }, error) { return s.Get(ctx, c) },
			} {
				b, err := get(ctx, l.Cid)
				if err != nil {
					lost[l.Cid.KeyString()] = true
					continue
				}
				if !bytes.Equal(b.RawData(), a.data[l.Offset:l.Offset+l.Size]) {
					t.Fatalf("leaf %s at %d read back WRONG BYTES", l.Cid, l.Offset)
				}
			}
		}
	}
	return lost
}

// checkPinsKept checks that every pinned asset is still pinned, whole or
// incomplete, and that the usage stays within the quota.
func checkPinsKept(t *testing.T, s *store.Store, assets []asset) {
	t.Helper()
	pinned := map[string]bool{}
	for _, r := range append(s.Roots(), s.Incomplete()...) {
		if r.Pinned {
			pinned[r.Cid.KeyString()] = true
		}
	}
	for _, a := range assets {
		if a.pinned && !pinned[a.root.KeyString()] {
			t.Errorf("pin of %s lost", a.root)
		}
	}
	if u := s.Usage(); u.Used > u.Quota || u.Pinned > u.Used {
		t.Errorf("Usage = %+v", u)
	}
}

// flipAt flips one bit of the file at each offset.
func flipAt(t *testing.T, file string, offsets ...int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range offsets {
		b[o] ^= 0x10
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func glob1(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no file matches %s", pattern)
	}
	return files
}

// TestDamageValueLog: ten flipped bytes in ten leaves in badger's value
// log (the newest file, which badger cuts at the first damaged entry when
// it opens). Exactly those ten leaves are lost: their content stays pinned,
// incomplete, with every other leaf readable, and putting the ten back
// makes it whole.
func TestDamageValueLog(t *testing.T) {
	dir := t.TempDir()
	assets := damageFixture(t, dir)
	vlogs := glob1(t, filepath.Join(dir, "*.vlog"))
	vlog, err := os.ReadFile(vlogs[len(vlogs)-1])
	if err != nil {
		t.Fatal(err)
	}
	type leafAt struct {
		a    int
		leaf store.Leaf
	}
	var big []leafAt
	for i, a := range assets {
		for _, l := range a.leaves {
			if l.Size >= mib {
				big = append(big, leafAt{i, l})
			}
		}
	}
	rng := rand.New(rand.NewPCG(10, 10))
	rng.Shuffle(len(big), func(i, j int) { big[i], big[j] = big[j], big[i] })
	victims := big[:10]
	var offs []int
	want := map[string]bool{}
	for _, v := range victims {
		data := assets[v.a].data[v.leaf.Offset : v.leaf.Offset+v.leaf.Size]
		at := bytes.Index(vlog, data[:256])
		if at < 0 {
			t.Fatalf("leaf %s not in the newest value log", v.leaf.Cid)
		}
		offs = append(offs, at+int(v.leaf.Size)/2)
		want[v.leaf.Cid.KeyString()] = true
	}
	flipAt(t, vlogs[len(vlogs)-1], offs...)

	s := newBadger(t, dir, 0)
	lost := checkNoWrongByte(t, s, assets)
	checkPinsKept(t, s, assets)
	if len(lost) != len(want) {
		t.Errorf("%d leaves lost, want exactly the %d damaged", len(lost), len(want))
	}
	for k := range lost {
		if !want[k] {
			t.Errorf("a good leaf was lost")
		}
	}
	for i, a := range assets {
		var mine []cid.Cid
		for _, v := range victims {
			if v.a == i {
				mine = append(mine, v.leaf.Cid)
			}
		}
		if len(mine) > 0 && a.pinned {
			checkLost(t, s, a.root, a.data, mine...)
		}
	}
}

// TestDamageValueLogAnywhere: ten bytes flipped at random places of the
// newest value log file, headers and keys included. Each flip costs at
// most the leaf whose entry it hit: no more than ten leaves are lost, each
// of them hit, every pin kept, no wrong byte.
func TestDamageValueLogAnywhere(t *testing.T) {
	dir := t.TempDir()
	assets := damageFixture(t, dir)
	vlogs := glob1(t, filepath.Join(dir, "*.vlog"))
	file := vlogs[len(vlogs)-1]
	vlog, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 11))
	var offs []int
	for range 10 {
		offs = append(offs, 20+rng.IntN(len(vlog)-20))
	}
	flipAt(t, file, offs...)
	// A leaf's entry: its header and key (under 100 bytes) before its
	// bytes, and its CRC after.
	hit := map[string]bool{}
	for _, a := range assets {
		for _, l := range a.leaves {
			at := bytes.Index(vlog, a.data[l.Offset:l.Offset+min(l.Size, 256)])
			for _, o := range offs {
				if at >= 0 && o >= at-100 && o < at+int(l.Size)+4 {
					hit[l.Cid.KeyString()] = true
				}
			}
		}
	}

	s := newBadger(t, dir, 0)
	lost := checkNoWrongByte(t, s, assets)
	checkPinsKept(t, s, assets)
	for k := range lost {
		if !hit[k] {
			t.Errorf("a leaf no flip hit was lost")
		}
	}
	t.Logf("%d leaves hit, %d lost", len(hit), len(lost))
	for _, a := range assets {
		if a.pinned {
			refetch(t, s, a.data)
			if !s.Holds(a.root) {
				t.Errorf("pinned %s not whole after fetching it again", a.root)
			}
		}
	}
}

// TestDamageRecordInTable: one flipped byte in a pinned content's root
// record, in a table file. Its checksum fails; the pin file brings the
// record back: nothing is lost, no pin, no block.
func TestDamageRecordInTable(t *testing.T) {
	dir := t.TempDir()
	assets := damageFixture(t, dir)
	// Block CIDs in text form appear only in root records.
	flipByteIn(t, filepath.Join(dir, "*.sst"), []byte(assets[1].leaves[2].Cid.String()[8:40]))

	s := newBadger(t, dir, 0)
	h := s.Health()
	if h.DroppedRecords != 1 || h.RestoredPins != 1 {
		t.Errorf("Health = %+v, want one record dropped and its pin restored", h)
	}
	if lost := checkNoWrongByte(t, s, assets); len(lost) != 0 {
		t.Errorf("%d leaves lost", len(lost))
	}
	checkPinsKept(t, s, assets)
	for _, a := range assets {
		if !s.Holds(a.root) {
			t.Errorf("Holds(%s) = false", a.root)
		}
	}
}

// TestDamageManifest: one flipped byte in badger's MANIFEST and badger
// cannot open the database. The store moves it aside (kept, not deleted),
// starts from what verifies in it, keeps every pin from its pin file, and
// never returns a wrong byte.
func TestDamageManifest(t *testing.T) {
	dir := t.TempDir()
	assets := damageFixture(t, dir)
	mf := filepath.Join(dir, "MANIFEST")
	info, err := os.Stat(mf)
	if err != nil {
		t.Fatal(err)
	}
	flipAt(t, mf, int(info.Size())/2)

	rec := &recorder{}
	s, err := store.New(store.Config{Dir: dir, Logger: slog.New(rec)})
	if err != nil {
		t.Fatalf("New with a damaged MANIFEST = %v", err)
	}
	defer s.Close()
	if !rec.has("damaged database moved aside; starting from what verifies in it") {
		t.Errorf("no log line says the database was moved aside: %q", rec.recs)
	}
	h := s.Health()
	if h.MovedAside == "" {
		t.Fatalf("Health = %+v, want the damaged database moved aside", h)
	}
	if _, err := os.Stat(filepath.Join(h.MovedAside, "MANIFEST")); err != nil {
		t.Errorf("the damaged database is not kept at %s: %v", h.MovedAside, err)
	}
	checkPinsKept(t, s, assets)
	// Every entry is salvaged from the tables and value log that the
	// MANIFEST indexed: nothing is lost, unpinned content neither.
	if lost := checkNoWrongByte(t, s, assets); len(lost) != 0 {
		t.Errorf("%d leaves lost", len(lost))
	}
	for _, a := range assets {
		if !s.Holds(a.root) {
			t.Errorf("Holds(%s) = false after salvage", a.root)
		}
	}
	if h.RestoredPins != 0 || h.Incomplete != 0 {
		t.Errorf("Health = %+v", h)
	}
}

// TestDamageTables: five flipped bytes in every table file.
func TestDamageTables(t *testing.T) {
	dir := t.TempDir()
	assets := damageFixture(t, dir)
	rng := rand.New(rand.NewPCG(9, 9))
	for _, f := range glob1(t, filepath.Join(dir, "*.sst")) {
		info, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		var offs []int
		for range 5 {
			offs = append(offs, rng.IntN(int(info.Size())))
		}
		flipAt(t, f, offs...)
	}
	s := newBadger(t, dir, 0)
	checkPinsKept(t, s, assets)
	lost := checkNoWrongByte(t, s, assets)
	t.Logf("Health = %+v; %d leaves lost", s.Health(), len(lost))
	// Each pinned content that lost a leaf is listed incomplete with it;
	// fetching it again (putting every block) makes it whole.
	incomplete := map[string]map[string]bool{}
	for _, ri := range s.Incomplete() {
		incomplete[ri.Cid.KeyString()] = map[string]bool{}
		for _, c := range ri.Missing {
			incomplete[ri.Cid.KeyString()][c.KeyString()] = true
		}
	}
	ctx := context.Background()
	for _, a := range assets {
		if !a.pinned {
			continue
		}
		for _, l := range a.leaves {
			if lost[l.Cid.KeyString()] && !incomplete[a.root.KeyString()][l.Cid.KeyString()] {
				t.Errorf("lost leaf %s of pinned %s is not listed missing", l.Cid, a.root)
			}
		}
		refetch(t, s, a.data)
		if !s.Holds(a.root) || !bytes.Equal(readAll(t, s, a.root, int64(len(a.data))), a.data) {
			t.Errorf("pinned %s not whole after fetching it again", a.root)
		}
		if err := s.Pin(ctx, a.root); err != nil {
			t.Errorf("Pin after repair = %v", err)
		}
	}
	checkPinsKept(t, s, assets)
}

// refetch puts every block of data's content into s, as a fetch would.
func refetch(t *testing.T, s *store.Store, data []byte) {
	t.Helper()
	ctx := context.Background()
	src := newMem(t, -1)
	c, err := src.Import(ctx, bytes.NewReader(data), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := src.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		b, err := src.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, b); err != nil {
			t.Fatalf("Put = %v", err)
		}
	}
	if err := s.AddRoot(ctx, c.Root, false); err != nil {
		t.Fatalf("AddRoot after refetch = %v", err)
	}
}

// TestOpenHeldDatabaseIsNotDamage: a database another Store holds open
// fails to open, and is not mistaken for damage and moved aside.
func TestOpenHeldDatabaseIsNotDamage(t *testing.T) {
	dir := t.TempDir()
	s := newBadger(t, dir, 0)
	c, err := s.Import(context.Background(), bytes.NewReader(testutil.Bytes(3, mib+1)), store.ImportOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	if s2, err := store.New(store.Config{Dir: dir}); err == nil {
		s2.Close()
		t.Fatal("a second Store opened a database in use")
	}
	if aside, _ := filepath.Glob(dir + ".damaged-*"); len(aside) != 0 {
		t.Errorf("a database in use was moved aside to %v", aside)
	}
	if !s.Holds(c.Root) {
		t.Error("the first Store lost its content")
	}
}

// TestReopenWithSmallerQuota: opened with a quota smaller than what it
// holds, the store evicts unpinned content down to it, keeps its pins (even
// above the quota) and opens.
func TestReopenWithSmallerQuota(t *testing.T) {
	dir := t.TempDir()
	assets := damageFixture(t, dir) // 3 pinned (9 MiB) and 1 unpinned (3 MiB)
	s, err := store.New(store.Config{Dir: dir, Quota: 6 * mib})
	if err != nil {
		t.Fatalf("New with a quota under the pinned bytes = %v", err)
	}
	defer s.Close()
	for _, a := range assets[:3] {
		if !s.Holds(a.root) {
			t.Errorf("pinned %s lost", a.root)
		}
	}
	if s.Holds(assets[3].root) {
		t.Error("unpinned content kept over the quota")
	}
	if u := s.Usage(); u.Used != u.Pinned {
		t.Errorf("Usage = %+v, want only pinned content", u)
	}
}

// TestOpensStoreOfEarlierVersion: a database written before root records
// had checksums (version 1) and before the pin file opens with its pins,
// and gets a pin file.
func TestOpensStoreOfEarlierVersion(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	assets := damageFixture(t, dir)
	if err := os.Remove(filepath.Join(dir, "meshcdn-pins")); err != nil {
		t.Fatal(err)
	}
	d, err := badger4.NewDatastore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Query(ctx, query.Query{Prefix: "/meshcdn/store/root"})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		var rec map[string]any
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Fatal(err)
		}
		delete(rec, "sum")
		rec["v"] = 1
		v, _ := json.Marshal(rec)
		if err := d.Put(ctx, datastore.NewKey(r.Key), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := store.New(store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	checkPinsKept(t, s, assets)
	if lost := checkNoWrongByte(t, s, assets); len(lost) != 0 {
		t.Errorf("%d leaves lost", len(lost))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "meshcdn-pins")); err != nil {
		t.Errorf("no pin file after opening an earlier store: %v", err)
	}
}
