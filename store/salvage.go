package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"

	"github.com/meshcdn/meshcdn/internal/dagfile"
)

// Badger's log files (value logs, *.vlog, and memtable logs, *.mem) are a
// 20-byte header and then entries, each: meta and user-meta bytes, the key
// length, value length and expiry as uvarints, the key (the user key and 8
// bytes of MaxUint64 less the version), the value, and a big-endian CRC32C of all that. When
// badger cannot open a database (its MANIFEST or tables damaged), these
// files still hold every block of more than 4 KiB and the recent small
// entries: salvageLogs reads them directly. A block is kept only if it
// matches its hash and a record only if it passes its checksum, so a
// misread can lose an entry but never bring back wrong bytes.
const (
	logHeaderSize = 20
	metaDelete    = 1 << 0
	metaPointer   = 1 << 1
)

type logEntry struct {
	version uint64
	value   []byte
	deleted bool
	file    int // where salvageLogs found it: a log file's index, -1 for a table
}

// salvageLogs copies from the log and table files of the database in dir
// into to the newest version of every block that verifies and of every root
// record that verifies and was not deleted after. It holds one log file in
// memory at a time (a first pass finds where each key's newest version is,
// a second copies it) and returns how many entries it copied.
func (s *Store) salvageLogs(dir string, to kv) int {
	files, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	files = append(files, mems...)
	sort.Strings(files)
	latest := make(map[string]logEntry)
	keep := func(key string, e logEntry) {
		if old, ok := latest[key]; !ok || e.version >= old.version {
			latest[key] = e
		}
	}
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		readLog(b, func(key string, e logEntry) {
			e.file, e.value = i, nil
			keep(key, e)
		})
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range tables {
		if err := readTable(f, func(key string, e logEntry) {
			e.file = -1
			keep(key, e)
		}); err != nil {
			s.log.Warn("salvage: table unreadable", "file", f, "err", err)
		}
	}
	n := 0
	put := func(k string, e logEntry) bool {
		if e.deleted || !s.salvageable(k, e.value) {
			return true
		}
		if s.guard.allow(int64(len(e.value))) != nil {
			return false
		}
		if to.Put(context.Background(), datastore.RawKey(k), e.value) == nil {
			n++
		}
		return true
	}
	for k, e := range latest {
		if e.file < 0 && !put(k, e) {
			return n
		}
	}
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		full := false
		readLog(b, func(key string, e logEntry) {
			if l := latest[key]; !full && l.file == i && l.version == e.version {
				full = !put(key, e)
			}
		})
		if full {
			break
		}
	}
	return n
}

// salvageable reports whether a salvaged entry verifies: a block matches
// its hash, a root record its checksum.
func (s *Store) salvageable(k string, v []byte) bool {
	switch {
	case strings.HasPrefix(k, blockPrefix.String()+"/"):
		hash, err := blockHash(k)
		return err == nil && checkHash(hash, v) == nil
	case strings.HasPrefix(k, rootPrefix.String()+"/"):
		_, err := decodeRecord(v)
		return err == nil
	}
	return false
}

// readLog calls fn for each entry of a badger log file that passes its
// CRC, skipping entries that fail it while their lengths are plausible and
// stopping where they are not.
func readLog(b []byte, fn func(key string, e logEntry)) {
	readLogReporting(b, func(key string, e logEntry, _ bool) { fn(key, e) })
}

// readLogReporting is readLog, also telling fn whether an entry comes
// after one that failed its CRC. After a damaged entry (a flipped byte in
// its value, or in its header, which makes its lengths wrong) it finds the
// next entry of ours by its key, so that damage costs the entries it hit.
func readLogReporting(b []byte, fn func(key string, e logEntry, afterDamage bool)) {
	damaged := false
	for off := logHeaderSize; off+2 < len(b); {
		e, ok := parseEntry(b, off)
		if ok && e.sumOK(b) {
			if e.klen > 8 && e.meta&metaPointer == 0 {
				key := b[e.key : e.key+e.klen]
				fn(string(key[:len(key)-8]), logEntry{
					version: math.MaxUint64 - binary.BigEndian.Uint64(key[len(key)-8:]),
					value:   b[e.key+e.klen : e.end],
					deleted: e.meta&metaDelete != 0,
				}, damaged)
			}
			off = e.end + 4
			continue
		}
		if e.klen == 0 && b[off] == 0 {
			return // the zeroed end of the file
		}
		damaged = true
		if off = resync(b, off+1); off < 0 {
			return
		}
	}
}

