//go:build unix && !openbsd && !netbsd

package store

import "syscall"

// Statfs is the FreeSpaceFunc a Store uses when Config.FreeSpace is nil:
// the available blocks of statfs(2) (GetDiskFreeSpaceEx on Windows).
func Statfs(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
