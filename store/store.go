package store

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4/y"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/datastore/dshelp"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/internal/verified"
)

// DefaultQuota is the quota of a Config whose Quota is zero: 1 GiB.
const DefaultQuota int64 = 1 << 30

var (
	blockPrefix = datastore.NewKey("/blocks")
	rootPrefix  = datastore.NewKey("/meshcdn/store/root")
)

// Config configures a Store. The zero value of each field means the default
// stated beside it. New copies the Config; later changes to it do nothing.
type Config struct {
	// Dir is the directory of the badger database that holds blocks and
	// metadata, and of the pin file (meshcdn-pins, a second copy of the
	// pins). It is created if missing. A database badger cannot open is
	// moved aside to Dir + ".damaged-<time>" (see New). Required unless
	// Datastore is set or InMemory is true.
	Dir string

	// Datastore, if set, holds blocks and metadata instead of badger on Dir.
	// It must be safe for concurrent use. The Store does not close it.
	Datastore datastore.Batching

	// InMemory keeps everything in memory and loses it on Close: for tests
	// and throw-away nodes. Ignored when Datastore is set.
	InMemory bool

	// Quota is the most bytes of block data the store holds. Zero means
	// DefaultQuota (1 GiB); a negative value means no quota. The quota counts
	// block bytes, not badger's own overhead on disk.
	Quota int64

	// Logger receives the store's logs, badger's among them. Nil discards
	// them.
	Logger *slog.Logger

	// FreeSpace reports the free space on the disk holding Dir; nil means
	// Statfs. A store on disk refuses writes with ErrDiskFull that would
	// leave less than DiskMargin free, and opens read-only when less is
	// free already. Tests and fault injection set it; it must be safe for
	// concurrent use.
	FreeSpace FreeSpaceFunc

	// ReleaseMapped, if positive, is how often the pages of the database's
	// memory-mapped files are given back to the kernel (Linux only).
	// Badger writes and reads blocks through mappings, so what a node
	// fetched stays in its resident memory (RssFile) until the system runs
	// short; releasing them makes an app's footprint fall back after a
	// fetch, at the cost of reading from disk what is served next. At the
	// same interval, when the process allocated 8 MiB or more since the
	// last time, or holds that much free heap, the store gives the Go
	// heap's garbage and free pages back to the kernel with
	// debug.FreeOSMemory (a collection of the whole process's heap; an
	// idle process is left alone): the Go runtime would keep most of what
	// a fetch allocated resident (RssAnon) for minutes.
	// Default 0: never (a seed serving hot content wants them resident);
	// DefaultReleaseMapped suits an app.
	ReleaseMapped time.Duration

	// ReleaseQuietHeap, if positive while ReleaseMapped is not, is how
	// often the store checks the Go heap (four times in it) for a process
	// gone quiet: once less than 2 MiB was allocated since the last check,
	// after 8 MiB or more since the last release (or with that much free
	// heap), the heap is collected and its free pages given back to the
	// kernel (debug.FreeOSMemory): once after each burst of activity. A
	// busy process is left to the runtime; mapped pages are kept. Default
	// 0: never. The mesh package sets DefaultReleaseMapped, which takes
	// effect on seeds (a seed that pinned 30 MiB and went idle held 41-53
	// MiB of heap, 10 of it live, until a peer asked it for something).
	// Needs Dir.
	ReleaseQuietHeap time.Duration
}

// Usage is a snapshot of what a Store holds.
type Usage struct {
	// Used is the bytes of block data held (and being written).
	Used int64
	// Quota is the quota in force; negative means none.
	Quota int64
	// Pinned is the bytes of blocks that belong to pinned content.
	Pinned int64
	// Blocks and Roots count the blocks and the content roots held, whole
	// or incomplete.
	Blocks, Roots int
}