// rawEntry is where the parts of an entry of a log file are.
type rawEntry struct {
	meta      byte
	start     int // of the header
	key, klen int
	end       int // of the value; the CRC follows
}

// parseEntry reads the header of the entry at off and reports whether its
// lengths fit in b.
func parseEntry(b []byte, off int) (rawEntry, bool) {
	e := rawEntry{meta: b[off], start: off}
	p := off + 2
	var n [3]int
	var v [3]uint64
	for i := range v {
		if p > len(b) {
			return e, false
		}
		v[i], n[i] = binary.Uvarint(b[p:])
		if n[i] <= 0 {
			return e, false
		}
		p += n[i]
	}
	klen, vlen := v[0], v[1]
	if klen == 0 || klen > 1<<16 || vlen > uint64(len(b)) || p+int(klen)+int(vlen)+4 > len(b) {
		return e, false
	}
	e.key, e.klen = p, int(klen)
	e.end = p + int(klen) + int(vlen)
	return e, true
}

func (e rawEntry) sumOK(b []byte) bool {
	return crc32.Checksum(b[e.start:e.end], castagnoli) == binary.BigEndian.Uint32(b[e.end:])
}

// resync finds the first entry at or after from whose key is one of ours
// and whose CRC holds, or returns -1.
func resync(b []byte, from int) int {
	for from < len(b) {
		k := -1
		for _, prefix := range [][]byte{[]byte(blockPrefix.String() + "/"), []byte(rootPrefix.String() + "/")} {
			if i := bytes.Index(b[from:], prefix); i >= 0 && (k < 0 || from+i < k) {
				k = from + i
			}
		}
		if k < 0 {
			return -1
		}
		// A header is 5 to 32 bytes: two bytes and three uvarints.
		for h := k - 5; h >= k-32 && h >= logHeaderSize; h-- {
			if e, ok := parseEntry(b, h); ok && e.key == k && e.sumOK(b) {
				return h
			}
		}
		from = k + 1
	}
	return -1
}

// readTable calls fn for each entry of a badger table file that holds its
// value (the others point into the value log, which readLog reads). A
// table whose index fails its checksum yields nothing; one whose blocks
// fail theirs yields the entries before the first damaged block.
func readTable(file string, fn func(key string, e logEntry)) (err error) {
	if _, ok := table.ParseFileID(filepath.Base(file)); !ok {
		// OpenTable would close the file itself, and then again here.
		return fmt.Errorf("not a table file name: %s", file)
	}
	mf, err := z.OpenMmapFile(file, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer mf.Close(-1)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("badger panicked reading %s: %v", file, r)
		}
	}()
	t, err := table.OpenTable(mf, tableOptions(options.OnBlockRead))
	if err != nil {
		return err
	}
	it := t.NewIterator(0)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) <= 8 || v.Meta&metaPointer != 0 {
			continue
		}
		fn(string(y.ParseKey(k)), logEntry{
			version: y.ParseTs(k),
			value:   append([]byte(nil), v.Value...),
			deleted: v.Meta&metaDelete != 0,
		})
	}
	return nil
}

// salvageTail reads the newest value log file in dir before badger opens
// it. Badger cuts that file at its first entry that fails its CRC, losing
// every entry after it; readLog reads past such entries. It returns the
// blocks after the first damaged entry that match their hashes (nil when
// nothing is damaged), for restoreTail to put back.
func (s *Store) salvageTail(dir string) map[string][]byte {
	files, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if len(files) == 0 {
		return nil
	}
	sort.Strings(files)
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		return nil
	}
	var tail map[string][]byte
	readLogReporting(b, func(key string, e logEntry, afterDamage bool) {
		if afterDamage && !e.deleted && strings.HasPrefix(key, blockPrefix.String()+"/") && s.salvageable(key, e.value) {
			if tail == nil {
				tail = make(map[string][]byte)
			}
			tail[key] = e.value
		}
	})
	return tail
}

