//go:build fault && linux

package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

const fullDiskEnv = "MESHCDN_STORE_FULL_DISK_DIR"

func init() { children[fullDiskEnv] = fullDiskChild }

// fill writes a file in dir until the filesystem has at most left bytes
// free, as another program filling the disk would.
func fill(t *testing.T, dir string, left int64) {
	t.Helper()
	free, err := store.Statfs(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "filler"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for n := free - left; n > 0; n -= int64(len(buf)) {
		if int64(len(buf)) > n {
			buf = buf[:n]
		}
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

type imported struct {
	root cid.Cid
	data []byte
}

// importUntilFull imports 4 MiB files, pinned, until the store refuses one,
// and returns those it took and the error of the one it refused.
func importUntilFull(t *testing.T, s *store.Store, seed uint64) ([]imported, error) {
	t.Helper()
	var done []imported
	for i := range 1000 {
		data := testutil.Bytes(seed+uint64(i), 4*mib+uint64ToSize(i))
		c, err := s.Import(context.Background(), bytes.NewReader(data), store.ImportOptions{Pin: true})
		if err != nil {
			return done, err
		}
		done = append(done, imported{c.Root, data})
	}
	t.Fatal("the disk never filled")
	return nil, nil
}

func uint64ToSize(i int) int64 { return int64(i) * 1000 }

func checkImported(t *testing.T, s *store.Store, done []imported) {
	t.Helper()
	for _, d := range done {
		if !s.Holds(d.root) {
			t.Errorf("pinned %s lost", d.root)
			continue
		}
		if !bytes.Equal(readAll(t, s, d.root, int64(len(d.data))), d.data) {
			t.Fatalf("pinned %s reads back WRONG BYTES", d.root)
		}
	}
	pinned := 0
	for _, r := range s.Roots() {
		if r.Pinned {
			pinned++
		}
	}
	if pinned != len(done) {
		t.Errorf("%d pinned roots, want %d", pinned, len(done))
	}
}

// TestFaultDiskFull fills a real filesystem (a tmpfs of DiskMargin + 48
// MiB) through the store and then with another file: imports fail with
// ErrDiskFull, the process lives, what was stored reads back right and
// stays pinned; reopened on the full disk, the store is read-only and
// serves it; with space again, it writes again.
func TestFaultDiskFull(t *testing.T) {
	mnt := testutil.MountTmpfs(t, store.DiskMargin+48*mib)
	dir := filepath.Join(mnt, "blocks")
	s, err := store.New(store.Config{Dir: dir, Quota: -1})
	if err != nil {
		t.Fatal(err)
	}
	done, err := importUntilFull(t, s, 1)
	if !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("import on a full disk = %v, want ErrDiskFull", err)
	}
	if len(done) < 5 {
		t.Fatalf("only %d imports fitted on the disk", len(done))
	}
	free, _ := store.Statfs(mnt)
	t.Logf("%d imports of 4 MiB fitted; %d bytes free; refused with: %v", len(done), free, err)
	if !s.Health().DiskFull {
		t.Errorf("Health = %+v, want DiskFull", s.Health())
	}
	checkImported(t, s, done)

	// Another program takes all but 12 MiB: below the margin, above what
	// badger needs to close.
	fill(t, mnt, 12*mib)
	if err := s.Put(context.Background(), blocks.NewBlock(testutil.Bytes(9, 100<<10))); !errors.Is(err, store.ErrDiskFull) {
		t.Errorf("Put with 12 MiB free = %v, want ErrDiskFull", err)
	}
	checkImported(t, s, done)
	if err := s.Close(); err != nil {
		t.Fatalf("Close on a full disk = %v", err)
	}

	// Restart on the full disk: read-only, serving everything.
	s, err = store.New(store.Config{Dir: dir, Quota: -1})
	if err != nil {
		t.Fatalf("New on a full disk = %v", err)
	}
	if !s.Health().ReadOnly {
		t.Errorf("Health on a full disk = %+v, want ReadOnly", s.Health())
	}
	checkImported(t, s, done)
	if _, err := s.Import(context.Background(), bytes.NewReader(testutil.Bytes(5, mib)), store.ImportOptions{}); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Import into a read-only store = %v, want ErrReadOnly", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Completely full (not a byte left): still read-only, still serving.
	fill(t, mnt, 0)
	s, err = store.New(store.Config{Dir: dir, Quota: -1})
	if err != nil {
		t.Fatalf("New on a disk with no byte free = %v", err)
	}
	if !s.Health().ReadOnly {
		t.Errorf("Health with no byte free = %+v, want ReadOnly", s.Health())
	}
	checkImported(t, s, done)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Space again (the filler removed, the filesystem grown): writable,
	// nothing lost.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT, fmt.Sprintf("size=%d", store.DiskMargin+96*mib)); err != nil {
		t.Fatal(err)
	}
	s = newBadger(t, dir, -1)
	if h := s.Health(); h.ReadOnly || h.DiskFull {
		t.Errorf("Health with space again = %+v", h)
	}
	checkImported(t, s, done)
	more, err := importUntilFull(t, s, 500)
	if !errors.Is(err, store.ErrDiskFull) || len(more) == 0 {
		t.Errorf("with space again: %d imports, then %v", len(more), err)
	}
}

// fullDiskChild runs in a child process: it fills the filesystem of the
// directory fullDiskEnv names through a store whose free-space check is
// defeated (it is told the disk is empty): the store without its margin.
func fullDiskChild() {
	s, err := store.New(store.Config{Dir: os.Getenv(fullDiskEnv), Quota: -1,
		FreeSpace: func(string) (int64, error) { return 1 << 40, nil }})
	if err != nil {
		fmt.Println("new", err)
		os.Exit(1)
	}
	for i := range 1000 {
		_, err := s.Import(context.Background(), testutil.Reader(uint64(i), 4*mib), store.ImportOptions{Pin: true})
		if err != nil {
			fmt.Println("import error:", err)
			break
		}
	}
	fmt.Println("close error:", s.Close())
}

// TestFaultDiskFullWithoutMargin is the control of TestFaultDiskFull: the
// same store with its free-space check defeated, in a child process,
// fills the tmpfs. Badger writes through memory maps, so the process dies
// of SIGBUS (or, if it gets an error first, cannot close cleanly): what
// the margin prevents.
func TestFaultDiskFullWithoutMargin(t *testing.T) {
	mnt := testutil.MountTmpfs(t, store.DiskMargin+48*mib)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fullDiskEnv+"="+filepath.Join(mnt, "blocks"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	died := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled()
	text := out.String()
	t.Logf("child: %v; output (%d bytes): %.600s", err, len(text), text)
	switch {
	case strings.Contains(text, "SIGBUS"):
		t.Logf("without the margin the process died of SIGBUS")
	case died:
		t.Logf("without the margin the process died of %v", ee.Sys().(syscall.WaitStatus).Signal())
	case err != nil || strings.Contains(text, "close error: store: close"):
		t.Logf("without the margin the store failed: %v", err)
	default:
		t.Errorf("without the margin the store filled the disk and closed cleanly: the control shows nothing")
	}
}

// TestFaultCrashThenDiskFull: a process importing into a store is killed
// with SIGKILL, another program then takes every byte of the disk, and the
// store is opened again: read-only (its memtable logs, left at full size by
// the kill, are trimmed as badger would), with every pinned import that
// returned before the kill whole and readable.
func TestFaultCrashThenDiskFull(t *testing.T) {
	mnt := testutil.MountTmpfs(t, store.DiskMargin+64*mib)
	dir := filepath.Join(mnt, "blocks")
	pinned := killAfterImports(t, dir, 20)
	fill(t, mnt, 0)
	if free, _ := store.Statfs(mnt); free > 64<<10 {
		t.Fatalf("%d bytes still free", free)
	}

	s, err := store.New(store.Config{Dir: dir, Quota: 24 * mib})
	if err != nil {
		t.Fatalf("New after a crash on a disk with no byte free = %v", err)
	}
	if !s.Health().ReadOnly {
		t.Errorf("Health = %+v, want ReadOnly", s.Health())
	}
	ctx := context.Background()
	roots := map[string]store.RootInfo{}
	for _, r := range s.Roots() {
		roots[r.Cid.KeyString()] = r
	}
	for _, c := range pinned {
		r, ok := roots[c.KeyString()]
		if !ok || !r.Pinned {
			t.Errorf("pinned %s lost", c)
			continue
		}
		if err := s.AddRoot(ctx, c, true); err != nil {
			t.Errorf("pinned %s not whole: %v", c, err)
		}
	}
	keys, err := s.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		if _, err := s.Get(ctx, k); err != nil {
			t.Errorf("Get(%s) = %v", k, err)
		}
	}
	t.Logf("killed after 20 imports (%d pinned); reopened read-only with %+v", len(pinned), s.Usage())
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}
