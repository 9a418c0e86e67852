package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-datastore"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// dirSize is the bytes of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestValueLogGivesDiskBack churns 200 MiB of content through a store of
// 24 MiB, then runs one round of gcLoop's work: the data directory must
// come back near the quota. Before compact, badger had no record of what
// deleted blocks left in the value log (its memtable of keys never filled,
// so nothing was compacted), GC rewrote nothing, and the directory kept
// every byte ever stored: a soak's seed reached 517 MiB under a 200 MiB
// quota in 30 minutes.
func TestValueLogGivesDiskBack(t *testing.T) {
	const quota = 24 << 20
	dir := t.TempDir()
	ctx := context.Background()
	s, err := New(Config{Dir: dir, Quota: quota})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 50 {
		data := testutil.Bytes(uint64(i), 4<<20)
		if _, err := s.Import(ctx, bytes.NewReader(data), ImportOptions{}); err != nil {
			t.Fatalf("import %d: %v", i, err)
		}
	}
	before := dirSize(t, dir)
	d := s.ds.(*badgerKV)
	d.rounds.Lock() // the store's own rounds wait
	defer d.rounds.Unlock()
	if err := d.compact(); err != nil {
		t.Fatal(err)
	}
	rewrites := 0
	for ; rewrites < 100; rewrites++ {
		if err := d.collect(); errors.Is(err, badger.ErrNoRewrite) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	after := dirSize(t, dir)
	t.Logf("200 MiB through a %d MiB store: directory %d MiB, %d value log files rewritten, then %d MiB",
		quota>>20, before>>20, rewrites, after>>20)
	// What may stay: the quota's live blocks, the current value log file
	// and one partly live file per GC's discard ratio, and the LSM tree.
	if limit := int64(quota + 3*vlogFileSize + DiskMargin/2); after > limit {
		t.Errorf("directory %d MiB after GC, want at most %d MiB for a %d MiB quota", after>>20, limit>>20, quota>>20)
	}
	// The store still reads what it holds.
	for _, r := range s.Roots() {
		if _, err := s.Get(ctx, r.Cid); err != nil {
			t.Errorf("Get(%s) after GC: %v", r.Cid, err)
		}
	}
}

// TestCompactBesideWrites: writes made while compact runs wait for it;
// badger, dropping a prefix, refuses writes (ErrBlockedWrites), and a
// fetch's block refused so would not be kept.
func TestCompactBesideWrites(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := New(Config{Dir: dir, Quota: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := s.ds.(*badgerKV)
	stop := make(chan struct{})
	failed := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Import(ctx, bytes.NewReader(testutil.Bytes(uint64(i), 8<<10)), ImportOptions{}); err != nil {
				failed <- err
				return
			}
		}
	})
	for range 20 {
		if err := d.compact(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-failed:
		t.Errorf("a write beside compact failed: %v", err)
	default:
	}
}

// TestValueLogKeepsUpWithWrites churns 192 MiB of content through a store
// of 24 MiB as fast as it takes it, without waiting for gcInterval: the
// data directory must stay within a bound of the quota all along. Before,
// only gcInterval (2 minutes) began a garbage collection round, so the
// directory held every byte written in that time beyond the quota, and a
// round that rewrote one value log file a gcSleep fell further behind at
// every round while writes came faster than that: an app with a 64 MiB
// quota reading 4 GiB of 1-3 MiB files from a seed and the origin on
// loopback had 2.7 GiB on disk (and an open file and a map per 16 MiB).
func TestValueLogKeepsUpWithWrites(t *testing.T) {
	const quota = 24 << 20
	dir := t.TempDir()
	ctx := context.Background()
	s, err := New(Config{Dir: dir, Quota: quota})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// What may be there besides the quota's live blocks: a round's worth
	// of writes (64 MiB), the current value log file and one partly live
	// (each mapped at twice its size), the memtables' logs and the LSM
	// tree.
	limit := int64(quota + 64<<20 + 4*vlogFileSize + DiskMargin/2)
	var peak int64
	for i := range 48 {
		if _, err := s.Import(ctx, bytes.NewReader(testutil.Bytes(uint64(5000+i), 4<<20)), ImportOptions{}); err != nil {
			t.Fatalf("import %d: %v", i, err)
		}
		peak = max(peak, dirSize(t, dir))
	}
	t.Logf("192 MiB through a %d MiB store: directory at most %d MiB (limit %d MiB)", quota>>20, peak>>20, limit>>20)
	if peak > limit {
		t.Errorf("directory reached %d MiB for a %d MiB quota, want at most %d MiB", peak>>20, quota>>20, limit>>20)
	}
}

// TestGCFollowsDeletes: writes alone begin no garbage collection round
// (a node fetching four 64 MiB videos under its quota ran three, each a
// memtable flush and a level-0 table built during the fetch, for nothing
// to give back); deleted blocks do, once gcEvery bytes of them are in the
// value log. gcLoop is not started here, so the wake stays to be seen.
func TestGCFollowsDeletes(t *testing.T) {
	db, err := badger.Open(badgerOptions(t.TempDir(), false, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d := &badgerKV{db: db, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	ctx := context.Background()
	put := func(name string, i int, size int64) datastore.Key {
		k := datastore.NewKey(fmt.Sprint(name, i))
		if err := d.Put(ctx, k, testutil.Bytes(uint64(i), size)); err != nil {
			t.Fatal(err)
		}
		return k
	}
	del := func(k datastore.Key) {
		if err := d.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	var big []datastore.Key
	for i := range 2 * gcEvery >> 20 {
		big = append(big, put("/b/", i, 1<<20))
	}
	if len(d.wake) != 0 {
		t.Fatalf("%d MiB written and nothing deleted woke the garbage collection", 2*gcEvery>>20)
	}
	for i := range 2048 {
		del(put("/s/", i, 4<<10)) // small blocks live in the LSM tree
	}
	if len(d.wake) != 0 {
		t.Fatal("deleted blocks kept in the LSM tree woke the garbage collection")
	}
	for _, k := range big[:gcEvery>>20-1] {
		del(k)
	}
	if len(d.wake) != 0 {
		t.Fatal("less than gcEvery deleted woke the garbage collection")
	}
	del(big[gcEvery>>20-1])
	if len(d.wake) != 1 {
		t.Fatal("gcEvery deleted did not wake the garbage collection")
	}
}
