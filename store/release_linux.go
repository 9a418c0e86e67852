package store

import (
	"bufio"
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// releaseMapped asks the kernel to page out (madvise MADV_PAGEOUT) every
// mapping of this process whose file lies under dir, and returns the bytes
// of address space advised. Badger maps its value log and tables and
// writes the value log through its mapping, so every block written or read
// stays resident (RssFile) until the kernel is short of memory: a 30 MiB
// fetch left an app 32 MiB larger for good. Paging out loses nothing (dirty
// pages are written back first, and a later access faults the page in
// again); a range unmapped meanwhile makes madvise fail, which is ignored.
func releaseMapped(dir string) (int64, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	prefix := []byte(dir + "/")
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, ok := mappedUnder(sc.Bytes(), prefix)
		if !ok {
			continue
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_PAGEOUT); e == 0 {
			total += int64(end - start)
		}
	}
	return total, sc.Err()
}

// mappedUnder parses a line of /proc/self/maps ("start-end perms offset dev
// inode path") and reports its range if its path starts with prefix.
func mappedUnder(line, prefix []byte) (start, end uintptr, ok bool) {
	i := bytes.IndexByte(line, '/')
	if i < 0 || !bytes.HasPrefix(line[i:], prefix) {
		return 0, 0, false
	}
	rng, _, _ := bytes.Cut(line, []byte(" "))
	a, b, found := bytes.Cut(rng, []byte("-"))
	if !found {
		return 0, 0, false
	}
	lo, err1 := strconv.ParseUint(string(a), 16, 64)
	hi, err2 := strconv.ParseUint(string(b), 16, 64)
	if err1 != nil || err2 != nil || hi <= lo {
		return 0, 0, false
	}
	return uintptr(lo), uintptr(hi), true
}
