package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
	"github.com/ipfs/go-datastore"
)

// minOpenFree is the least free space with which a store opens its
// database for writing when the disk is below DiskMargin and badger
// cannot open it read-only (its logs need the replay that read-only mode
// refuses): the new log files' first pages and the memtable flush at
// Close.
const minOpenFree = 3 * memTableSize

// openDisk opens (or creates) the badger database in dir. With the disk
// below DiskMargin it opens read-only. A database badger cannot open is
// damaged: it is moved aside (never deleted), the blocks and records that
// verify are copied from it when badger can still read it, and the store
// starts from those, or empty, with its pins from the pin file.
func (s *Store) openDisk(dir string, free FreeSpaceFunc) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if free == nil {
		free = Statfs
	}
	s.guard = &diskGuard{dir: dir, free: free, margin: DiskMargin}
	s.pinDir = dir
	if s.guard.low() {
		return s.openFull(dir)
	}
	if err := checkTables(dir); err != nil {
		if !damaged(err) {
			return err
		}
		return s.moveAside(dir, err)
	}
	tail := s.salvageTail(dir)
	d, err := openBadgerKV(dir, false, s.guard, s.log)
	if err == nil {
		s.ds, s.closer = d, d
		s.restoreTail(tail)
		return nil
	}
	if !damaged(err) {
		return err
	}
	return s.moveAside(dir, err)
}

// openFull opens the database when the disk is below DiskMargin: read-only
// in badger if it can (after trimming the memtable logs a crash left at
// full size), else for writing with every write refused.
func (s *Store) openFull(dir string) error {
	avail, ferr := s.guard.freeNow()
	// Before badger maps them: reading a hole of a mapped file needs a
	// page of free space on some filesystems (tmpfs), SIGBUS without.
	if err := trimLogs(dir); err != nil {
		s.log.Warn("trimming the memtable logs failed", "err", err)
	}
	d, err := openBadgerKV(dir, true, s.guard, s.log)
	if err != nil && ferr == nil && avail >= minOpenFree {
		d, err = openBadgerKV(dir, false, s.guard, s.log)
	}
	if err != nil {
		return fmt.Errorf("%w: %d bytes free, and badger cannot open read-only: %v", ErrDiskFull, avail, err)
	}
	s.ds, s.closer = d, d
	s.readOnly = true
	s.health.ReadOnly = true
	s.log.Error("disk full: store opened read-only", "dir", dir, "free", avail, "margin", DiskMargin, "freeErr", ferr)
	return nil
}

// damaged reports whether badger failed to open for a reason of its
// database's own, rather than another process holding it, permissions or
// a full disk.
func damaged(err error) bool {
	t := err.Error()
	for _, s := range []string{"directory lock", "permission denied", "no space left", "read-only file system",
		"too many open files", "cannot allocate memory"} {
		if strings.Contains(t, s) {
			return false
		}
	}
	return !errors.Is(err, os.ErrPermission)
}

// moveAside moves a damaged database aside, opens a new one in its place and
// copies into it what verifies in the old one, if badger can read it.
func (s *Store) moveAside(dir string, openErr error) error {
	aside := dir + ".damaged-" + time.Now().UTC().Format("20060102T150405.000Z")
	if err := os.Rename(dir, aside); err != nil {
		return fmt.Errorf("badger cannot open the database (%v) and it cannot be moved aside: %w", openErr, err)
	}
	s.health.MovedAside = aside
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if recs, err := readPins(aside); err == nil {
		if err := writePins(dir, recs); err != nil {
			return err
		}
	}
	d, err := openBadgerKV(dir, false, s.guard, s.log)
	if err != nil {
		return err
	}
	s.ds, s.closer = d, d
	var copied int
	old, err := (*badgerKV)(nil), checkTables(aside)
	if err == nil {
		old, err = openBadgerKV(aside, true, s.guard, s.log)
	}
	if err == nil {
		copied = s.salvage(old, d)
		old.Close()
	} else {
		copied = s.salvageLogs(aside, d)
	}
	s.log.Error("damaged database moved aside; starting from what verifies in it",
		"dir", dir, "aside", aside, "err", openErr, "salvaged", copied)
	return nil
}

// salvage copies from a damaged database (open read-only) into a new one
// every block that matches its hash and every root record that passes its
// checksum, and returns how many entries it copied.
func (s *Store) salvage(from, to *badgerKV) int {
	ctx := context.Background()
	n := 0
	copyIf := func(prefix string, ok func(k string, v []byte) bool) {
		from.Iterate(ctx, prefix, false, func(k string, v []byte, err error) error {
			if err != nil || !ok(k, v) {
				return nil
			}
			if err := s.guard.allow(int64(len(v))); err != nil {
				return err
			}
			if err := to.Put(ctx, datastore.RawKey(k), v); err != nil {
				return err
			}
			n++
			return nil
		})
	}
	copyIf(blockPrefix.String()+"/", func(k string, v []byte) bool {
		hash, err := blockHash(k)
		return err == nil && checkHash(hash, v) == nil
	})
	copyIf(rootPrefix.String()+"/", func(k string, v []byte) bool {
		_, err := decodeRecord(v)
		return err == nil
	})
	return n
}

// checkTables reads the MANIFEST in dir and opens the index of every table
// it lists, as badger will: an error means badger would fail to open the
// database, and it should not be asked to, because badger leaves
// goroutines running when it fails after reading its MANIFEST.
func checkTables(dir string) error {
	f, err := os.Open(filepath.Join(dir, "MANIFEST"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new database
	}
	if err != nil {
		return err
	}
	defer f.Close()
	m, _, err := badger.ReplayManifestFile(f, 0)
	if err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	for id := range m.Tables {
		if err := checkTable(table.NewFilename(id, dir)); err != nil {
			return err
		}
	}
	return nil
}

// checkTable opens a table file's index, as badger does.
func checkTable(file string) (err error) {
	mf, err := z.OpenMmapFile(file, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer mf.Close(-1)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("table %s: %v", file, r)
		}
	}()
	_, err = table.OpenTable(mf, tableOptions(options.NoVerification))
	return err
}
