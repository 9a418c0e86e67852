package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"time"

	"github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/internal/dagfile"
)

// rootRecord is the persisted form of a root. Version 2 carries the
// CRC32C of its JSON encoding with Sum zero, so that a flipped byte is
// found rather than read as another record; version 1 records (written
// before) have none and are read as they are.
type rootRecord struct {
	V      int      `json:"v"`
	Pinned bool     `json:"pinned,omitempty"`
	Used   int64    `json:"used"`
	Blocks []string `json:"blocks"`
	Sizes  []int64  `json:"sizes"`
	Sum    uint32   `json:"sum,omitempty"`
}

func (r rootRecord) checksum() uint32 {
	r.Sum = 0
	b, _ := json.Marshal(r)
	return crc32.Checksum(b, castagnoli)
}

func (r rootRecord) verify() error {
	switch {
	case r.V == 2 && r.Sum == r.checksum():
	case r.V == 2:
		return errors.New("record fails its checksum")
	case r.V == 1:
	default:
		return fmt.Errorf("unknown record version %d", r.V)
	}
	if len(r.Sizes) != len(r.Blocks) {
		return fmt.Errorf("record has %d blocks and %d sizes", len(r.Blocks), len(r.Sizes))
	}
	return nil
}

func decodeRecord(v []byte) (rootRecord, error) {
	var rec rootRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, err
	}
	return rec, rec.verify()
}

// record returns rm's persisted form. The caller holds s.mu.
func (rm *rootMeta) record() rootRecord {
	rec := rootRecord{V: 2, Pinned: rm.pinned, Used: rm.used.UnixNano(), Blocks: make([]string, len(rm.blocks)), Sizes: make([]int64, len(rm.blocks))}
	for i, b := range rm.blocks {
		rec.Blocks[i] = b.c.String()
		rec.Sizes[i] = b.size
	}
	rec.Sum = rec.checksum()
	return rec
}

func blockHash(k string) (mh.Multihash, error) {
	return dshelp.DsKeyToMultihash(datastore.NewKey(datastore.RawKey(k).BaseNamespace()))
}

func checkHash(hash mh.Multihash, v []byte) error {
	return dagfile.CheckBytes(cid.NewCidV1(cid.Raw, hash), v)
}

// load reads the blocks present and the root records back into memory.
// Damage costs what it must: a root record that fails its checksum is
// taken from the pin file if it was pinned and dropped if not (its blocks
// become loose); a block a record names that is not there (or a pinned
// record restored from the pin file names) is missing, and its content is
// held incomplete, still pinned, until the block is put again.
func (s *Store) load(ctx context.Context) error {
	if err := s.loadBlocks(ctx); err != nil {
		return err
	}
	recs, stale, err := s.loadRecords(ctx)
	if err != nil {
		return err
	}
	roots := make([]*rootMeta, 0, len(recs))
	for k, rec := range recs {
		rm, err := s.decodeRoot(k, rec)
		if err != nil {
			s.log.Warn("dropping root record", "cid", k, "err", err)
			stale = append(stale, rootPrefix.ChildString(k))
			continue
		}
		roots = append(roots, rm)
	}
	if !s.readOnly {
		for _, k := range stale {
			if err := s.ds.Delete(ctx, k); err != nil {
				return err
			}
		}
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].used.Before(roots[j].used) })
	// Loose blocks have no recency on disk: they go first, oldest of all.
	for _, b := range s.blocks {
		if !b.missing {
			s.used += b.size
		}
	}
	for _, rm := range roots {
		s.attachRoot(rm)
	}
	for _, b := range s.blocks {
		if b.refs == 0 {
			b.elem = s.lru.PushFront(b)
		}
	}
	if !s.readOnly && s.quota >= 0 && s.used > s.quota {
		// A smaller quota than last time, or blocks salvaged that had
		// been evicted: evict down to the quota, or as far as the pins
		// allow (new writes then fail with ErrQuotaExceeded).
		if err := s.makeRoom(ctx, 0); err != nil {
			s.log.Warn("held content over the quota", "used", s.used, "quota", s.quota, "err", err)
		}
	}
	return nil
}

// loadBlocks lists the blocks present. Block sizes come from the root
// records (badger only approximates the size of a value in its value log);
// blocks no record names (a fetch or import cut short) are read to learn
// theirs, in loadRecords.
func (s *Store) loadBlocks(ctx context.Context) error {
	return s.ds.Iterate(ctx, blockPrefix.String()+"/", true, func(k string, _ []byte, _ error) error {
		hash, err := blockHash(k)
		if err != nil {
			s.log.Warn("skipping unreadable block key", "key", k, "err", err)
			return nil
		}
		b := &blockMeta{key: string(hash), c: cid.NewCidV1(cid.Raw, hash), size: -1}
		s.blocks[b.key] = b
		return nil
	})
}

