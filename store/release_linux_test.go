package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// mappedRSS is the resident bytes of this process's mappings of files
// under dir, from /proc/self/smaps.
func mappedRSS(t *testing.T, dir string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip("no /proc/self/smaps:", err)
	}
	defer f.Close()
	prefix := []byte(dir + "/")
	var in bool
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if _, _, ok := mappedUnder(line, prefix); ok {
			in = true
			continue
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.Equal(k, []byte("Rss")) {
			if in {
				kb, _ := strconv.ParseInt(string(bytes.Fields(v)[0]), 10, 64)
				total += kb << 10
			}
			in = false
		}
	}
	return total
}

// TestReleaseMapped: blocks written to a store on disk stay resident
// through badger's mappings until the store releases them; with
// Config.ReleaseMapped it does, by itself, and the blocks still read back.
func TestReleaseMapped(t *testing.T) {
	dir, err := filepath.Abs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Dir: dir, ReleaseMapped: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	c, err := s.Import(ctx, testutil.Reader(7, 12<<20), ImportOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	// The loop may already have run: count what the write made resident
	// from a fresh read of every block.
	if err := readLeaves(ctx, s, c); err != nil {
		t.Fatal(err)
	}
	before := mappedRSS(t, dir)
	if before < 8<<20 {
		t.Skipf("only %d bytes of the store's files resident after writing 12 MiB: nothing to release here", before)
	}
	deadline := time.Now().Add(20 * time.Second)
	for mappedRSS(t, dir) > before/4 {
		if time.Now().After(deadline) {
			t.Fatalf("resident mapped bytes: %d before, %d after 20 s; want the store to release them", before, mappedRSS(t, dir))
		}
		time.Sleep(20 * time.Millisecond) // the kernel's page tables have no event to wait on
	}
	t.Logf("resident mapped bytes: %d before, %d after", before, mappedRSS(t, dir))
	if err := readLeaves(ctx, s, c); err != nil {
		t.Fatalf("reading back after the release: %v", err)
	}
}

// readLeaves reads every leaf of c and checks the bytes add up.
func readLeaves(ctx context.Context, s *Store, c Content) error {
	leaves, err := Leaves(ctx, s, c.Root, c.Size)
	if err != nil {
		return err
	}
	var n int64
	for _, l := range leaves {
		b, err := s.Get(ctx, l.Cid)
		if err != nil {
			return err
		}
		n += int64(len(b.RawData()))
	}
	if n != c.Size {
		return fmt.Errorf("read %d bytes of %d", n, c.Size)
	}
	return nil
}
