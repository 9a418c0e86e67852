// Command manifest builds the meshcdn manifest of a directory and writes it
// to DIR/manifest.json, the file a site publishes beside its assets:
//
//	go run ./examples/manifest [-o NAME] [-seeds ADDR,ADDR] DIR
//
// Every regular file under DIR gets its CID under the unixfs-v1-2025 profile
// (the CID `ipfs add --profile unixfs-v1-2025` gives it), its size, its
// content type and, for files of more than 1 MiB, its inner DAG nodes. The
// format is documented in package manifest.
//
// A manifest never lists itself: the output file, the temporary file it is
// written through, and any other file in DIR that is itself a meshcdn
// manifest (an earlier output under another name) are left out. The output
// is written to a temporary file and renamed, so an origin never serves half
// a manifest. -o - prints it on stdout instead.
//
// -seeds names the site's seeds (multiaddrs ending in /p2p/ID, as
// examples/seed prints them): nodes that follow the site use them as
// bootstrap peers.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/meshcdn/meshcdn/manifest"
)

func main() {
	out := flag.String("o", "manifest.json", "output file, relative to DIR; - for stdout")
	seeds := flag.String("seeds", "", "comma-separated multiaddrs of the site's seeds, each ending in /p2p/ID")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: manifest [-o NAME] [-seeds ADDR,ADDR] DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, flag.Arg(0), *out, *seeds); err != nil {
		fmt.Fprintln(os.Stderr, "manifest:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, out, seeds string) error {
	exclude, err := earlierManifests(dir)
	if err != nil {
		return err
	}
	if out != "-" {
		exclude = append(exclude, out, out+".tmp")
	}
	m, err := manifest.FromDir(ctx, dir, exclude...)
	if err != nil {
		return err
	}
	if seeds != "" {
		m.Seeds = strings.Split(seeds, ",")
	}
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	if _, err := manifest.Parse(data); err != nil {
		return err // a bad -seeds entry
	}
	if out == "-" {
		_, err := os.Stdout.Write(data)
		return err
	}
	name := filepath.Join(dir, filepath.FromSlash(out))
	if err := os.WriteFile(name+".tmp", data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(name+".tmp", name); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s: %d assets, %d seeds\n", name, len(m.Assets), len(m.Seeds))
	return nil
}

// earlierManifests lists the .json files under dir that are meshcdn
// manifests, as paths relative to dir.
func earlierManifests(dir string) ([]string, error) {
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || !strings.HasSuffix(p, ".json") {
			return err
		}
		if info, err := d.Info(); err != nil || info.Size() > manifest.MaxSize {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Contains(data, []byte(`"`+manifest.Profile+`"`)) {
			return nil
		}
		if _, err := manifest.Parse(data); err != nil {
			return nil // some other JSON file: an asset like any other
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		found = append(found, filepath.ToSlash(rel))
		return nil
	})
	return found, err
}
