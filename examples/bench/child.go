package main

import (
	logging "github.com/ipfs/go-log/v2"

	"github.com/meshcdn/meshcdn/examples/bench/internal/node"
)

// childMain is the bench in a child process: the office scenario's side in
// its network namespace ("office"), or a footprint node ("seed", "app")
// when the small footnode binary could not be built.
func childMain(args []string) int {
	logging.SetAllLoggers(logging.LevelFatal)
	if len(args) > 0 && args[0] == "office" {
		return officeChild(args[1:])
	}
	return node.Main(args)
}