// Health says what the store has lost or refuses. The zero value is a
// healthy store.
type Health struct {
	// ReadOnly: the disk was below DiskMargin when the store opened, so it
	// refuses every write (ErrReadOnly) until it is opened again.
	ReadOnly bool
	// DiskFull: the last write was refused with ErrDiskFull. It clears
	// when a write passes the check again.
	DiskFull bool
	// MovedAside is where the database was moved because badger could not
	// open it (damaged tables or MANIFEST); empty if it was not. The store
	// started from what verified in it, and from the pin file.
	MovedAside string
	// RestoredPins counts the pinned records that the pin file brought back
	// when the database had lost or damaged them, at open.
	RestoredPins int
	// DroppedRecords counts the damaged root records dropped at open.
	DroppedRecords int
	// Incomplete counts the content held with blocks missing (lost to
	// damage): such content keeps its pin and its place, Holds reports it
	// false, and putting the missing blocks again (a fetch) completes it.
	Incomplete int
}

// RootInfo describes one content root held by the store.
type RootInfo struct {
	Cid      cid.Cid
	Size     int64 // bytes of the root's distinct blocks
	Blocks   int
	Pinned   bool
	LastUsed time.Time
	// Missing lists the blocks lost to damage, for Incomplete; Roots lists
	// only whole content.
	Missing []cid.Cid
}

// Store is a blockstore with a byte quota, pins and eviction of the least
// recently used unpinned content. It implements boxo's blockstore.Blockstore,
// so bitswap and blockservice use it as it is.
//
// Content is a root CID and the blocks of its DAG. Blocks put on their own
// (as bitswap does) are loose until AddRoot or a Txn names the content they
// belong to; loose blocks are evicted first, oldest first. Evicting content
// removes the blocks only it uses: a block shared with other held content
// stays. Pinned content is never evicted.
//
// Every block put is checked against its CID and every block read is checked
// again, so bit rot or a tampered database is reported as *CorruptError and
// never returned. A damaged block costs that block only: its content stays
// held (and pinned) but incomplete until the block is put again. Usage, pins
// and recency survive Close and reopen; recency is written at Close, so a
// crash loses only the recency of the last session. Pins are also kept in a
// pin file beside the database, so that damage to badger's tables cannot
// lose them.
//
// On disk, the Store keeps DiskMargin free: a write that would leave less
// fails with ErrDiskFull and the store goes on serving what it holds.
//
// A Store is safe for concurrent use.
type Store struct {
	ds     kv
	closer io.Closer // the database we opened, if any
	guard  *diskGuard
	pinDir string // where the pin file lives; empty if none
	// trustAbove is the size above which GetForPeer skips the hash: -1 in
	// memory (every block), valueThreshold on badger, none for a
	// Config.Datastore.
	trustAbove int64
	log        *slog.Logger
	quota      int64

	mu       sync.Mutex
	closed   bool
	readOnly bool
	health   Health
	used     int64
	nmissing int // blocks in blocks that are missing
	pinned   int64
	blocks   map[string]*blockMeta // by multihash bytes
	roots    map[string]*rootMeta  // by multihash bytes of the root
	lru      list.List             // *rootMeta (unpinned) and *blockMeta (loose); front is the oldest
	subs     map[*subscription]struct{}
	// expect lists, by multihash bytes, the open Txns that hold a block
	// once it is put (Txn.Expect).
	expect map[string][]*Txn
	wg     sync.WaitGroup

	pinMu     sync.Mutex // serialises pin file writes
	pinsDirty bool       // under mu
	pinKick   chan struct{}
	quit      chan struct{}
}

var _ blockstore.Blockstore = (*Store)(nil)

type blockMeta struct {
	key     string
	c       cid.Cid // as last put; raw codec when only known from disk
	size    int64
	refs    int // roots holding it plus open Txns holding it
	pinRefs int // pinned roots holding it
	roots   []*rootMeta
	elem    *list.Element // set while loose (refs == 0)
	used    time.Time
	pending chan struct{} // non-nil while its first write is under way
	// missing: lost to damage; kept for the content naming it (refs > 0)
	// until it is put again. Not counted in used or pinned.
	missing bool
}

