package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ipfs/go-datastore"
)

// badgerKV is a badger database as a kv. The store opens badger itself
// rather than through go-ds-badger4, which sends badger's logs to go-log
// (stderr) whatever the options say, runs value log GC however full the
// disk is, and waits forever in Close when badger cannot flush.
type badgerKV struct {
	db       *badger.DB
	dir      string
	dirInfo  os.FileInfo // the directory as opened, to notice it removed
	readOnly bool
	guard    *diskGuard
	log      *slog.Logger

	stop chan struct{}
	wg   sync.WaitGroup

	// ops are the calls into badger under way; once closed is set no new
	// one starts and Close waits for them. A badger Update that passed its
	// own closed check as Close stopped its watermark waited for a read
	// timestamp for ever (an Import racing Close hung 13 minutes in CI).
	opsMu  sync.Mutex
	closed bool
	ops    sync.WaitGroup

	// writes is held for reading by every write and for writing by
	// compact, during which badger refuses writes (ErrBlockedWrites):
	// they wait instead.
	writes sync.RWMutex

	// deleted counts the value log bytes of blocks deleted since the last
	// garbage collection round began; the delete that takes it past
	// gcEvery wakes gcLoop through wake.
	deleted atomic.Int64
	wake    chan struct{}
	// rounds is held while gcLoop runs garbage collection (a test's
	// collection takes it too).
	rounds sync.Mutex
}

// enter starts a call into badger: false (the caller returns ErrClosed)
// once Close has begun; else the caller calls d.ops.Done when it is done.
func (d *badgerKV) enter() bool {
	d.opsMu.Lock()
	defer d.opsMu.Unlock()
	if d.closed {
		return false
	}
	d.ops.Add(1)
	return true
}

// gcInterval is how often the value log is garbage collected, so that
// evicted blocks give their disk space back; gcEvery bytes of blocks
// deleted begin a round sooner: the disk holds at most what was evicted in
// the shorter of the two beyond the quota. A round that finds nothing costs
// a memtable flush and a compaction of the keys (about 15 ms).
const (
	gcInterval     = 2 * time.Minute
	gcSleep        = time.Second
	gcDiscardRatio = 0.3
	// gcEvery is how many bytes of value log blocks deleted begin a round
	// before gcInterval is up (the delete that crosses it wakes gcLoop),
	// which rewrites up to gcRewrites files back to back: a store that
	// evicts faster than gcInterval allows (an app at its quota reading
	// files at loopback or LAN speed) held all it evicted in that time
	// beyond its quota, and more at every round while evictions came
	// faster than one file a gcSleep (a 64 MiB quota: 2.7 GiB on disk after
	// 4 GiB read). Counted in bytes written until 2026-12-07, rounds also
	// ran where nothing was deleted, so nothing to give back: a node
	// fetching four 64 MiB videos under its quota ran three, each a
	// memtable flush and a level-0 table built while the videos came in
	// (about 12 MiB more heap at the fetch's peak: badger's new memtable
	// arena, the table's buffers).
	gcEvery    = 64 << 20
	gcRewrites = 2 * gcEvery / vlogFileSize
	// closeTimeout bounds Close: badger retries a failed memtable flush
	// forever.
	closeTimeout = 10 * time.Second
)

// badgerOptions sizes badger for a desktop app: badger's defaults (64 MiB
// memtables, five of them, 256 MiB caches, 1 GiB value log files) are for
// servers. Blocks of more than 4 KiB go to the value log, so the LSM tree
// holds only keys and small records and 4 MiB memtables suffice; an idle
// node costs about 7 MiB of Go heap in all (BenchmarkNodeFootprint in mesh).
// Value log files of 16 MiB keep DiskMargin small and let garbage
// collection give space back in small steps. Table blocks are not checked
// on read (a check that fails makes the whole table, and so the database,
// unopenable): the store checks what it reads instead, blocks by hash and
// records by checksum.
func badgerOptions(dir string, readOnly bool, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(2 << 20).
		WithValueThreshold(valueThreshold).
		WithVerifyValueChecksum(true). // see GetForPeer
		WithValueLogFileSize(vlogFileSize).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithNumCompactors(2).
		WithReadOnly(readOnly).
		WithLogger(nil)
	if log.Enabled(context.Background(), slog.LevelError) {
		o = o.WithLogger(badgerLogger{log.With("from", "badger")})
	}
	return o
}

// badgerLogger passes badger's logs to the store's Logger: errors and
// warnings as such, the rest as debug.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) out(level slog.Level, format string, args []any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, "badger", "text", strings.TrimSpace(fmt.Sprintf(format, args...)))
	}
}

