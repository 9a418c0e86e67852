package store

import "golang.org/x/sys/unix"

// Statfs is the FreeSpaceFunc a Store uses when Config.FreeSpace is nil:
// the available blocks of statfs(2).
func Statfs(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.F_bavail * int64(st.F_bsize), nil
}
