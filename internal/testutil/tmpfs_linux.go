package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of size bytes in a directory of t.TempDir(),
// unmounted when t ends, and returns its path: a small real filesystem for
// tests to fill. It skips t when the process cannot mount (not root, or no
// CAP_SYS_ADMIN); the fault suite runs as root in .ci/run.
func MountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs to fill (the fault suite runs as root in .ci/run)")
	}
	dir, err := mountTmpfs(t, size)
	if err != nil {
		t.Skipf("cannot mount a tmpfs (%v): this test needs CAP_SYS_ADMIN", err)
	}
	return dir
}

// TryTmpfs is MountTmpfs that returns "" instead of skipping t, for tests
// that leave out only their disk-full part without a tmpfs.
func TryTmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir, err := mountTmpfs(t, size)
	if err != nil {
		t.Logf("cannot mount a tmpfs (%v): no disk-full faults", err)
		return ""
	}
	return dir
}

func mountTmpfs(t testing.TB, size int64) (string, error) {
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		return "", err
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir, nil
}