func (l badgerLogger) Errorf(f string, a ...any)   { l.out(slog.LevelError, f, a) }
func (l badgerLogger) Warningf(f string, a ...any) { l.out(slog.LevelWarn, f, a) }
func (l badgerLogger) Infof(f string, a ...any)    { l.out(slog.LevelDebug, f, a) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.out(slog.LevelDebug, f, a) }

// openBadgerKV opens badger at dir, catching a panic of badger's on a
// damaged database as an error.
func openBadgerKV(dir string, readOnly bool, guard *diskGuard, log *slog.Logger) (kv *badgerKV, err error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("badger panicked: %v", r)
		}
	}()
	db, err := badger.Open(badgerOptions(dir, readOnly, log))
	if err != nil {
		return nil, err
	}
	kv = &badgerKV{db: db, dir: dir, dirInfo: info, readOnly: readOnly, guard: guard, log: log, stop: make(chan struct{}), wake: make(chan struct{}, 1)}
	if !readOnly {
		kv.wg.Add(1)
		go kv.gcLoop()
	}
	return kv, nil
}

// gcLoop garbage collects the value log every gcInterval, unless the disk
// is too full for the rewrite (a GC pass writes the live values of one
// value log file into the current one before deleting it). Each round
// begins with compact, then rewrites one file a gcSleep until none is
// worth it. Writes past gcEvery wake it for a round of their own.
func (d *badgerKV) gcLoop() {
	defer d.wg.Done()
	t := time.NewTimer(gcInterval)
	defer t.Stop()
	round := true // the next pass begins a round
	for {
		select {
		case <-d.stop:
			return
		case <-d.wake:
			if d.deleted.Load() >= gcEvery {
				d.collectDeleted()
				round = true
				t.Reset(gcInterval)
			}
			continue
		case <-t.C:
		}
		next := gcInterval
		if d.roomToCollect() {
			switch err := d.pass(round); {
			case err == nil:
				next = gcSleep // there may be more to collect
			case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected), errors.Is(err, ErrClosed):
			default:
				d.log.Warn("value log garbage collection failed", "err", err)
			}
		}
		round = next == gcInterval
		t.Reset(next)
	}
}

// roomToCollect reports whether the disk has room for a rewrite: the
// margin and one value log file (always, without a guard).
func (d *badgerKV) roomToCollect() bool {
	if d.guard == nil {
		return true
	}
	free, err := d.guard.freeNow()
	return err == nil && free >= d.guard.margin+vlogFileSize
}

// pass is one pass of gcLoop: a compaction first if it begins a round,
// then one rewrite (collect).
func (d *badgerKV) pass(begin bool) error {
	d.rounds.Lock()
	defer d.rounds.Unlock()
	if begin {
		d.compactForGC()
	}
	return d.collect()
}

// compactForGC begins a round: compact, so that badger counts what deleted
// blocks left in the value log.
func (d *badgerKV) compactForGC() {
	d.deleted.Store(0)
	if err := d.compact(); err != nil && !errors.Is(err, ErrClosed) {
		d.log.Warn("compaction for value log garbage collection failed", "err", err)
	}
}

// collectDeleted runs a round for gcLoop once gcEvery bytes of value log
// blocks were deleted since the last one began: a compaction, then up to
// gcRewrites files rewritten back to back, so that what evictions left
// gives its disk back as fast as they come.
func (d *badgerKV) collectDeleted() {
	d.rounds.Lock()
	defer d.rounds.Unlock()
	if !d.roomToCollect() {
		d.deleted.Store(0) // look again after gcEvery more
		return
	}
	d.compactForGC()
	for range gcRewrites {
		switch err := d.collect(); {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected), errors.Is(err, ErrClosed):
		default:
			d.log.Warn("value log garbage collection failed", "err", err)
		}
		return
	}
}

// collect rewrites one value log file if at least gcDiscardRatio of it is
// deleted blocks.
func (d *badgerKV) collect() error {
	if !d.enter() {
		return ErrClosed
	}
	defer d.ops.Done()
	return d.db.RunValueLogGC(gcDiscardRatio)
}

// gcMarker is the prefix of the one key compact writes and drops.
const gcMarker = "/.gc/"

