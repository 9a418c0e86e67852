// Command manifest prints the meshcdn manifest of a directory on stdout:
//
//	go run ./examples/manifest DIR > manifest.json
//
// Every regular file under DIR gets its CID under the unixfs-v1-2025 profile
// (the CID `ipfs add --profile unixfs-v1-2025` gives it), its size, its
// content type and, for files of more than 1 MiB, its inner DAG nodes. The
// format is documented in package manifest.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/meshcdn/meshcdn/manifest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: manifest DIR")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	m, err := manifest.FromDir(ctx, os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := m.Marshal()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