// restoreTail puts back the blocks of salvageTail that badger lost.
func (s *Store) restoreTail(tail map[string][]byte) {
	ctx := context.Background()
	n := 0
	for k, v := range tail {
		key := datastore.RawKey(k)
		if got, err := s.ds.Get(ctx, key); err == nil && bytes.Equal(got, v) {
			continue
		}
		if err := s.ds.Put(ctx, key, v); err != nil {
			s.log.Warn("restoring a block cut from the value log failed", "key", k, "err", err)
			continue
		}
		n++
	}
	if n > 0 {
		s.log.Warn("value log damaged: restored the blocks badger cut after the damage", "blocks", n)
	}
}

// repairFromLogs looks for the blocks that held content is missing after
// load (a damaged table lost their keys) in the value and memtable logs
// of the database, which keep every block of more than 4 KiB written
// since the last garbage collection, and puts back those that match their
// hashes.
func (s *Store) repairFromLogs(ctx context.Context, dir string) {
	want := make(map[string]cid.Cid)
	s.mu.Lock()
	for _, b := range s.blocks {
		if b.missing {
			want[dsKey(b.key).String()] = b.c
		}
	}
	s.mu.Unlock()
	if len(want) == 0 {
		return
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	n := 0
	for _, f := range append(files, mems...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		readLog(b, func(key string, e logEntry) {
			c, ok := want[key]
			if !ok || e.deleted {
				return
			}
			blk, err := blocks.NewBlockWithCid(bytes.Clone(e.value), c)
			if err != nil || dagfile.Check(blk) != nil {
				return
			}
			if s.put(ctx, blk, nil) == nil {
				delete(want, key)
				n++
			}
		})
	}
	s.log.Warn("missing blocks found again in the value log", "found", n, "still missing", len(want))
}

// metaTxn marks an entry of a transaction that a later entry ends.
const metaTxn = 1 << 6

// logValidEnd returns where the entries of a badger log file that badger
// replays end: after the last entry that passes its CRC and is not in the
// middle of a transaction.
func logValidEnd(b []byte) int {
	end := logHeaderSize
	for off := logHeaderSize; off+2 < len(b); {
		meta := b[off]
		p := off + 2
		klen, n1 := binary.Uvarint(b[p:])
		if n1 <= 0 {
			break
		}
		p += n1
		vlen, n2 := binary.Uvarint(b[p:])
		if n2 <= 0 {
			break
		}
		p += n2
		_, n3 := binary.Uvarint(b[p:])
		if n3 <= 0 {
			break
		}
		p += n3
		if klen == 0 || klen > 1<<16 || vlen > uint64(len(b)) || p+int(klen)+int(vlen)+4 > len(b) {
			break
		}
		stop := p + int(klen) + int(vlen)
		if crc32.Checksum(b[off:stop], castagnoli) != binary.BigEndian.Uint32(b[stop:]) {
			break
		}
		off = stop + 4
		if meta&metaTxn == 0 {
			end = off
		}
	}
	return min(end, len(b))
}

// trimLogs cuts each memtable log in dir after its last entry that badger
// replays, as badger does itself when it opens for writing: a process
// killed leaves these logs at their full mapped size, which badger refuses
// to open read-only. Cutting a file never needs free space.
func trimLogs(dir string) error {
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	for _, f := range mems {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if end := logValidEnd(b); end < len(b) {
			if err := os.Truncate(f, int64(end)); err != nil {
				return err
			}
		}
	}
	return nil
}

// tableOptions are what badger opens our tables with (its defaults: 4 KiB
// blocks, Snappy).
func tableOptions(mode options.ChecksumVerificationMode) table.Options {
	return table.Options{BlockSize: 4 << 10, Compression: options.Snappy, ChkMode: mode}
}
