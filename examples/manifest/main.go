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
//
// Files and directories whose names begin with a dot (.git, .env) are left
// out, .well-known excepted, unless -dotfiles; symbolic links are left out
// (manifest.FromDir). What was left out is said on stderr.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshcdn/meshcdn/manifest"
)

func main() {
	out := flag.String("o", "manifest.json", "output file, relative to DIR; - for stdout")
	seeds := flag.String("seeds", "", "comma-separated multiaddrs of the site's seeds, each ending in /p2p/ID")
	dotfiles := flag.Bool("dotfiles", false, "list files and directories whose names begin with a dot too (.well-known always is)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: manifest [-o NAME] [-seeds ADDR,ADDR] [-dotfiles] DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, options{dir: flag.Arg(0), out: *out, seeds: *seeds, dotfiles: *dotfiles}); err != nil {
		fmt.Fprintln(os.Stderr, "manifest:", err)
		os.Exit(1)
	}
}

// options are the command's arguments.
type options struct {
	dir, out, seeds string
	dotfiles        bool
}

func run(ctx context.Context, o options) error {
	if err := o.check(); err != nil {
		return err
	}
	var seeds []string
	if o.seeds != "" {
		seeds = strings.Split(o.seeds, ",")
		if err := manifest.CheckSeeds(seeds); err != nil {
			return fmt.Errorf("-seeds: %w", err)
		}
	}
	left, err := leftOut(o.dir, o.dotfiles)
	if err != nil {
		return err
	}
	// The output being written again is no news.
	left.manifests = slices.DeleteFunc(left.manifests, func(p string) bool { return p == filepath.ToSlash(o.out) })
	exclude := left.exclude
	if o.out != "-" {
		exclude = append(exclude, o.out, o.out+".tmp")
	}
	m, err := manifest.FromDir(ctx, o.dir, exclude...)
	if err != nil {
		return err
	}
	m.Seeds = seeds
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	left.say(os.Stderr)
	if o.out == "-" {
		_, err := os.Stdout.Write(data)
		return err
	}
	name := filepath.Join(o.dir, filepath.FromSlash(o.out))
	if err := os.WriteFile(name+".tmp", data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(name+".tmp", name); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s: %d assets, %d seeds\n", name, len(m.Assets), len(m.Seeds))
	return nil
}

// check refuses a DIR that is not a directory and an -o outside it.
func (o options) check() error {
	info, err := os.Stat(o.dir)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("%s is not a directory: give the site's directory", o.dir)
	}
	if o.out != "-" && (!filepath.IsLocal(o.out) || manifest.CheckPath(filepath.ToSlash(o.out)) != nil) {
		return fmt.Errorf("-o %q: a file name under DIR (the manifest is published beside the assets), or - for stdout", o.out)
	}
	return nil
}

// left is what a manifest of a directory leaves out: exclude lists the
// paths (relative to the directory, slash-separated) to pass to
// manifest.FromDir; the rest counts what is said.
type left struct {
	exclude   []string
	manifests []string // earlier meshcdn manifests
	dotfiles  int      // files under a name beginning with a dot
	links     int      // symbolic links (FromDir skips them)
}

// say tells w what was left out.
func (l left) say(w io.Writer) {
	for _, m := range l.manifests {
		fmt.Fprintf(w, "left out %s: a meshcdn manifest\n", m)
	}
	if l.dotfiles > 0 {
		fmt.Fprintf(w, "left out %d files under names beginning with a dot (-dotfiles lists them)\n", l.dotfiles)
	}
	if l.links > 0 {
		fmt.Fprintf(w, "left out %d symbolic links: copy what they point to into the site to list it\n", l.links)
	}
}

// leftOut walks dir for what its manifest leaves out: earlier manifests,
// symbolic links and, unless dotfiles, files under a name beginning with a
// dot but .well-known.
func leftOut(dir string, dotfiles bool) (left, error) {
	var l left
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case err != nil:
			return err
		case d.Type()&fs.ModeSymlink != 0:
			l.links++
		case !d.Type().IsRegular():
		case !dotfiles && dotted(rel):
			l.dotfiles++
			l.exclude = append(l.exclude, rel)
		case isManifest(p):
			l.manifests = append(l.manifests, rel)
			l.exclude = append(l.exclude, rel)
		}
		return nil
	})
	return l, err
}

// dotted reports whether a part of the slash-separated path rel begins
// with a dot (but .well-known, which sites serve).
func dotted(rel string) bool {
	for _, part := range strings.Split(rel, "/") {
		if strings.HasPrefix(part, ".") && part != ".well-known" {
			return true
		}
	}
	return false
}

// isManifest reports whether the file at p is a meshcdn manifest.
func isManifest(p string) bool {
	if !strings.HasSuffix(p, ".json") {
		return false
	}
	if info, err := os.Stat(p); err != nil || info.Size() > manifest.MaxSize {
		return false
	}
	data, err := os.ReadFile(p)
	if err != nil || !bytes.Contains(data, []byte(`"`+manifest.Profile+`"`)) {
		return false
	}
	_, err = manifest.Parse(data)
	return err == nil // else some other JSON file: an asset like any other
}
