//go:build unix

package meshtest

import (
	"time"

	"golang.org/x/sys/unix"
)

// CPUTime returns the user and system CPU time this process has used so far
// (getrusage): with the serving side in the same process, the CPU a transfer
// costs both ends.
func CPUTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
