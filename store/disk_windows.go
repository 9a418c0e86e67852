//go:build windows

package store

import "golang.org/x/sys/windows"

// Statfs is the FreeSpaceFunc a Store uses when Config.FreeSpace is nil:
// the bytes GetDiskFreeSpaceEx says the caller may use (statfs(2)
// elsewhere).
func Statfs(dir string) (int64, error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return 0, err
	}
	var avail, total, free uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &total, &free); err != nil {
		return 0, err
	}
	return int64(avail), nil
}
