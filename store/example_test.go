package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/meshcdn/meshcdn/store"
)

func Example() {
	dir, err := os.MkdirTemp("", "meshcdn-store-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	// A store of at most 256 MiB of blocks in a badger database in dir.
	s, err := store.New(store.Config{Dir: dir, Quota: 256 << 20})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	ctx := context.Background()
	c, err := s.Import(ctx, strings.NewReader("hello, mesh\n"), store.ImportOptions{Pin: true})
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Root, c.Size)

	u := s.Usage()
	fmt.Println(u.Roots, u.Used, u.Pinned)
	// Output:
	// bafkreibybz4qs5ugjxeet7psjkxbceo2r575yehnlq6wkh3xthtrhctoh4 12
	// 1 12 12
}

func ExampleStore_Begin() {
	src, _ := store.New(store.Config{InMemory: true})
	defer src.Close()
	dst, _ := store.New(store.Config{InMemory: true})
	defer dst.Close()
	ctx := context.Background()
	c, _ := src.Import(ctx, strings.NewReader("some asset"), store.ImportOptions{})

	// A fetch copies blocks through a Txn so that none is evicted before
	// the content is whole, then names the content with Commit.
	t := dst.Begin()
	defer t.Discard()
	b, _ := src.Get(ctx, c.Root)
	if err := t.Put(ctx, b); err != nil {
		panic(err)
	}
	if err := t.Commit(ctx, c.Root, false); err != nil {
		panic(err)
	}
	fmt.Println(dst.Holds(c.Root))
	// Output: true
}

func ExampleStore_Health() {
	dir, err := os.MkdirTemp("", "meshcdn-store-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	// A disk with 512 KiB more than the store keeps free (FreeSpace is
	// statfs when nil; tests and fault injection set it).
	free := func(string) (int64, error) { return store.DiskMargin + 512<<10, nil }
	s, err := store.New(store.Config{Dir: dir, FreeSpace: free})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	ctx := context.Background()
	_, err = s.Import(ctx, strings.NewReader("fits"), store.ImportOptions{})
	fmt.Println(err)
	_, err = s.Import(ctx, io.LimitReader(rand.NewChaCha8([32]byte{}), 4<<20), store.ImportOptions{})
	fmt.Println(errors.Is(err, store.ErrDiskFull), s.Health().DiskFull)
	// Output:
	// <nil>
	// true true
}
