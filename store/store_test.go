package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipfs/boxo/datastore/dshelp"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	badger4 "github.com/ipfs/go-ds-badger4"
	ipld "github.com/ipfs/go-ipld-format"
	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

func TestMain(m *testing.M) {
	for env, child := range children {
		if os.Getenv(env) != "" {
			child()
			return
		}
	}
	// badger starts package-level goroutines on first use (its z.Closer
	// based caches and the ristretto metrics ticker) that outlive every
	// database: they are not ours to stop.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2.(*defaultPolicy[...]).processItems"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2.(*Cache[...]).processItems"),
	)
}

const mib = 1 << 20

// children are the roles the test binary plays in a child process, by the
// environment variable that asks for each.
var children = map[string]func(){
	crashEnv:     crashChild,
	removeDirEnv: removeDirChild,
}

func newMem(t testing.TB, quota int64) *store.Store {
	t.Helper()
	s, err := store.New(store.Config{InMemory: true, Quota: quota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newBadger(t testing.TB, dir string, quota int64) *store.Store {
	t.Helper()
	s, err := store.New(store.Config{Dir: dir, Quota: quota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll reads every leaf of root back from s and returns the file's bytes.
func readAll(t testing.TB, s *store.Store, root cid.Cid, size int64) []byte {
	t.Helper()
	ctx := context.Background()
	leaves, err := store.Leaves(ctx, s, root, size)
	if err != nil {
		t.Fatalf("Leaves(%s) = %v", root, err)
	}
	var out bytes.Buffer
	for _, l := range leaves {
		b, err := s.Get(ctx, l.Cid)
		if err != nil {
			t.Fatalf("Get(%s) = %v", l.Cid, err)
		}
		if int64(out.Len()) != l.Offset {
			t.Fatalf("leaf %s at offset %d, have %d bytes", l.Cid, l.Offset, out.Len())
		}
		out.Write(b.RawData())
	}
	return out.Bytes()
}

func TestImportRoundTrip(t *testing.T) {
	s := newBadger(t, t.TempDir(), 0)
	for _, size := range []int64{0, 1, mib - 1, mib, mib + 1, 3*mib + 5} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			want := testutil.Bytes(uint64(size), size)
			c, err := s.Import(context.Background(), bytes.NewReader(want), store.ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if c.Size != size {
				t.Errorf("Import size = %d, want %d", c.Size, size)
			}
			if !s.Holds(c.Root) {
				t.Errorf("Holds(%s) = false after Import", c.Root)
			}
			if got := readAll(t, s, c.Root, size); !bytes.Equal(got, want) {
				t.Errorf("read back %d bytes differing from the %d imported", len(got), len(want))
			}
		})
	}
}

func TestLeavesOffsets(t *testing.T) {
	s := newMem(t, 0)
	const size = 5*mib + 123
	c, err := s.Import(context.Background(), testutil.Reader(3, size), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := store.Leaves(context.Background(), s, c.Root, size)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaves) != 6 {
		t.Fatalf("Leaves = %d leaves, want 6", len(leaves))
	}
	for i, l := range leaves {
		wantSize := int64(mib)
		if i == 5 {
			wantSize = 123
		}
		if l.Offset != int64(i)*mib || l.Size != wantSize || l.Cid.Type() != cid.Raw {
			t.Errorf("leaf %d = {%s %d %d}, want raw at %d of %d bytes", i, l.Cid, l.Offset, l.Size, int64(i)*mib, wantSize)
		}
	}
	if _, err := store.Leaves(context.Background(), s, c.Root, size+1); err == nil {
		t.Error("Leaves with a wrong size succeeded")
	}
}

// quotaDS fails the test if the bytes present under /blocks ever exceed the
// quota, checked at each write, before it lands.
type quotaDS struct {
	datastore.Batching
	t       testing.TB
	quota   int64
	mu      sync.Mutex
	present map[datastore.Key]int64
	sum     int64
	peak    int64
}

func (d *quotaDS) Put(ctx context.Context, k datastore.Key, v []byte) error {
	if k.IsDescendantOf(datastore.NewKey("/blocks")) {
		d.mu.Lock()
		if _, ok := d.present[k]; !ok {
			d.present[k] = int64(len(v))
			d.sum += int64(len(v))
			if d.sum > d.peak {
				d.peak = d.sum
			}
			if d.sum > d.quota {
				d.t.Errorf("blocks present: %d bytes, over the quota of %d", d.sum, d.quota)
			}
		}
		d.mu.Unlock()
	}
	return d.Batching.Put(ctx, k, v)
}

func (d *quotaDS) Delete(ctx context.Context, k datastore.Key) error {
	err := d.Batching.Delete(ctx, k)
	d.mu.Lock()
	if n, ok := d.present[k]; ok && err == nil {
		delete(d.present, k)
		d.sum -= n
	}
	d.mu.Unlock()
	return err
}

func TestQuotaConcurrentImports(t *testing.T) {
	const (
		workers = 8
		each    = 5
		size    = 3*mib/2 + 17 // two leaves and a root
		quota   = workers * each * size / 2
	)
	ds := &quotaDS{Batching: dssync.MutexWrap(datastore.NewMapDatastore()), t: t, quota: quota, present: map[datastore.Key]int64{}}
	s, err := store.New(store.Config{Datastore: ds, Quota: quota})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := s.Subscribe(ctx)

	// A watcher samples the store's own accounting the whole time.
	stopWatch := sampleUsage(s)
	results := importConcurrently(ctx, t, s, workers, each, size)
	samples, over := stopWatch()
	if over > 0 {
		t.Errorf("watcher saw usage over the quota in %d of %d samples", over, samples)
	}
	if samples < 100 {
		t.Errorf("watcher took only %d samples", samples)
	}
	t.Logf("watcher samples: %d; peak bytes present %d of quota %d", samples, ds.peak, quota)

	// Pinned content is all there and reads back right.
	for _, r := range results[0] {
		if !r.pinned {
			continue
		}
		if !s.Holds(r.root) {
			t.Fatalf("pinned %s was evicted", r.root)
		}
		if got, want := readAll(t, s, r.root, size), testutil.Bytes(r.seed, size); !bytes.Equal(got, want) {
			t.Errorf("pinned %s reads back wrong", r.root)
		}
	}

	// Nothing was read, so eviction order must be commit order: each
	// evicted root is the oldest unpinned root still held at that moment.
	cancel()
	evicted := checkEvictionOrder(t, events)
	u := s.Usage()
	if u.Used > quota || u.Roots != workers*each-len(evicted) {
		t.Errorf("Usage = %+v with %d evicted of %d", u, len(evicted), workers*each)
	}
}

// sampleUsage samples s.Usage() in a loop until the returned stop is
// called; stop returns how many samples were taken and how many of them
// were over the quota.
func sampleUsage(s *store.Store) (stop func() (samples, over int64)) {
	var nSamples, nOver atomic.Int64
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			u := s.Usage()
			nSamples.Add(1)
			if u.Used > u.Quota {
				nOver.Add(1)
			}
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	return func() (int64, int64) {
		close(done)
		<-watched
		return nSamples.Load(), nOver.Load()
	}
}

// quotaImport is one import of TestQuotaConcurrentImports.
type quotaImport struct {
	root   cid.Cid
	seed   uint64
	pinned bool
}

// importConcurrently has workers goroutines each import each files of size
// bytes into s (worker 0 pins its first two), and returns every worker's
// imports in order.
func importConcurrently(ctx context.Context, t *testing.T, s *store.Store, workers, each int, size int64) [][]quotaImport {
	t.Helper()
	results := make([][]quotaImport, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				seed := uint64(w*100 + i)
				pin := w == 0 && i < 2 // some pinned content among the churn
				c, err := s.Import(ctx, testutil.Reader(seed, size), store.ImportOptions{Pin: pin})
				if err != nil {
					t.Errorf("worker %d: Import = %v", w, err)
					return
				}
				results[w] = append(results[w], quotaImport{c.Root, seed, pin})
			}
		}()
	}
	wg.Wait()
	return results
}

// checkEvictionOrder reads events (whose subscription was cancelled) to
// their end and checks that something was evicted and that each evicted
// root was the least recently added unpinned one; it returns the evicted.
func checkEvictionOrder(t *testing.T, events <-chan store.Event) (evicted []cid.Cid) {
	t.Helper()
	var added []cid.Cid
	for ev := range events {
		if ev.Missed != 0 {
			t.Fatalf("lost %d events", ev.Missed)
		}
		switch ev.Kind {
		case store.Added:
			if !ev.Pinned {
				added = append(added, ev.Root)
			}
		case store.Evicted:
			evicted = append(evicted, ev.Root)
		}
	}
	if len(evicted) == 0 {
		t.Fatal("nothing was evicted: the quota did not bind")
	}
	for i, c := range evicted {
		if !c.Equals(added[i]) {
			t.Fatalf("eviction %d was %s, want the least recently used %s", i, c, added[i])
		}
	}
	return evicted
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := context.Background()
	s := newMem(t, 3*mib+mib/2)
	imp := func(seed uint64) cid.Cid {
		c, err := s.Import(ctx, testutil.Reader(seed, mib), store.ImportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Root
	}
	a, b, c := imp(1), imp(2), imp(3)
	if _, err := s.Get(ctx, a); err != nil { // a is now more recent than b
		t.Fatal(err)
	}
	d := imp(4)
	for _, tc := range []struct {
		root cid.Cid
		want bool
	}{{a, true}, {b, false}, {c, true}, {d, true}} {
		if got := s.Holds(tc.root); got != tc.want {
			t.Errorf("Holds(%s) = %v, want %v", tc.root, got, tc.want)
		}
	}
}

func TestSharedBlocksStay(t *testing.T) {
	ctx := context.Background()
	s := newMem(t, 0)
	// Two files that share their first leaf.
	shared := testutil.Bytes(1, mib)
	f1 := append(append([]byte{}, shared...), testutil.Bytes(2, 100)...)
	f2 := append(append([]byte{}, shared...), testutil.Bytes(3, 100)...)
	c1, err := s.Import(ctx, bytes.NewReader(f1), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.Import(ctx, bytes.NewReader(f2), store.ImportOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, c1.Root); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, c2.Root, c2.Size); !bytes.Equal(got, f2) {
		t.Error("removing a file broke the file it shares a block with")
	}
	if u := s.Usage(); u.Roots != 1 || u.Pinned != u.Used {
		t.Errorf("Usage after Remove = %+v, want one root, all pinned", u)
	}
}

func TestPinThatCannotFit(t *testing.T) {
	ctx := context.Background()
	s := newMem(t, 4*mib)
	if _, err := s.Import(ctx, testutil.Reader(1, 3*mib), store.ImportOptions{Pin: true}); err != nil {
		t.Fatal(err)
	}
	before := s.Usage()
	_, err := s.Import(ctx, testutil.Reader(2, 2*mib), store.ImportOptions{Pin: true})
	if !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("Import beyond the quota = %v, want ErrQuotaExceeded", err)
	}
	if after := s.Usage(); after != before {
		t.Errorf("Usage after a failed pin = %+v, want %+v (nothing half-stored)", after, before)
	}
	// Unpinning makes room.
	for _, r := range s.Roots() {
		if err := s.Unpin(ctx, r.Cid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Import(ctx, testutil.Reader(2, 2*mib), store.ImportOptions{Pin: true}); err != nil {
		t.Errorf("Import after Unpin = %v", err)
	}
	if err := s.Unpin(ctx, cid.Undef); !errors.Is(err, store.ErrNotPinned) {
		t.Errorf("Unpin(unknown) = %v, want ErrNotPinned", err)
	}
}

type failingReader struct {
	r     io.Reader
	after int64
	err   error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, f.err
	}
	if int64(len(p)) > f.after {
		p = p[:f.after]
	}
	n, err := f.r.Read(p)
	f.after -= int64(n)
	return n, err
}

func TestImportReaderFailsHalfway(t *testing.T) {
	ctx := context.Background()
	s := newBadger(t, t.TempDir(), 0)
	keep, err := s.Import(ctx, testutil.Reader(1, 2*mib), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := s.Usage()
	boom := errors.New("disk unplugged")
	// The failing file shares its first two leaves with the kept one.
	r := &failingReader{r: io.MultiReader(testutil.Reader(1, 2*mib), testutil.Reader(9, 8*mib)), after: 5 * mib, err: boom}
	_, err = s.Import(ctx, r, store.ImportOptions{Pin: true})
	if !errors.Is(err, boom) {
		t.Fatalf("Import = %v, want the reader's error", err)
	}
	if after := s.Usage(); after != before {
		t.Errorf("Usage after a failed import = %+v, want %+v", after, before)
	}
	if got := readAll(t, s, keep.Root, keep.Size); !bytes.Equal(got, testutil.Bytes(1, 2*mib)) {
		t.Error("a failed import damaged content it shared blocks with")
	}
	// A cancelled import is the same.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Import(cctx, testutil.Reader(5, 3*mib), store.ImportOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Import with a cancelled ctx = %v", err)
	}
	if after := s.Usage(); after != before {
		t.Errorf("Usage after a cancelled import = %+v, want %+v", after, before)
	}
}

func TestPutChecksHash(t *testing.T) {
	ctx := context.Background()
	s := newMem(t, 0)
	good := blocks.NewBlock([]byte("hello"))
	bad, err := blocks.NewBlockWithCid([]byte("hellO"), good.Cid())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, bad); !errors.Is(err, store.ErrHashMismatch) {
		t.Fatalf("Put(corrupt) = %v, want ErrHashMismatch", err)
	}
	if has, _ := s.Has(ctx, good.Cid()); has {
		t.Error("a block that failed its check was stored")
	}
	if _, err := s.Get(ctx, good.Cid()); !ipld.IsNotFound(err) {
		t.Errorf("Get(missing) = %v, want ipld.ErrNotFound", err)
	}
	if err := s.Put(ctx, good); err != nil {
		t.Fatal(err)
	}
	if n, err := s.GetSize(ctx, good.Cid()); err != nil || n != 5 {
		t.Errorf("GetSize = %d, %v; want 5", n, err)
	}
}

func TestCorruptValueInBadger(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.New(store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Import(ctx, testutil.Reader(4, 2*mib+9), store.ImportOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := store.Leaves(ctx, s, c.Root, c.Size)
	if err != nil {
		t.Fatal(err)
	}
	victim := leaves[1].Cid
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Flip one byte of the stored leaf behind the store's back.
	d, err := badger4.NewDatastore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := datastore.NewKey("/blocks").Child(dshelpKey(victim))
	v, err := d.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	v[len(v)/2] ^= 0x40
	if err := d.Put(ctx, key, v); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	s = newBadger(t, dir, 0)
	_, err = s.Get(ctx, victim)
	var ce *store.CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrCorrupt) || !ce.Cid.Equals(victim) {
		t.Fatalf("Get(corrupt) = %v, want *CorruptError for %s", err, victim)
	}
	// The corrupt block is gone, so that a fetch can bring it again; its
	// content keeps its pin and its good blocks.
	checkLost(t, s, c.Root, testutil.Bytes(4, 2*mib+9), victim)
}

// checkLost checks that root, the file data, is held pinned but incomplete
// with exactly the blocks lost missing, that every other block of it reads
// back right, that the usage counts what is held, and that putting the lost
// blocks back completes it.
func checkLost(t *testing.T, s *store.Store, root cid.Cid, data []byte, lost ...cid.Cid) {
	t.Helper()
	ctx := context.Background()
	if s.Holds(root) {
		t.Errorf("Holds(%s) with %d blocks lost = true", root, len(lost))
	}
	want := checkMissing(t, s, root, lost)
	leaves, err := store.Leaves(ctx, s, root, int64(len(data)))
	if err != nil && len(lost) == 0 {
		t.Fatalf("Leaves = %v", err)
	}
	var held int64
	for _, l := range leaves {
		b, err := s.Get(ctx, l.Cid)
		if want[l.Cid.KeyString()] {
			if !ipld.IsNotFound(err) {
				t.Errorf("Get(lost %s) = %v, want not found", l.Cid, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(b.RawData(), data[l.Offset:l.Offset+l.Size]) {
			t.Fatalf("Get(good leaf %s) = %v, or wrong bytes", l.Cid, err)
		}
		held += l.Size
	}
	if u := s.Usage(); u.Used < held || u.Pinned > u.Used || u.Used > u.Quota {
		t.Errorf("Usage = %+v, want at least the %d good leaf bytes used, and within the quota", u, held)
	}
	checkRepairLost(t, s, root, data, lost)
}

// checkMissing checks that s lists root as incomplete, still pinned, with
// exactly the blocks lost missing; it returns lost as a set of key strings.
func checkMissing(t *testing.T, s *store.Store, root cid.Cid, lost []cid.Cid) map[string]bool {
	t.Helper()
	var info *store.RootInfo
	for _, ri := range s.Incomplete() {
		if ri.Cid.Equals(root) {
			info = &ri
		}
	}
	if info == nil {
		t.Fatalf("Incomplete() = %v, want %s listed", s.Incomplete(), root)
	}
	if !info.Pinned {
		t.Errorf("content that lost a block lost its pin")
	}
	want := map[string]bool{}
	for _, c := range lost {
		want[c.KeyString()] = true
	}
	got := map[string]bool{}
	for _, c := range info.Missing {
		got[c.KeyString()] = true
	}
	if len(got) != len(want) {
		t.Errorf("Missing = %v, want %v", info.Missing, lost)
	}
	for k := range want {
		if !got[k] {
			t.Errorf("Missing = %v, want %v", info.Missing, lost)
		}
	}
	return want
}

// checkRepairLost puts the lost blocks of root (the file data) back into s,
// as fetching again would, and checks that the content is then whole, reads
// back right and is accounted within the quota.
func checkRepairLost(t *testing.T, s *store.Store, root cid.Cid, data []byte, lost []cid.Cid) {
	t.Helper()
	ctx := context.Background()
	fresh := newMem(t, -1)
	c, err := fresh.Import(ctx, bytes.NewReader(data), store.ImportOptions{})
	if err != nil || !c.Root.Equals(root) {
		t.Fatalf("re-import = %v, %v", c.Root, err)
	}
	for _, l := range lost {
		b, err := fresh.Get(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, b); err != nil {
			t.Fatalf("Put(lost block) = %v", err)
		}
	}
	if !s.Holds(root) {
		t.Errorf("after the lost blocks came back: Holds = false")
	}
	for _, ri := range s.Incomplete() {
		if ri.Cid.Equals(root) {
			t.Errorf("after the lost blocks came back: Incomplete lists it, missing %v", ri.Missing)
		}
	}
	if !bytes.Equal(readAll(t, s, root, int64(len(data))), data) {
		t.Error("content read back wrong after repair")
	}
	if u := s.Usage(); u.Pinned > u.Used || u.Used > u.Quota {
		t.Errorf("Usage after repair = %+v", u)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.New(store.Config{Dir: dir, Quota: 4*mib + mib/2})
	if err != nil {
		t.Fatal(err)
	}
	imp := func(seed uint64, pin bool) cid.Cid {
		c, err := s.Import(ctx, testutil.Reader(seed, mib), store.ImportOptions{Pin: pin})
		if err != nil {
			t.Fatal(err)
		}
		return c.Root
	}
	p, a, b := imp(1, true), imp(2, false), imp(3, false)
	if _, err := s.Get(ctx, a); err != nil { // a more recent than b
		t.Fatal(err)
	}
	before := s.Usage()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := s.Get(ctx, a); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}

	s, err = store.New(store.Config{Dir: dir, Quota: 4*mib + mib/2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if after := s.Usage(); after != before {
		t.Errorf("Usage after reopen = %+v, want %+v", after, before)
	}
	// Recency survived: the next import evicts b, not a; pins survived.
	imp(4, false)
	imp(5, false)
	if s.Holds(b) || !s.Holds(a) || !s.Holds(p) {
		t.Errorf("after reopen and two imports: Holds(p, a, b) = %v %v %v, want true true false", s.Holds(p), s.Holds(a), s.Holds(b))
	}
}

func TestSubscribeEndsWithContext(t *testing.T) {
	s := newMem(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Subscribe(ctx)
	if _, err := s.Import(context.Background(), testutil.Reader(1, 10), store.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := <-ch
	if ev.Kind != store.Added || ev.Size != 10 {
		t.Errorf("event = %+v, want Added of 10 bytes", ev)
	}
	cancel()
	for range ch { // must close
	}
}

func TestSlowSubscriberIsToldWhatItMissed(t *testing.T) {
	s := newMem(t, 0)
	ch := s.Subscribe(context.Background())
	const n = 300 // more than the buffer
	for i := range n {
		if _, err := s.Import(context.Background(), testutil.Reader(uint64(i), 64), store.ImportOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for range 256 {
		<-ch
		got++
	}
	if _, err := s.Import(context.Background(), testutil.Reader(9999, 64), store.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := <-ch
	if ev.Missed != n-256 {
		t.Errorf("Missed = %d, want %d", ev.Missed, n-256)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := store.New(store.Config{}); err == nil {
		t.Error("New(Config{}) succeeded without Dir, Datastore or InMemory")
	}
	f, err := os.CreateTemp(t.TempDir(), "file")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := store.New(store.Config{Dir: f.Name()}); err == nil {
		t.Error("New with Dir naming a file succeeded")
	}
}

func TestAddRootOfFetchedBlocks(t *testing.T) {
	ctx := context.Background()
	src := newMem(t, 0)
	c, err := src.Import(ctx, testutil.Reader(8, 3*mib), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst := newMem(t, 0)
	// Copy block by block, as a fetch does, and name the root last.
	leaves, err := store.Leaves(ctx, src, c.Root, c.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.AddRoot(ctx, c.Root, false); !errors.Is(err, store.ErrIncomplete) {
		t.Fatalf("AddRoot before any block = %v, want ErrIncomplete", err)
	}
	root, _ := src.Get(ctx, c.Root)
	if err := dst.Put(ctx, root); err != nil {
		t.Fatal(err)
	}
	for i, l := range leaves {
		if i == len(leaves)-1 {
			if err := dst.AddRoot(ctx, c.Root, false); !errors.Is(err, store.ErrIncomplete) {
				t.Fatalf("AddRoot with a leaf missing = %v, want ErrIncomplete", err)
			}
		}
		b, _ := src.Get(ctx, l.Cid)
		if err := dst.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := dst.AddRoot(ctx, c.Root, true); err != nil {
		t.Fatal(err)
	}
	if u := dst.Usage(); u.Roots != 1 || u.Pinned != u.Used {
		t.Errorf("Usage = %+v, want one pinned root", u)
	}
}

func dshelpKey(c cid.Cid) datastore.Key { return dshelp.MultihashToDsKey(c.Hash()) }

// TestCorruptValueLogFile flips a byte of a leaf inside badger's value log
// file on disk (bit rot, not a write through badger). Opening, badger finds
// the entry's CRC wrong and cuts its last value log there; it then returns
// the value empty, without an error. GetForPeer, which skips the sha2-256
// check, still refuses the block (its length is wrong) and the content is
// dropped; Get, on a second copy, does the same. (A damaged entry in an
// older value log file fails badger's CRC32C check on read instead:
// TestIsChecksumError.)
func TestCorruptValueLogFile(t *testing.T) {
	ctx := context.Background()
	for _, read := range []string{"GetForPeer", "Get"} {
		t.Run(read, func(t *testing.T) {
			dir := t.TempDir()
			s, err := store.New(store.Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			data := testutil.Bytes(5, 2*mib+9)
			c, err := s.Import(ctx, bytes.NewReader(data), store.ImportOptions{Pin: true})
			if err != nil {
				t.Fatal(err)
			}
			leaves, err := store.Leaves(ctx, s, c.Root, c.Size)
			if err != nil {
				t.Fatal(err)
			}
			victim := leaves[1]
			good, err := s.GetForPeer(ctx, victim.Cid)
			if err != nil || !bytes.Equal(good.RawData(), data[victim.Offset:victim.Offset+victim.Size]) {
				t.Fatalf("GetForPeer before the damage = %v; bytes right: %v", err, err == nil && bytes.Equal(good.RawData(), data[victim.Offset:victim.Offset+victim.Size]))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			// Find the leaf's bytes in a value log file and flip one.
			flipByteIn(t, filepath.Join(dir, "*.vlog"), data[victim.Offset+1000:victim.Offset+1064])

			s = newBadger(t, dir, 0)
			if read == "GetForPeer" {
				_, err = s.GetForPeer(ctx, victim.Cid)
			} else {
				_, err = s.Get(ctx, victim.Cid)
			}
			var ce *store.CorruptError
			if !errors.As(err, &ce) || !ce.Cid.Equals(victim.Cid) {
				t.Fatalf("%s(rotten) = %v, want *CorruptError for %s", read, err, victim.Cid)
			}
			if _, err := s.GetForPeer(ctx, victim.Cid); !ipld.IsNotFound(err) {
				t.Errorf("GetForPeer after the rotten block was dropped = %v, want not found", err)
			}
			checkLost(t, s, c.Root, data, victim.Cid)
		})
	}
}

// TestCorruptSmallBlockInTable: a block small enough to live in badger's
// LSM tree (a small file, an inner node) rots on disk. Badger reads its
// tables without checking a checksum, so GetForPeer, which skips the hash
// for blocks in the value log, must hash this one rather than hand a peer
// wrong bytes.
func TestCorruptSmallBlockInTable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.New(store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	data := testutil.Bytes(6, 1500) // one raw leaf, under the value log threshold
	c, err := s.Import(ctx, bytes.NewReader(data), store.ImportOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Random bytes pass through badger's compression as they are: find
	// them in a table file and flip one.
	flipByteIn(t, filepath.Join(dir, "*.sst"), data[700:764])

	s = newBadger(t, dir, 0)
	blk, err := s.GetForPeer(ctx, c.Root)
	var ce *store.CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("GetForPeer(rotten small block) = %v (bytes right: %v), want *CorruptError", err, err == nil && bytes.Equal(blk.RawData(), data))
	}
	if s.Holds(c.Root) {
		t.Error("content with a rotten block is still held")
	}
}

// TestGetForPeerHashesGivenDatastore: a Config.Datastore's checks are
// unknown, so GetForPeer hashes what it reads from it, large blocks too.
func TestGetForPeerHashesGivenDatastore(t *testing.T) {
	ctx := context.Background()
	ds := dssync.MutexWrap(datastore.NewMapDatastore())
	s, err := store.New(store.Config{Datastore: ds})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := testutil.Bytes(7, 100<<10)
	blk := blocks.NewBlock(data)
	if err := s.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	// Damage the value behind the store's back.
	res, err := ds.Query(ctx, query.Query{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	damaged := false
	for _, e := range entries {
		if bytes.Equal(e.Value, data) {
			bad := bytes.Clone(e.Value)
			bad[500] ^= 0x80
			if err := ds.Put(ctx, datastore.NewKey(e.Key), bad); err != nil {
				t.Fatal(err)
			}
			damaged = true
		}
	}
	if !damaged {
		t.Fatal("the block is not in the datastore")
	}
	_, err = s.GetForPeer(ctx, blk.Cid())
	var ce *store.CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("GetForPeer(damaged block of a given datastore) = %v, want *CorruptError", err)
	}
}

// flipByteIn finds probe in one of the files pattern matches and flips a
// bit of it there, as rot on disk would.
func flipByteIn(t *testing.T, pattern string, probe []byte) {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s: %v", pattern, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if at := bytes.Index(b, probe); at >= 0 {
			b[at+10] ^= 0x01
			if err := os.WriteFile(f, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("the bytes are in no file matching %s", pattern)
}
