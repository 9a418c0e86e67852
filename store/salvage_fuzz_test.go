package store

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"testing"
)

// logEntryBytes encodes one entry as badger writes it to a log file.
func logEntryBytes(meta byte, key string, version uint64, value []byte) []byte {
	var b []byte
	b = append(b, meta, 0)
	b = binary.AppendUvarint(b, uint64(len(key)+8))
	b = binary.AppendUvarint(b, uint64(len(value)))
	b = binary.AppendUvarint(b, 0)
	b = append(b, key...)
	b = binary.BigEndian.AppendUint64(b, math.MaxUint64-version)
	b = append(b, value...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func TestReadLog(t *testing.T) {
	log := make([]byte, logHeaderSize)
	log = append(log, logEntryBytes(0, "/a", 1, []byte("one"))...)
	bad := logEntryBytes(0, "/b", 2, []byte("two"))
	bad[len(bad)-6] ^= 1
	log = append(log, bad...)
	log = append(log, logEntryBytes(metaDelete, "/c", 3, nil)...)
	log = append(log, make([]byte, 100)...) // the unused end of the file
	type got struct {
		key     string
		e       logEntry
		damaged bool
	}
	var entries []got
	readLogReporting(log, func(k string, e logEntry, damaged bool) { entries = append(entries, got{k, e, damaged}) })
	if len(entries) != 2 || entries[0].key != "/a" || !bytes.Equal(entries[0].e.value, []byte("one")) || entries[0].e.version != 1 ||
		entries[0].damaged || entries[1].key != "/c" || !entries[1].e.deleted || !entries[1].damaged {
		t.Errorf("readLog = %+v, want /a, then /c deleted after the damaged /b", entries)
	}
	if end := logValidEnd(log); end != logHeaderSize+len(logEntryBytes(0, "/a", 1, []byte("one"))) {
		t.Errorf("logValidEnd = %d, want the end of /a", end)
	}
}

// FuzzReadLog: the log parsers never panic, never read past the input,
// and only hand out entries whose CRC holds.
func FuzzReadLog(f *testing.F) {
	good := append(make([]byte, logHeaderSize), logEntryBytes(0, "/blocks/X", 7, []byte("value"))...)
	f.Add(good)
	f.Add(append(good, logEntryBytes(metaTxn, "/k", 8, []byte("v"))...))
	f.Add(make([]byte, 30))
	f.Fuzz(func(t *testing.T, b []byte) {
		readLog(b, func(k string, e logEntry) {
			if len(e.value) > len(b) {
				t.Fatalf("entry value of %d bytes from %d bytes", len(e.value), len(b))
			}
		})
		if end := logValidEnd(b); end > len(b) || (len(b) >= logHeaderSize && end < logHeaderSize) {
			t.Fatalf("logValidEnd = %d of %d bytes", end, len(b))
		}
	})
}

// FuzzDecodePins: a pin file that decodes has a valid checksum and only
// pinned records that pass theirs.
func FuzzDecodePins(f *testing.F) {
	rec := rootRecord{V: 2, Pinned: true, Used: 1, Blocks: []string{"bafkreid7qoywk77r7rj3slobqfekdvs57qwuwh5d2z3sqsw52iabe3mqne"}, Sizes: []int64{5}}
	rec.Sum = rec.checksum()
	b, err := encodePins(map[string]rootRecord{"bafkreid7qoywk77r7rj3slobqfekdvs57qwuwh5d2z3sqsw52iabe3mqne": rec})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(pinFileMagic + "0\n{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decodePins(b)
		if err != nil {
			return
		}
		for k, r := range recs {
			if r.verify() != nil || !r.Pinned {
				t.Fatalf("decoded record %s = %+v", k, r)
			}
		}
	})
}
