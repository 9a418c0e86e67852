package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	blocks "github.com/ipfs/go-block-format"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

// fakeDisk is a FreeSpace source whose free bytes a test sets.
type fakeDisk struct{ free atomic.Int64 }

func (d *fakeDisk) FreeSpace(string) (int64, error) { return d.free.Load(), nil }

// TestDiskFullRefusesWrites: a write that would leave less than DiskMargin
// free fails with ErrDiskFull, writes nothing and evicts nothing; what the
// store holds still reads back; when space comes back, writes pass again.
func TestDiskFullRefusesWrites(t *testing.T) {
	ctx := context.Background()
	disk := &fakeDisk{}
	// Near the margin, so that the store reads the free space for every
	// write (TestDiskFullCheckIsCached).
	disk.free.Store(store.DiskMargin + 16*mib)
	s, err := store.New(store.Config{Dir: t.TempDir(), Quota: 4 * mib, FreeSpace: disk.FreeSpace})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := testutil.Bytes(1, 3*mib)
	held, err := s.Import(ctx, bytes.NewReader(data), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := s.Usage()

	// Less than the margin plus a block: every new block is refused, also
	// one that would need an eviction (nothing is evicted for it).
	disk.free.Store(store.DiskMargin + mib/2)
	_, err = s.Import(ctx, bytes.NewReader(testutil.Bytes(2, 2*mib)), store.ImportOptions{Pin: true})
	if !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Import on a full disk = %v, want ErrDiskFull", err)
	}
	err = s.Put(ctx, blocks.NewBlock(testutil.Bytes(3, mib)))
	if !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("Put on a full disk = %v, want ErrDiskFull", err)
	}
	if h := s.Health(); !h.DiskFull || h.ReadOnly {
		t.Errorf("Health on a full disk = %+v, want DiskFull only", h)
	}
	// A small block still fits; a leaf would not: the disk is still full.
	if err := s.Put(ctx, blocks.NewBlock(testutil.Bytes(4, 300))); err != nil {
		t.Fatalf("Put of 300 bytes with half a MiB above the margin = %v", err)
	}
	if h := s.Health(); !h.DiskFull {
		t.Errorf("Health after a small write fitted = %+v, want DiskFull while a leaf would be refused", h)
	}
	if u := s.Usage(); u.Used != before.Used+300 {
		t.Errorf("Usage after the small write = %+v, want 300 bytes more than %+v", u, before)
	}
	before = s.Usage()
	if u := s.Usage(); u != before {
		t.Errorf("Usage after refused writes = %+v, want %+v", u, before)
	}
	if !s.Holds(held.Root) || !bytes.Equal(readAll(t, s, held.Root, held.Size), data) {
		t.Error("held content does not read back on a full disk")
	}
	// A block already held is no write: putting it again passes.
	leaves, err := store.Leaves(ctx, s, held.Root, held.Size)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Get(ctx, leaves[0].Cid)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, b); err != nil {
		t.Errorf("Put(held block) on a full disk = %v", err)
	}

	disk.free.Store(store.DiskMargin + 16*mib)
	if _, err := s.Import(ctx, bytes.NewReader(testutil.Bytes(2, 2*mib)), store.ImportOptions{Pin: true}); err != nil {
		t.Fatalf("Import after space came back = %v", err)
	}
	if h := s.Health(); h.DiskFull {
		t.Errorf("Health after a write passed = %+v, want DiskFull false", h)
	}
	if u := s.Usage(); u.Used > u.Quota {
		t.Errorf("Usage = %+v, over the quota", u)
	}
}

// TestDiskFullCheckIsCached: near the margin the free space is read for
// every write; far above it, about once a second, not once a block.
func TestDiskFullCheckIsCached(t *testing.T) {
	ctx := context.Background()
	var calls atomic.Int64
	free := int64(store.DiskMargin + 8*mib)
	s, err := store.New(store.Config{Dir: t.TempDir(), Quota: -1, FreeSpace: func(string) (int64, error) {
		calls.Add(1)
		return atomic.LoadInt64(&free), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	calls.Store(0)
	for i := range 5 {
		if err := s.Put(ctx, blocks.NewBlock(testutil.Bytes(uint64(100+i), 64<<10))); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n < 5 {
		t.Errorf("near the margin, 5 puts read the free space %d times, want each", n)
	}
	atomic.StoreInt64(&free, 1<<40)
	calls.Store(0)
	for i := range 20 {
		if err := s.Put(ctx, blocks.NewBlock(testutil.Bytes(uint64(i), 64<<10))); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n > 3 {
		t.Errorf("far from the margin, 20 puts read the free space %d times", n)
	}
}

// TestOpensReadOnlyOnFullDisk: opened on a disk below the margin, the store
// serves what it holds, refuses every write with ErrReadOnly, says so in
// Health, and changes nothing on disk (Close writes no recency): opened
// again with space, everything is as it was.
func TestOpensReadOnlyOnFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	disk := &fakeDisk{}
	disk.free.Store(1 << 40)
	s, err := store.New(store.Config{Dir: dir, FreeSpace: disk.FreeSpace})
	if err != nil {
		t.Fatal(err)
	}
	data := testutil.Bytes(4, 2*mib+3)
	c, err := s.Import(ctx, bytes.NewReader(data), store.ImportOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, dir)

	disk.free.Store(store.DiskMargin - 1)
	rec := &recorder{}
	s, err = store.New(store.Config{Dir: dir, FreeSpace: disk.FreeSpace, Logger: slog.New(rec)})
	if err != nil {
		t.Fatalf("New on a full disk = %v", err)
	}
	if h := s.Health(); !h.ReadOnly {
		t.Errorf("Health on a full disk = %+v, want ReadOnly", h)
	}
	if !rec.has("disk full: store opened read-only") {
		t.Errorf("no log line says the store is read-only: %q", rec.recs)
	}
	if !bytes.Equal(readAll(t, s, c.Root, c.Size), data) {
		t.Error("read-only store reads back wrong bytes")
	}
	if err := s.Put(ctx, blocks.NewBlock([]byte("x"))); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Put on a read-only store = %v, want ErrReadOnly", err)
	}
	if err := s.Unpin(ctx, c.Root); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Unpin on a read-only store = %v, want ErrReadOnly", err)
	}
	if err := s.Remove(ctx, c.Root); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Remove on a read-only store = %v, want ErrReadOnly", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close of a read-only store = %v", err)
	}
	if after := snapshotDir(t, dir); !equalSnapshots(before, after) {
		t.Errorf("a read-only store changed its directory:\nbefore %v\nafter  %v", before, after)
	}

	disk.free.Store(1 << 40)
	s = newBadgerFree(t, dir, disk)
	if h := s.Health(); h.ReadOnly {
		t.Errorf("Health with space again = %+v", h)
	}
	if rs := s.Roots(); len(rs) != 1 || !rs[0].Pinned || !bytes.Equal(readAll(t, s, c.Root, c.Size), data) {
		t.Errorf("Roots after the read-only session = %+v", rs)
	}
}

func newBadgerFree(t *testing.T, dir string, disk *fakeDisk) *store.Store {
	t.Helper()
	s, err := store.New(store.Config{Dir: dir, FreeSpace: disk.FreeSpace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// snapshotDir returns the SHA-256 of every file in dir but badger's LOCK.
func snapshotDir(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "LOCK" || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

func equalSnapshots(a, b map[string][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
