// Command footnode is the benchmark program's footprint node: a seed or an
// app in a process of its own that samples its own memory (see
// examples/bench/internal/node). The benchmark builds and runs it; it is not
// meant to be run by hand.
package main

import (
	"os"

	logging "github.com/ipfs/go-log/v2"

	"github.com/meshcdn/meshcdn/examples/bench/internal/node"
)

func main() {
	logging.SetAllLoggers(logging.LevelFatal)
	os.Exit(node.Main(os.Args[1:]))
}
