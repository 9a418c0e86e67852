package store

import (
	"path/filepath"
	"time"
)

// DefaultReleaseMapped is a suggested Config.ReleaseMapped for a node that
// fetches more than it serves (the mesh package's app role uses it).
const DefaultReleaseMapped = 20 * time.Second

// releaseLoop gives the pages of the database's memory-mapped files back
// to the kernel every interval (see Config.ReleaseMapped), until Close.
func (s *Store) releaseLoop(dir string, every time.Duration) {
	defer s.wg.Done()
	abs, err := filepath.Abs(dir)
	if err != nil {
		s.log.Warn("releasing mapped pages: no absolute path", "dir", dir, "err", err)
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		if n, err := releaseMapped(abs); err != nil {
			s.log.Debug("releasing mapped pages", "err", err)
		} else if n > 0 {
			s.log.Debug("released mapped pages", "bytes", n)
		}
	}
}
