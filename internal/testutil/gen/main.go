// Command gen writes the seeded test content of internal/testutil to stdout,
// so that another implementation can import the same bytes:
//
//	go run ./internal/testutil/gen -seed 7 -size 1048576 | ipfs add -Q --only-hash
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

func main() {
	seed := flag.Uint64("seed", 1, "generator seed")
	size := flag.Int64("size", 0, "bytes to write")
	flag.Parse()
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	if _, err := io.Copy(w, testutil.Reader(*seed, *size)); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
