package store_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

const crashEnv = "MESHCDN_STORE_CRASH_DIR"

// crashChild runs in a child process: it imports content into the store at
// the directory crashEnv names, printing each root once Import returns, until
// it is killed.
func crashChild() {
	s, err := store.New(store.Config{Dir: os.Getenv(crashEnv), Quota: 24 * mib})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for i := uint64(0); ; i++ {
		size := int64(1+i%5)*mib/2 + int64(i)
		c, err := s.Import(context.Background(), testutil.Reader(i, size), store.ImportOptions{Pin: i%7 == 0})
		if err != nil {
			fmt.Println("error", err)
			continue
		}
		fmt.Println("imported", c.Root, size, i%7 == 0)
	}
}

// TestCrashMidImport kills a process with SIGKILL while it imports, then
// reopens its store: the usage must equal the bytes of the blocks actually
// present, every block must verify, and every import that returned before
// the kill must be whole.
func TestCrashMidImport(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	finished := crashDuringImports(t, dir)

	ctx := context.Background()
	s := newBadger(t, dir, 24*mib)
	u := s.Usage()
	checkUsageMatchesBlocks(ctx, t, s, u)
	// Every pinned import that returned is still whole and pinned.
	pinned := map[string]bool{}
	for _, r := range s.Roots() {
		if r.Pinned {
			pinned[r.Cid.KeyString()] = true
		}
		if err := s.AddRoot(ctx, r.Cid, false); err != nil {
			t.Errorf("held root %s is not whole: %v", r.Cid, err)
		}
	}
	for _, d := range finished {
		if d.pinned && !pinned[d.root.KeyString()] {
			t.Errorf("pinned %s lost in the crash", d.root)
		}
	}
	t.Logf("killed after %d imports; reopened with %d roots, %d blocks, %d bytes", len(finished), u.Roots, u.Blocks, u.Used)
}

// crashImport is an import the crash child reported finished.
type crashImport struct {
	root   cid.Cid
	pinned bool
}

// crashDuringImports runs this test binary as the crash child importing
// into dir, kills it with SIGKILL once it has reported 40 finished imports
// (past the quota, so evictions happen too), and returns those.
func crashDuringImports(t *testing.T, dir string) []crashImport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var finished []crashImport
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if f[0] == "error" {
			continue
		}
		c, err := cid.Decode(f[1])
		if err != nil {
			t.Fatal(err)
		}
		finished = append(finished, crashImport{c, f[3] == "true"})
		if len(finished) == 40 { // past the quota, so evictions happen too
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(finished) < 40 {
		t.Fatalf("child finished only %d imports", len(finished))
	}
	return finished
}

// checkUsageMatchesBlocks checks that every block in s verifies, that u
// (s's usage on reopening) counts exactly the blocks present, and that it
// is within the quota.
func checkUsageMatchesBlocks(ctx context.Context, t *testing.T, s *store.Store, u store.Usage) {
	t.Helper()
	keys, err := s.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var present int64
	n := 0
	for k := range keys {
		b, err := s.Get(ctx, k)
		if err != nil {
			t.Fatalf("Get(%s) after the crash = %v", k, err)
		}
		present += int64(len(b.RawData()))
		n++
	}
	if present != u.Used || n != u.Blocks {
		t.Errorf("after the crash: Usage = %d bytes in %d blocks, present %d bytes in %d blocks", u.Used, u.Blocks, present, n)
	}
	if u.Used > 24*mib {
		t.Errorf("usage %d over the quota", u.Used)
	}
}

// TestCrashThenOpenReadOnly: after a SIGKILL, badger's memtable logs are
// left at their full mapped size, which badger refuses to open read-only;
// a store opened on a disk below the margin trims them as badger would and
// opens read-only, with every pinned import that returned whole.
func TestCrashThenOpenReadOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	pinned := killAfterImports(t, dir, 15)
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	if len(mems) == 0 {
		t.Fatal("the killed store left no memtable log: the test shows nothing")
	}

	disk := &fakeDisk{}
	disk.free.Store(mib) // too little for badger to open for writing
	s, err := store.New(store.Config{Dir: dir, Quota: 24 * mib, FreeSpace: disk.FreeSpace})
	if err != nil {
		t.Fatalf("New after a crash on a full disk = %v", err)
	}
	defer s.Close()
	if !s.Health().ReadOnly {
		t.Errorf("Health = %+v, want ReadOnly", s.Health())
	}
	ctx := context.Background()
	for _, c := range pinned {
		if !s.Holds(c) {
			t.Errorf("pinned %s lost", c)
		} else if err := s.AddRoot(ctx, c, true); err != nil {
			t.Errorf("pinned %s not whole: %v", c, err)
		}
	}
}

// killAfterImports runs this test binary as the crash child importing into
// dir, kills it with SIGKILL once it has reported n finished imports, and
// returns the roots of those that were pinned (at least one).
func killAfterImports(t *testing.T, dir string, n int) []cid.Cid {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pinned []cid.Cid
	done := 0
	sc := bufio.NewScanner(out)
	for done < n && sc.Scan() {
		f := strings.Fields(sc.Text())
		if f[0] != "imported" {
			continue
		}
		done++
		if f[3] == "true" {
			c, err := cid.Decode(f[1])
			if err != nil {
				t.Fatal(err)
			}
			pinned = append(pinned, c)
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if done < n || len(pinned) == 0 {
		t.Fatalf("the child imported %d (%d pinned) before the kill", done, len(pinned))
	}
	return pinned
}