// loadRecords reads the root records that verify, adds the pinned ones
// only the pin file still has (and writes them back), and sizes the
// blocks no record names. It returns the records by root CID and the keys
// of damaged records.
func (s *Store) loadRecords(ctx context.Context) (map[string]rootRecord, []datastore.Key, error) {
	recs := make(map[string]rootRecord)
	var stale []datastore.Key
	err := s.ds.Iterate(ctx, rootPrefix.String()+"/", false, func(k string, v []byte, verr error) error {
		key := datastore.RawKey(k)
		rec, err := decodeRecord(v)
		if verr != nil {
			err = verr
		}
		if err == nil {
			_, err = cid.Decode(key.BaseNamespace())
		}
		if err != nil {
			s.log.Warn("dropping damaged root record", "key", k, "err", err)
			s.health.DroppedRecords++
			stale = append(stale, key)
			return nil
		}
		recs[key.BaseNamespace()] = rec
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if s.pinDir != "" {
		s.restorePins(ctx, recs)
	}
	for _, rec := range recs {
		for i, bs := range rec.Blocks {
			if bc, err := cid.Decode(bs); err == nil {
				if b := s.blocks[string(bc.Hash())]; b != nil && b.size < 0 {
					b.size = rec.Sizes[i]
				}
			}
		}
	}
	for key, b := range s.blocks {
		if b.size >= 0 {
			continue
		}
		v, err := s.ds.Get(ctx, dsKey(key))
		if err != nil {
			s.log.Warn("dropping unreadable loose block", "cid", b.c, "err", err)
			delete(s.blocks, key)
			if !s.readOnly {
				s.ds.Delete(ctx, dsKey(key))
			}
			continue
		}
		b.size = int64(len(v))
	}
	return recs, stale, nil
}

// restorePins adds to recs the pinned records that only the pin file has
// and writes them back to the database. The pin file is rewritten after
// load whenever it disagrees.
func (s *Store) restorePins(ctx context.Context, recs map[string]rootRecord) {
	pins, err := readPins(s.pinDir)
	if err != nil && !errors.Is(err, errNoPinFile) {
		s.log.Warn("pin file unreadable; rewriting it from the database", "err", err)
	}
	for k, rec := range pins {
		if _, ok := recs[k]; ok {
			continue
		}
		recs[k] = rec
		s.health.RestoredPins++
		s.log.Warn("pin restored from the pin file", "cid", k)
		if !s.readOnly {
			v, err := json.Marshal(rec)
			if err == nil {
				err = s.ds.Put(ctx, rootPrefix.ChildString(k), v)
			}
			if err != nil {
				s.log.Warn("writing a restored pin back failed", "cid", k, "err", err)
			}
		}
	}
	n := 0
	for _, rec := range recs {
		if rec.Pinned {
			n++
		}
	}
	if err != nil || n != len(pins) || s.health.RestoredPins > 0 {
		s.pinsDirty = true
	}
}

// decodeRoot builds a root from its record. Blocks the record names that
// are not held become missing blocks of it.
func (s *Store) decodeRoot(k string, rec rootRecord) (*rootMeta, error) {
	c, err := cid.Decode(k)
	if err != nil {
		return nil, err
	}
	rm := &rootMeta{c: c, pinned: rec.Pinned, used: time.Unix(0, rec.Used)}
	rm.saved = rm.used
	seen := make(map[string]bool, len(rec.Blocks))
	for i, bs := range rec.Blocks {
		bc, err := cid.Decode(bs)
		if err != nil {
			return nil, err
		}
		if rec.Sizes[i] < 0 {
			return nil, fmt.Errorf("block %s has size %d", bc, rec.Sizes[i])
		}
		b := s.blocks[string(bc.Hash())]
		if b == nil {
			b = &blockMeta{key: string(bc.Hash()), size: rec.Sizes[i], missing: true}
			s.blocks[b.key] = b
			s.nmissing++
			s.log.Warn("block of held content missing", "cid", bc, "root", c)
		}
		b.c = bc
		if b.size != rec.Sizes[i] {
			// Badger keeps the block's length; the record is believed
			// for accounting, and a read finds any disagreement.
			s.log.Warn("block size differs from its record", "cid", bc, "stored", b.size, "record", rec.Sizes[i])
		}
		if !seen[b.key] {
			seen[b.key] = true
			rm.blocks = append(rm.blocks, b)
			rm.size += b.size
		}
	}
	return rm, nil
}