type rootMeta struct {
	c      cid.Cid
	size   int64
	pinned bool
	used   time.Time
	saved  time.Time // used as last written
	blocks []*blockMeta
	elem   *list.Element // set while unpinned
	// missing counts its blocks lost to damage.
	missing int
}

// New opens a Store. With Config.Dir it opens (or creates) a badger database
// there, tuned for a desktop app rather than a server, and reads back usage,
// pins and recency. Content whose record survived but some of whose blocks
// did not (damage, or a crash between the two) is held incomplete.
//
// New does not fail on a damaged database: when badger cannot open it, the
// database is moved aside (Health().MovedAside says where; nothing is
// deleted), what verifies in it is copied into a new one, pins come back
// from the pin file, and the store logs an error and starts. When the disk
// has less than DiskMargin free, the store opens read-only
// (Health().ReadOnly) and logs an error.
func New(cfg Config) (*Store, error) {
	s := &Store{
		log:     cfg.Logger,
		quota:   cfg.Quota,
		blocks:  make(map[string]*blockMeta),
		roots:   make(map[string]*rootMeta),
		subs:    make(map[*subscription]struct{}),
		pinKick: make(chan struct{}, 1),
		quit:    make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("pkg", "store")
	if s.quota == 0 {
		s.quota = DefaultQuota
	}
	switch {
	case cfg.Datastore != nil:
		s.ds = dsKV{cfg.Datastore}
		s.trustAbove = math.MaxInt64 // its checks are unknown
	case cfg.InMemory:
		s.ds = dsKV{dssync.MutexWrap(datastore.NewMapDatastore())}
		s.trustAbove = -1
	case cfg.Dir != "":
		if err := s.openDisk(cfg.Dir, cfg.FreeSpace); err != nil {
			return nil, fmt.Errorf("store: open badger at %s: %w", cfg.Dir, err)
		}
		s.trustAbove = valueThreshold
	default:
		return nil, errors.New("store: Config needs Dir, Datastore or InMemory")
	}
	err := s.load(context.Background())
	if err != nil && s.pinDir != "" && !s.readOnly && s.health.MovedAside == "" {
		// Badger opened a database it cannot read through: damage too.
		err = s.reload(err)
	}
	if err != nil {
		if s.closer != nil {
			s.closer.Close()
		}
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if s.pinDir != "" && !s.readOnly && s.nmissing > 0 {
		s.repairFromLogs(context.Background(), s.pinDir)
	}
	if s.pinDir != "" {
		s.wg.Add(1)
		go s.pinWriter()
		if s.pinsDirty {
			s.pinsChanged()
		}
		if cfg.ReleaseMapped > 0 {
			s.wg.Add(1)
			go s.releaseLoop(cfg.Dir, cfg.ReleaseMapped, true)
		} else if cfg.ReleaseQuietHeap > 0 {
			s.wg.Add(1)
			go s.releaseLoop(cfg.Dir, cfg.ReleaseQuietHeap, false)
		}
	}
	return s, nil
}

// reload moves aside a database that opened but could not be read
// through, and loads what verifies in it.
func (s *Store) reload(loadErr error) error {
	if err := s.closer.Close(); err != nil {
		s.log.Warn("closing an unreadable database", "err", err)
	}
	s.ds, s.closer = nil, nil
	s.blocks, s.roots = make(map[string]*blockMeta), make(map[string]*rootMeta)
	s.lru.Init()
	s.used, s.pinned, s.nmissing = 0, 0, 0
	s.health = Health{}
	if err := s.moveAside(s.pinDir, loadErr); err != nil {
		return err
	}
	return s.load(context.Background())
}

// attachRoot adds a root's references to its blocks. The caller holds mu
// (or owns the Store, during load).
func (s *Store) attachRoot(rm *rootMeta) {
	s.roots[string(rm.c.Hash())] = rm
	for _, b := range rm.blocks {
		if b.refs == 0 && b.elem != nil {
			s.lru.Remove(b.elem)
			b.elem = nil
		}
		b.refs++
		b.roots = append(b.roots, rm)
		if b.missing {
			rm.missing++
		}
		if rm.pinned {
			if b.pinRefs == 0 && !b.missing {
				s.pinned += b.size
			}
			b.pinRefs++
		}
	}
	if rm.missing > 0 {
		s.health.Incomplete++
	}
	if !rm.pinned {
		rm.elem = s.lru.PushBack(rm)
	}
}

// Close writes recency back, closes the database if the Store opened it, and
// ends every subscription. It is idempotent; calls after it fail with
// ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var dirty []*rootMeta
	for _, rm := range s.roots {
		if !rm.used.Equal(rm.saved) {
			dirty = append(dirty, rm)
		}
	}
	for sub := range s.subs {
		sub.stop()
	}
	readOnly := s.readOnly
	s.mu.Unlock()
	close(s.quit)
	s.wg.Wait()
	if s.pinDir != "" {
		s.flushPins()
	}

	var errs []error
	if readOnly {
		dirty = nil
	}
	for _, rm := range dirty {
		if err := s.saveRoot(context.Background(), rm); err != nil {
			errs = append(errs, err)
		}
	}
	if s.closer != nil {
		errs = append(errs, s.closer.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

func (s *Store) saveRoot(ctx context.Context, rm *rootMeta) error {
	v, err := json.Marshal(rm.record())
	if err != nil {
		return err
	}
	return s.ds.Put(ctx, rootPrefix.ChildString(rm.c.String()), v)
}

func dsKey(hash string) datastore.Key {
	return blockPrefix.Child(dshelp.MultihashToDsKey(mh.Multihash(hash)))
}

// Put stores a block after checking it against its CID; a block that does not
// match fails with ErrHashMismatch. The block is loose until content that uses
// it is named with AddRoot. It evicts the least recently used unpinned
// content to make room and fails with ErrQuotaExceeded if it cannot.
func (s *Store) Put(ctx context.Context, b blocks.Block) error {
	return s.putChecked(ctx, b, nil)
}

// PutMany is Put for each block, in order; it stops at the first error.
func (s *Store) PutMany(ctx context.Context, bs []blocks.Block) error {
	for _, b := range bs {
		if err := s.Put(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) putChecked(ctx context.Context, b blocks.Block, t *Txn) error {
	if b == nil {
		return errors.New("store: put: nil block")
	}
	if vb, ok := b.(verified.Block); ok {
		return s.put(ctx, vb.Block, t) // hashed by the meshcdn package that made it
	}
	if err := dagfile.Check(b); err != nil {
		var he *dagfile.HashError
		if errors.As(err, &he) {
			return fmt.Errorf("store: put %s: %w", b.Cid(), ErrHashMismatch)
		}
		return fmt.Errorf("store: put: %w", err)
	}
	return s.put(ctx, b, t)
}

// put stores a block that is known to match its CID. With a Txn, the block
// is held by it and cannot be evicted until the Txn ends.
func (s *Store) put(ctx context.Context, blk blocks.Block, t *Txn) error {
	key := string(blk.Cid().Hash())
	size := int64(len(blk.RawData()))
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if t != nil && t.done { // Discard ran since Txn.Put checked
			s.mu.Unlock()
			return fmt.Errorf("store: put %s: %w", blk.Cid(), errTxnDone)
		}
		b := s.blocks[key]
		if waited, err := s.awaitWriteLocked(ctx, b); err != nil || waited {
			s.mu.Unlock()
			if err != nil {
				return fmt.Errorf("store: put %s: %w", blk.Cid(), err)
			}
			continue // look again: the write may have failed
		}
		if b != nil && !b.missing {
			if t != nil {
				t.hold(b, false)
			} else {
				s.touchBlock(b, time.Now())
			}
			s.mu.Unlock()
			return nil
		}
		if err := s.admit(ctx, size); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("store: put %s (%d bytes): %w", blk.Cid(), size, err)
		}
		if b == nil {
			b = &blockMeta{key: key, c: blk.Cid()}
			s.blocks[key] = b
		}
		b.size, b.pending, b.used = size, make(chan struct{}), time.Now()
		s.used += size
		if t != nil {
			t.hold(b, !b.missing)
		}
		for _, e := range s.expect[key] {
			e.hold(b, false)
		}
		s.mu.Unlock()
		return s.write(ctx, b, blk, t)
	}
}

// admit checks that size more bytes may be written: the store is writable,
// the disk keeps its margin, and the quota has room (evicting for it). The
// caller holds mu.
func (s *Store) admit(ctx context.Context, size int64) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if s.guard != nil {
		err := s.guard.allow(size)
		if err != nil {
			s.health.DiskFull = true
			return err
		}
		// A small write (a record) that fits does not end DiskFull while a
		// leaf would still be refused.
		if s.health.DiskFull && s.guard.fits(maxLeaf) {
			s.health.DiskFull = false
		}
	}
	return s.makeRoom(ctx, size)
}

// write writes a block admitted by put, whose meta is pending.
func (s *Store) write(ctx context.Context, b *blockMeta, blk blocks.Block, t *Txn) error {
	err := s.ds.Put(ctx, dsKey(b.key), blk.RawData())

	s.mu.Lock()
	defer s.mu.Unlock()
	close(b.pending)
	b.pending = nil
	if err != nil {
		if s.closed {
			err = ErrClosed // badger's "DB Closed" or "Writes are blocked"
		}
		s.used -= b.size
		if b.missing {
			return fmt.Errorf("store: put %s: %w", blk.Cid(), err)
		}
		if t != nil {
			t.forget(b)
		}
		delete(s.blocks, b.key)
		return fmt.Errorf("store: put %s: %w", blk.Cid(), err)
	}
	if b.missing {
		s.restored(b)
	}
	if b.refs == 0 {
		b.elem = s.lru.PushBack(b)
	}
	return nil
}

// restored marks a missing block as held again; content it completes is
// whole again (an Added event). The caller holds mu.
func (s *Store) restored(b *blockMeta) {
	b.missing = false
	s.nmissing--
	if b.pinRefs > 0 {
		s.pinned += b.size
	}
	for _, rm := range b.roots {
		rm.missing--
		if rm.missing == 0 {
			s.health.Incomplete--
			s.emit(Event{Kind: Added, Root: rm.c, Size: rm.size, Pinned: rm.pinned})
		}
	}
}

// makeRoom evicts until n more bytes fit. The caller holds mu.
func (s *Store) makeRoom(ctx context.Context, n int64) error {
	if s.quota < 0 {
		return nil
	}
	if n > s.quota {
		return ErrQuotaExceeded
	}
	for s.used+n > s.quota {
		e := s.lru.Front()
		if e == nil {
			return ErrQuotaExceeded
		}
		var err error
		switch u := e.Value.(type) {
		case *rootMeta:
			err = s.evictRoot(ctx, u, Evicted)
		case *blockMeta:
			err = s.deleteBlock(ctx, u)
		}
		if err != nil {
			// Do not try the same victim forever.
			s.lru.MoveToBack(e)
			s.log.Error("eviction failed", "err", err)
			return err
		}
	}
	return nil
}

// evictRoot forgets a root and deletes the blocks only it held. The caller
// holds mu.
func (s *Store) evictRoot(ctx context.Context, rm *rootMeta, kind EventKind) error {
	if err := s.ds.Delete(ctx, rootPrefix.ChildString(rm.c.String())); err != nil {
		return err
	}
	delete(s.roots, string(rm.c.Hash()))
	if rm.elem != nil {
		s.lru.Remove(rm.elem)
		rm.elem = nil
	}
	if rm.missing > 0 {
		s.health.Incomplete--
	}
	if rm.pinned {
		s.pinsChanged()
	}
	var errs []error
	for _, b := range rm.blocks {
		b.refs--
		b.roots = removeRoot(b.roots, rm)
		if rm.pinned {
			b.pinRefs--
			if b.pinRefs == 0 && !b.missing {
				s.pinned -= b.size
			}
		}
		if b.refs == 0 {
			if err := s.deleteBlock(ctx, b); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.emit(Event{Kind: kind, Root: rm.c, Size: rm.size})
	s.log.Debug("content removed", "cid", rm.c, "bytes", rm.size, "why", kind.String())
	return errors.Join(errs...)
}

func removeRoot(rs []*rootMeta, rm *rootMeta) []*rootMeta {
	for i, r := range rs {
		if r == rm {
			return append(rs[:i], rs[i+1:]...)
		}
	}
	return rs
}

// deleteBlock deletes a block that nothing holds. The caller holds mu.
func (s *Store) deleteBlock(ctx context.Context, b *blockMeta) error {
	if b.elem != nil {
		s.lru.Remove(b.elem)
		b.elem = nil
	}
	if b.missing {
		delete(s.blocks, b.key)
		s.nmissing--
		return nil
	}
	if err := s.ds.Delete(ctx, dsKey(b.key)); err != nil {
		b.elem = s.lru.PushFront(b)
		return err
	}
	delete(s.blocks, b.key)
	s.used -= b.size
	return nil
}

// touchBlock marks a block, and the content it belongs to, as used now. The
// caller holds mu.
func (s *Store) touchBlock(b *blockMeta, now time.Time) {
	b.used = now
	if b.elem != nil {
		s.lru.MoveToBack(b.elem)
	}
	for _, rm := range b.roots {
		rm.used = now
		if rm.elem != nil {
			s.lru.MoveToBack(rm.elem)
		}
	}
}

// Get returns a block after checking its bytes against its CID. A missing
// block is ipld.ErrNotFound (as boxo expects); a block whose stored bytes no
// longer match is *CorruptError, and that block is dropped from the store.
// Get counts as a use of the content the block belongs to.
func (s *Store) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	return s.get(ctx, c, true)
}

// GetForPeer is Get for a block another peer asked for. For a block in
// badger's value log (over 4 KiB: every leaf but a file's last) or in memory
// it skips the sha2-256 check, because the peer checks every block it
// receives (as Kubo serves, with HashOnRead off), which halves what serving
// costs in CPU. The storage is still checked, more cheaply: badger verifies
// the CRC32C of every value it reads from its value log, and the length read
// must be the length stored; a block that fails either is *CorruptError and
// dropped, as in Get. Smaller blocks, which badger keeps in its tables
// unchecked, and blocks of a Config.Datastore are hashed as Get does.
func (s *Store) GetForPeer(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	return s.get(ctx, c, false)
}

// valueThreshold is the size above which badger keeps a value in its value
// log, where each value has a CRC32C checked on read.
const valueThreshold = 4 << 10

func (s *Store) get(ctx context.Context, c cid.Cid, hash bool) (blocks.Block, error) {
	key := string(c.Hash())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	b := s.blocks[key]
	if !b.held() {
		s.mu.Unlock()
		return nil, ipld.ErrNotFound{Cid: c}
	}
	s.touchBlock(b, time.Now())
	size := b.size
	s.mu.Unlock()

	data, err := s.ds.Get(ctx, dsKey(key))
	if errors.Is(err, datastore.ErrNotFound) {
		// Held, but gone from the database (a damaged table): missing
		// from its content from now on, so that a fetch brings it back.
		s.log.Warn("held block gone from the database", "cid", c)
		s.dropCorrupt(ctx, b)
		return nil, ipld.ErrNotFound{Cid: c}
	}
	if err != nil && s.isClosed() {
		return nil, fmt.Errorf("store: get %s: %w", c, ErrClosed) // closed under the read
	}
	if err != nil && !isChecksumError(err) {
		return nil, fmt.Errorf("store: get %s: %w", c, err)
	}
	if err == nil && int64(len(data)) != size {
		// Badger returns a value cut off (even empty) without an error
		// when it truncated a damaged value log on opening.
		err = fmt.Errorf("%d bytes stored, %d expected", len(data), size)
	}
	if err == nil && (hash || size <= s.trustAbove) {
		err = dagfile.CheckBytes(c, data)
	}
	if err != nil {
		s.log.Error("corrupt block dropped", "cid", c, "err", err)
		s.dropCorrupt(ctx, b)
		return nil, &CorruptError{Cid: c}
	}
	return blocks.NewBlockWithCid(data, c)
}

// isClosed reports whether Close was called.
func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// isChecksumError reports whether err is badger's CRC mismatch on a value.
// Badger flattens the errors it wraps into text (y.Wrapf with %+v), so the
// text is all there is to go by.
func isChecksumError(err error) bool {
	return strings.Contains(err.Error(), y.ErrChecksumMismatch.Error())
}

// dropCorrupt removes a corrupt block, read as b. Loose, it is gone; if content
// uses it, it becomes a missing block of that content, which stays held
// (and pinned) but incomplete until the block is put again: the damage
// costs that block, not the content's good blocks.
func (s *Store) dropCorrupt(ctx context.Context, b *blockMeta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := b.key
	if s.blocks[key] != b || !b.held() || s.closed {
		return // evicted and put again meanwhile
	}
	if b.refs == 0 {
		if s.readOnly {
			s.lru.Remove(b.elem)
			b.elem = nil
			delete(s.blocks, key)
			s.used -= b.size
		} else if err := s.deleteBlock(ctx, b); err != nil {
			s.log.Error("removing corrupt block", "err", err)
		}
		return
	}
	if !s.readOnly {
		if err := s.ds.Delete(ctx, dsKey(key)); err != nil {
			s.log.Error("removing corrupt block", "err", err)
		}
	}
	b.missing = true
	s.nmissing++
	s.used -= b.size
	if b.pinRefs > 0 {
		s.pinned -= b.size
	}
	for _, rm := range b.roots {
		rm.missing++
		if rm.missing == 1 {
			s.health.Incomplete++
			s.emit(Event{Kind: Removed, Root: rm.c, Size: rm.size, Pinned: rm.pinned})
		}
	}
}

// Has reports whether the block is held.
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	return s.blocks[string(c.Hash())].held(), nil
}

// held reports whether b is a block whose bytes can be read.
func (b *blockMeta) held() bool {
	return b != nil && b.pending == nil && !b.missing
}

// GetSize returns the size of a held block, or ipld.ErrNotFound.
func (s *Store) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	b := s.blocks[string(c.Hash())]
	if !b.held() {
		return 0, ipld.ErrNotFound{Cid: c}
	}
	return int(b.size), nil
}

// DeleteBlock deletes a loose block. A block that belongs to held content or
// to an open Txn is not deleted (use Remove for content): it returns an error.
// Deleting a block that is not held is not an error.
func (s *Store) DeleteBlock(ctx context.Context, c cid.Cid) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	b := s.blocks[string(c.Hash())]
	if b == nil {
		return nil
	}
	if b.refs > 0 || b.pending != nil {
		return fmt.Errorf("store: delete %s: block is in use by content", c)
	}
	if s.readOnly {
		return fmt.Errorf("store: delete %s: %w", c, ErrReadOnly)
	}
	return s.deleteBlock(ctx, b)
}

// AllKeysChan lists the blocks held when it is called. Blocks known only from
// disk (not put or named in this session) come with the raw codec, as boxo's
// blockstore does.
func (s *Store) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	keys := make([]cid.Cid, 0, len(s.blocks))
	for _, b := range s.blocks {
		if b.held() {
			keys = append(keys, b.c)
		}
	}
	s.mu.Unlock()
	ch := make(chan cid.Cid)
	go func() {
		defer close(ch)
		for _, k := range keys {
			select {
			case ch <- k:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// AddRoot names content whose blocks are all held (put one by one, as a
// fetch does): from then on its blocks are evicted together, least recently
// used first, or never if pin is true. It fails with ErrIncomplete if a block
// of the DAG is missing. Adding content already held only updates its pin
// (a pin is never removed here) and its recency.
func (s *Store) AddRoot(ctx context.Context, root cid.Cid, pin bool) error {
	t := s.Begin()
	defer t.Discard()
	return t.Commit(ctx, root, pin)
}

// Pin pins held content so that it is never evicted. Content that is not
// held fails with ErrIncomplete.
func (s *Store) Pin(ctx context.Context, root cid.Cid) error {
	return s.AddRoot(ctx, root, true)
}

// Unpin makes pinned content evictable again, as the most recently used.
func (s *Store) Unpin(ctx context.Context, root cid.Cid) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	rm := s.roots[string(root.Hash())]
	if rm == nil || !rm.pinned {
		return fmt.Errorf("store: unpin %s: %w", root, ErrNotPinned)
	}
	if s.readOnly {
		return fmt.Errorf("store: unpin %s: %w", root, ErrReadOnly)
	}
	rm.pinned = false
	if err := s.saveRoot(ctx, rm); err != nil {
		rm.pinned = true
		return fmt.Errorf("store: unpin %s: %w", root, err)
	}
	s.pinsChanged()
	for _, b := range rm.blocks {
		b.pinRefs--
		if b.pinRefs == 0 && !b.missing {
			s.pinned -= b.size
		}
	}
	rm.used = time.Now()
	rm.saved = rm.used
	rm.elem = s.lru.PushBack(rm)
	return nil
}

// Remove deletes held content, pinned or not, and the blocks only it uses.
// Removing content that is not held is not an error.
func (s *Store) Remove(ctx context.Context, root cid.Cid) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	rm := s.roots[string(root.Hash())]
	if rm == nil {
		return nil
	}
	if s.readOnly {
		return fmt.Errorf("store: remove %s: %w", root, ErrReadOnly)
	}
	if err := s.evictRoot(ctx, rm, Removed); err != nil {
		return fmt.Errorf("store: remove %s: %w", root, err)
	}
	return nil
}

// Usage reports what the store holds now.
func (s *Store) Usage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Usage{Used: s.used, Quota: s.quota, Pinned: s.pinned, Blocks: len(s.blocks) - s.nmissing, Roots: len(s.roots)}
}

// Roots lists the content held whole, most recently used first.
func (s *Store) Roots() []RootInfo {
	return s.list(false)
}

// Incomplete lists the content held with blocks lost to damage, most
// recently used first, with the missing blocks: fetching the content again
// (or putting those blocks) completes it. Pinned content stays pinned
// meanwhile.
func (s *Store) Incomplete() []RootInfo {
	return s.list(true)
}

func (s *Store) list(incomplete bool) []RootInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RootInfo, 0, len(s.roots))
	for _, rm := range s.roots {
		if (rm.missing > 0) != incomplete {
			continue
		}
		ri := RootInfo{Cid: rm.c, Size: rm.size, Blocks: len(rm.blocks), Pinned: rm.pinned, LastUsed: rm.used}
		for _, b := range rm.blocks {
			if b.missing {
				ri.Missing = append(ri.Missing, b.c)
			}
		}
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out
}

// Holds reports whether root is held as whole content (AddRoot, Import or a
// committed Txn named it, and no block of it was lost since).
func (s *Store) Holds(root cid.Cid) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rm := s.roots[string(root.Hash())]
	return rm != nil && rm.missing == 0
}

// Health reports what the store has lost or refuses; see Health.
func (s *Store) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}
