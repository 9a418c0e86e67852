//go:build unix

package mesh

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive lock on path (created if missing), held
// until the returned file is closed or the process ends: a second node on
// the same DataDir, in this process or another, fails with
// ErrDataDirInUse.
func lockDataDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mesh: data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (its lock %s is held)", ErrDataDirInUse, filepath.Dir(path), filepath.Base(path))
		}
		return nil, fmt.Errorf("mesh: data dir lock: %w", err)
	}
	return f, nil
}
