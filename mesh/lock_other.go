//go:build !unix

package mesh

import (
	"fmt"
	"os"
)

// lockDataDir creates the lock file but cannot lock it on this platform:
// badger's own directory lock is then what stops a second node.
func lockDataDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mesh: data dir lock: %w", err)
	}
	return f, nil
}