// compact makes badger account for the value log space of deleted blocks.
// Value log GC picks a file by what compactions found deleted in it, and
// the store puts only keys and small records in the LSM tree: its
// memtable is never full, nothing is compacted, and without this the disk
// of evicted blocks was never given back (a seed's data directory grew to
// 517 MiB under a 200 MiB quota in a 30-minute soak of redeploys). Badger
// has no call to flush the memtable; dropping a prefix does that and
// compacts level 0 into level 1, where deleted blocks' older versions are
// dropped and counted. So compact writes a marker key and drops its prefix.
// Writes wait meanwhile (badger would refuse them). A panic of badger's on
// a damaged table is an error here, as for reads.
func (d *badgerKV) compact() (err error) {
	if !d.enter() {
		return ErrClosed
	}
	defer d.ops.Done()
	d.writes.Lock()
	defer d.writes.Unlock()
	defer caught(&err)
	marker := []byte(gcMarker + "flush")
	if err := d.db.Update(func(txn *badger.Txn) error { return txn.Set(marker, nil) }); err != nil {
		return err
	}
	return d.db.DropPrefix([]byte(gcMarker))
}

// caught turns a panic of badger's reading a damaged table into an error.
func caught(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("badger panicked reading: %v", r)
	}
}

func (d *badgerKV) Get(_ context.Context, k datastore.Key) (v []byte, err error) {
	if !d.enter() {
		return nil, ErrClosed
	}
	defer d.ops.Done()
	defer caught(&err)
	err = d.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(k.Bytes())
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, datastore.ErrNotFound
	}
	return v, err
}

// Put writes v at k.
func (d *badgerKV) Put(_ context.Context, k datastore.Key, v []byte) error {
	return d.set(k, v)
}

// deletedValue counts a deleted value of size bytes (Delete); the delete
// that takes the value log's deleted bytes past gcEvery since the last
// garbage collection round wakes gcLoop to run one (collectDeleted),
// without waiting for it. Values of valueThreshold or less are in the LSM
// tree.
func (d *badgerKV) deletedValue(size int64) {
	if size > valueThreshold && d.deleted.Add(size) >= gcEvery {
		select {
		case d.wake <- struct{}{}:
		default: // gcLoop is awake already
		}
	}
}

// set is Put's write.
func (d *badgerKV) set(k datastore.Key, v []byte) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if !d.enter() {
		return ErrClosed
	}
	defer d.ops.Done()
	d.writes.RLock()
	defer d.writes.RUnlock()
	return d.db.Update(func(txn *badger.Txn) error { return txn.Set(k.Bytes(), v) })
}

// Delete deletes k; a value it held in the value log counts towards the
// next garbage collection round (deletedValue).
func (d *badgerKV) Delete(_ context.Context, k datastore.Key) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if !d.enter() {
		return ErrClosed
	}
	defer d.ops.Done()
	d.writes.RLock()
	defer d.writes.RUnlock()
	var size int64
	err := d.db.Update(func(txn *badger.Txn) error {
		if item, err := txn.Get(k.Bytes()); err == nil {
			size = item.ValueSize() // from the value pointer: nothing read
		}
		return txn.Delete(k.Bytes())
	})
	if err == nil {
		d.deletedValue(size)
	}
	return err
}

func (d *badgerKV) Iterate(ctx context.Context, prefix string, keysOnly bool, fn func(string, []byte, error) error) (err error) {
	if !d.enter() {
		return ErrClosed
	}
	defer d.ops.Done()
	defer caught(&err)
	return d.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			var v []byte
			var verr error
			if !keysOnly {
				v, verr = item.ValueCopy(nil)
			}
			if err := fn(string(item.KeyCopy(nil)), v, verr); err != nil {
				return err
			}
		}
		return nil
	})
}

// gone reports whether the directory badger was opened in is no longer
// there (removed, or replaced by another).
func (d *badgerKV) gone() bool {
	info, err := os.Stat(d.dir)
	return err != nil || !os.SameFile(info, d.dirInfo)
}

// Close closes badger within closeTimeout. Badger writes its last memtable
// into a new table file at Close and retries that forever if it fails,
// which it does when the directory was removed under it: the directory is
// then made again for the flush and removed after it (what its remover
// asked for), and Close reports what happened.
func (d *badgerKV) Close() error {
	d.opsMu.Lock()
	d.closed = true
	d.opsMu.Unlock()
	d.ops.Wait()
	close(d.stop)
	d.wg.Wait()
	var remade bool
	var goneErr error
	if _, err := os.Stat(d.dir); errors.Is(err, os.ErrNotExist) {
		goneErr = fmt.Errorf("directory %s was removed while open", d.dir)
		remade = os.MkdirAll(d.dir, 0o700) == nil
	} else if d.gone() {
		goneErr = fmt.Errorf("directory %s was replaced while open", d.dir)
	}
	done := make(chan error, 1)
	go func() { done <- d.db.Close() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(closeTimeout):
		err = fmt.Errorf("badger did not close within %v", closeTimeout)
	}
	if remade {
		os.RemoveAll(d.dir)
	}
	if goneErr != nil {
		return goneErr
	}
	return err
}
