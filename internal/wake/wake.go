// Package wake tells a timer that ran late because the process itself was
// not running: a laptop that slept (where the monotonic clock counts the
// sleep, as on Windows) or a stopped process. Such a timer's deadline says
// nothing of the remote side it was watching.
package wake

import "time"

// Late is how late a timer must run to count as one the process slept
// through: far beyond a loaded machine's scheduling delays.
const Late = 2 * time.Second

// Slept reports whether a timer due at due that runs at now ran Late or
// more after it was due.
func Slept(due, now time.Time) bool { return now.Sub(due) >= Late }
