package meshtest

import (
	"time"

	"golang.org/x/sys/windows"
)

// CPUTime returns the user and kernel CPU time this process has used so far
// (GetProcessTimes): with the serving side in the same process, the CPU a
// transfer costs both ends.
func CPUTime() time.Duration {
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user); err != nil {
		return 0
	}
	// A Filetime counts 100 ns intervals.
	ticks := func(f windows.Filetime) int64 { return int64(f.HighDateTime)<<32 | int64(f.LowDateTime) }
	return time.Duration((ticks(kernel) + ticks(user)) * 100)
}
