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
	a := logEntryBytes(0, "/blocks/A", 1, []byte("one"))
	log = append(log, a...)
	bad := logEntryBytes(0, "/blocks/B", 2, []byte("two"))
	bad[len(bad)-6] ^= 1 // in the value
	log = append(log, bad...)
	log = append(log, logEntryBytes(metaDelete, "/blocks/C", 3, nil)...)
	badHeader := logEntryBytes(0, "/blocks/D", 4, []byte("four"))
	badHeader[3] ^= 0x7f // the value's length
	log = append(log, badHeader...)
	log = append(log, logEntryBytes(0, "/meshcdn/store/root/E", 5, []byte("five"))...)
	log = append(log, make([]byte, 100)...) // the unused end of the file
	type got struct {
		key     string
		e       logEntry
		damaged bool
	}
	var entries []got
	readLogReporting(log, func(k string, e logEntry, damaged bool) { entries = append(entries, got{k, e, damaged}) })
	if len(entries) != 3 || entries[0].key != "/blocks/A" || !bytes.Equal(entries[0].e.value, []byte("one")) || entries[0].e.version != 1 ||
		entries[0].damaged || entries[1].key != "/blocks/C" || !entries[1].e.deleted || !entries[1].damaged ||
		entries[2].key != "/meshcdn/store/root/E" || !bytes.Equal(entries[2].e.value, []byte("five")) {
		t.Errorf("readLog = %+v, want A, then C deleted after the damaged B, then E after D's damaged header", entries)
	}
	if end := logValidEnd(log); end != logHeaderSize+len(a) {
		t.Errorf("logValidEnd = %d, want the end of A", end)
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
