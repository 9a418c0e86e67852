package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The pin file keeps a second copy of the records of pinned content, outside
// badger, in the store's directory: a damaged table or MANIFEST that loses
// badger's copy (or the whole database) then costs the pinned content's
// blocks, which are fetched again, but never the pins. It is rewritten
// whole, through a temporary file and a rename, when pins change.
//
// Format: the line "meshcdn-pins 1 <crc32c of the rest, hex>\n" and then
// a JSON object from root CID to its record.
const (
	pinFileName  = "meshcdn-pins"
	pinFileMagic = "meshcdn-pins 1 "
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodePins(recs map[string]rootRecord) ([]byte, error) {
	body, err := json.Marshal(recs)
	if err != nil {
		return nil, err
	}
	head := pinFileMagic + strconv.FormatUint(uint64(crc32.Checksum(body, castagnoli)), 16) + "\n"
	return append([]byte(head), body...), nil
}

// errNoPinFile means the directory has no pin file (a new store, or one
// made before pin files).
var errNoPinFile = errors.New("no pin file")

// readPins reads the pin file in dir and checks its checksum and every
// record's.
func readPins(dir string) (map[string]rootRecord, error) {
	b, err := os.ReadFile(filepath.Join(dir, pinFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoPinFile
	}
	if err != nil {
		return nil, err
	}
	return decodePins(b)
}

// decodePins decodes a pin file and checks its checksum and every
// record's.
func decodePins(b []byte) (map[string]rootRecord, error) {
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 || !bytes.HasPrefix(b, []byte(pinFileMagic)) {
		return nil, errors.New("pin file has no header")
	}
	sum, err := strconv.ParseUint(string(b[len(pinFileMagic):nl]), 16, 32)
	body := b[nl+1:]
	if err != nil || uint32(sum) != crc32.Checksum(body, castagnoli) {
		return nil, errors.New("pin file fails its checksum")
	}
	recs := make(map[string]rootRecord)
	if err := json.Unmarshal(body, &recs); err != nil {
		return nil, fmt.Errorf("pin file: %w", err)
	}
	for k, rec := range recs {
		if err := rec.verify(); err != nil || !rec.Pinned {
			return nil, fmt.Errorf("pin file: record of %s: %v", k, err)
		}
	}
	return recs, nil
}

// writePins replaces the pin file in dir.
func writePins(dir string, recs map[string]rootRecord) error {
	b, err := encodePins(recs)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, pinFileName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, pinFileName))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// pinsChanged asks the pin writer to write the pin file. The caller holds
// s.mu.
func (s *Store) pinsChanged() {
	if s.pinDir == "" {
		return
	}
	s.pinsDirty = true
	select {
	case s.pinKick <- struct{}{}:
	default:
	}
}

// pinWriter writes the pin file when pins changed, at most once per
// pinFileEvery (a seed pinning a site asset by asset changes its pins many
// times a second), until the Store closes; Close writes the last changes.
// The database holds every pin first, so a crash before the file is written
// loses nothing; the file is the second copy.
func (s *Store) pinWriter() {
	defer s.wg.Done()
	for {
		select {
		case <-s.pinKick:
			s.flushPins()
		case <-s.quit:
			return
		}
		select {
		case <-time.After(pinFileEvery):
		case <-s.quit:
			return
		}
	}
}

// pinFileEvery is the least time between two writes of the pin file.
const pinFileEvery = time.Second

// flushPins writes the pin file if pins changed since it was last written.
func (s *Store) flushPins() {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	s.mu.Lock()
	if !s.pinsDirty || s.readOnly {
		s.mu.Unlock()
		return
	}
	s.pinsDirty = false
	recs := make(map[string]rootRecord)
	for _, rm := range s.roots {
		if rm.pinned {
			recs[rm.c.String()] = rm.record()
		}
	}
	s.mu.Unlock()
	if err := writePins(s.pinDir, recs); err != nil {
		s.log.Warn("writing the pin file failed", "err", err)
		s.mu.Lock()
		s.pinsDirty = true
		s.mu.Unlock()
	}
}
