// Command demo will run a whole meshcdn mesh on loopback: an HTTP origin, a
// seed and a flash crowd of app peers, and print the offload ratio. The mesh
// package it needs has not landed yet; until then it imports a generated
// asset into a temporary store and prints what a peer would announce.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	fmt.Println("meshcdn demo: the full mesh demo (origin, seed, 20 app peers) is not built yet.")
	dir, err := os.MkdirTemp("", "meshcdn-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := store.New(store.Config{Dir: dir, Quota: 64 << 20})
	if err != nil {
		return err
	}
	defer s.Close()
	const size = 10<<20 + 7
	c, err := s.Import(context.Background(), testutil.Reader(7, size), store.ImportOptions{Pin: true})
	if err != nil {
		return err
	}
	u := s.Usage()
	fmt.Printf("imported %d bytes as %s (%d blocks, %d bytes stored, quota %d)\n", c.Size, c.Root, u.Blocks, u.Used, u.Quota)
	return nil
}
