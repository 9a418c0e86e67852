package store

import "golang.org/x/sys/unix"

// Statfs is the FreeSpaceFunc a Store uses when Config.FreeSpace is nil:
// the available blocks of statvfs(2) (NetBSD has no statfs).
func Statfs(dir string) (int64, error) {
	var st unix.Statvfs_t
	if err := unix.Statvfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Frsize), nil
}
