package mesh_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"

	"github.com/meshcdn/meshcdn/mesh"
)

// logDependencies logs one error through each kind of dependency logger:
// go-log's (boxo, kad-dht, pubsub) and gologshim's (go-libp2p).
func logDependencies(tag string) {
	golog.Logger("meshcdn-test-golog-" + tag).Error("golog record " + tag)
	gologshim.Logger("meshcdn-test-shim-" + tag).Error("gologshim record " + tag)
}

// TestDependencyLogsChild is run by TestDependencyLogsSilent in a child
// process: it starts a node without a Logger and makes the dependencies
// log.
func TestDependencyLogsChild(t *testing.T) {
	if os.Getenv("MESHCDN_LOG_CHILD") == "" {
		t.Skip("run by TestDependencyLogsSilent")
	}
	n, err := mesh.New(context.Background(), mesh.Config{Name: "logs", InMemory: true,
		ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp), MDNS: mesh.Off, NATPortMap: mesh.Off})
	if err != nil {
		t.Fatal(err)
	}
	logDependencies("child")
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDependencyLogsSilent: a process with a node whose Logger is nil
// writes nothing to stderr when go-log and gologshim loggers log; the same
// process with GOLOG_LOG_LEVEL set (the user asks go-log for output, so
// mesh leaves it alone) shows that they would.
func TestDependencyLogsSilent(t *testing.T) {
	if os.Getenv("MESHCDN_LOG_CHILD") != "" {
		t.Skip("in the child")
	}
	run := func(env ...string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestDependencyLogsChild$", "-test.count=1")
		// The child's go-log settings are the test's: none but env.
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "GOLOG_") && !strings.HasPrefix(kv, "IPFS_LOGGING") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, append(env, "MESHCDN_LOG_CHILD=1")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("child: %v\n%s\n%s", err, out, stderr.Bytes())
		}
		return stderr.String()
	}
	if got := run(); got != "" {
		t.Errorf("a node with a nil Logger let its dependencies write to stderr:\n%s", got)
	}
	got := run("GOLOG_LOG_LEVEL=error")
	if !strings.Contains(got, "golog record child") || !strings.Contains(got, "gologshim record child") {
		t.Errorf("with GOLOG_LOG_LEVEL set, stderr = %q, want both dependency records", got)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestDependencyLogsToLogger: dependency records go to the Config.Logger of
// the earliest-started open node that has one, and nowhere once it closes
// (to the next one, if any).
func TestDependencyLogsToLogger(t *testing.T) {
	for _, k := range []string{"GOLOG_LOG_LEVEL", "GOLOG_FILE", "GOLOG_OUTPUT", "GOLOG_URL", "IPFS_LOGGING"} {
		if os.Getenv(k) != "" {
			t.Skipf("%s is set: go-log is the user's", k)
		}
	}
	var bufA, bufB syncBuffer
	a := newNode(t, mesh.Config{Logger: slog.New(slog.NewTextHandler(&bufA, nil))})
	newNode(t, mesh.Config{Logger: slog.New(slog.NewTextHandler(&bufB, nil))})
	logDependencies("first")
	for _, want := range []string{"golog record first", "gologshim record first", "logger=meshcdn-test-golog-first", "logger=meshcdn-test-shim-first", "pkg=dep"} {
		if !strings.Contains(bufA.String(), want) {
			t.Errorf("the first node's logger has no %q:\n%s", want, bufA.String())
		}
	}
	if strings.Contains(bufB.String(), "record first") {
		t.Errorf("the second node's logger got the records too:\n%s", bufB.String())
	}
	a.Close()
	logDependencies("second")
	if strings.Contains(bufA.String(), "record second") {
		t.Errorf("a closed node's logger got dependency records:\n%s", bufA.String())
	}
	if !strings.Contains(bufB.String(), "golog record second") || !strings.Contains(bufB.String(), "gologshim record second") {
		t.Errorf("after the first node closed, the second's logger has no records:\n%s", bufB.String())
	}
}
