package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

const removeDirEnv = "MESHCDN_STORE_REMOVE_DIR"

// removeDirChild runs in a child process: it opens a store without a
// Logger in the directory removeDirEnv names, writes to it, removes the
// directory, tries a write, and closes the store, printing what each step
// returned and how long Close took.
func removeDirChild() {
	ctx := context.Background()
	dir := os.Getenv(removeDirEnv)
	s, err := store.New(store.Config{Dir: dir})
	if err != nil {
		fmt.Println("new", err)
		os.Exit(1)
	}
	if _, err := s.Import(ctx, testutil.Reader(1, 3*mib), store.ImportOptions{Pin: true}); err != nil {
		fmt.Println("import", err)
		os.Exit(1)
	}
	for i := range 50 { // small blocks, so that badger's memtable has something to flush
		s.Put(ctx, blocks.NewBlock(testutil.Bytes(uint64(100+i), 1000)))
	}
	// As rm -rf would, again while the store writes files into it (its
	// pin file, badger's tables).
	for i := 0; ; i++ {
		err := os.RemoveAll(dir)
		if err == nil {
			break
		}
		if i == 100 {
			fmt.Println("remove", err)
			os.Exit(1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The free space is cached for a second.
	time.Sleep(1100 * time.Millisecond)
	err = s.Put(ctx, blocks.NewBlock(testutil.Bytes(7, 2*mib)))
	fmt.Printf("put %v diskfull=%v\n", err, errors.Is(err, store.ErrDiskFull))
	start := time.Now()
	err = s.Close()
	fmt.Printf("close %v took=%d\n", err != nil, time.Since(start).Milliseconds())
	_, serr := os.Stat(dir)
	fmt.Printf("dir-exists %v\n", serr == nil)
}

// TestCloseAfterDirRemoved: the data directory is removed under an open
// store. Writes fail with ErrDiskFull, Close returns an error within a few
// seconds (badger, whose last memtable flush fails, would retry forever),
// the directory stays removed, and nothing is printed (no Logger).
func TestCloseAfterDirRemoved(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), removeDirEnv+"="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.String()
	t.Logf("child: %s", out)
	if err != nil {
		t.Fatalf("child = %v (Close hung?); stderr %d bytes: %.2000s", err, stderr.Len(), stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("the store printed %d bytes to stderr without a Logger: %.2000s", stderr.Len(), stderr.String())
	}
	if !strings.Contains(out, "diskfull=true") {
		t.Errorf("Put after the directory was removed did not fail with ErrDiskFull: %s", out)
	}
	var closeErr bool
	var took int
	for _, line := range strings.Split(out, "\n") {
		fmt.Sscanf(line, "close %t took=%d", &closeErr, &took)
	}
	if !closeErr {
		t.Errorf("Close after the directory was removed returned no error")
	}
	if took > 5000 {
		t.Errorf("Close took %d ms, want a few seconds at most", took)
	}
	if !strings.Contains(out, "dir-exists false") {
		t.Errorf("the removed directory came back: %s", out)
	}
}

// recorder is a slog.Handler that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	recs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	r.recs = append(r.recs, b.String())
	return nil
}

// has reports whether a record with the message msg came.
func (r *recorder) has(msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if rec == msg || strings.HasPrefix(rec, msg+" ") {
			return true
		}
	}
	return false
}

func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &withAttrs{r, as}
}
func (r *recorder) WithGroup(string) slog.Handler { return r }

type withAttrs struct {
	r  *recorder
	as []slog.Attr
}

func (w *withAttrs) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (w *withAttrs) Handle(ctx context.Context, rec slog.Record) error {
	rec.AddAttrs(w.as...)
	return w.r.Handle(ctx, rec)
}
func (w *withAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &withAttrs{w.r, append(append([]slog.Attr(nil), w.as...), as...)}
}
func (w *withAttrs) WithGroup(string) slog.Handler { return w }

// TestBadgerLogsGoToLogger: badger's own logs reach Config.Logger, marked
// as badger's.
func TestBadgerLogsGoToLogger(t *testing.T) {
	rec := &recorder{}
	s, err := store.New(store.Config{Dir: t.TempDir(), Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(context.Background(), testutil.Reader(2, mib), store.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, r := range rec.recs {
		if strings.HasPrefix(r, "badger ") && strings.Contains(r, "from=badger") {
			n++
		}
	}
	if n == 0 {
		t.Errorf("no badger log reached the Logger; it got %q", rec.recs)
	}
}
