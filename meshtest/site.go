package meshtest

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
)

// Site is the content of a web site: file bytes by asset path (relative,
// slash-separated, as manifest.CheckPath wants). A Site is a plain map: build
// one by hand, with GenerateSite or DemoSite, or with ReadDir. An Origin
// reads it and never changes it; do not change it while an Origin serves it.
type Site map[string][]byte

// GenerateSite returns a site of files of the given sizes by path, their
// bytes drawn from a ChaCha8 generator keyed by seed and the path: the same
// bytes on every run and machine.
func GenerateSite(seed uint64, sizes map[string]int64) Site {
	s := Site{}
	for p, size := range sizes {
		h := fnv.New64a()
		h.Write([]byte(p))
		s[p] = testutil.Bytes(seed^h.Sum64(), size)
	}
	return s
}

// DemoSite returns the site of the demo and the benchmarks, generated from
// seed: a page, a script, a logo, a hero image, four photos and a video of
// videoSize bytes (the demo's default is 50 MiB: about 57.7 MB in all).
func DemoSite(seed uint64, videoSize int64) Site {
	sizes := map[string]int64{
		"app.js":       300 << 10,
		"img/hero.jpg": 2<<20 + 123,
		"img/logo.png": 40 << 10,
	}
	for i := range 4 {
		sizes[fmt.Sprintf("img/photo-%d.jpg", i)] = 700<<10 + int64(i)
	}
	sizes["video/intro.mp4"] = videoSize
	s := GenerateSite(seed, sizes)
	s["index.html"] = []byte("<!doctype html><title>meshcdn demo</title><img src=img/hero.jpg><video src=video/intro.mp4></video>\n")
	return s
}

// ReadDir reads every regular file under dir into a Site, skipping what
// manifest.FromDir skips: symbolic links, special files, and names that make
// an unsafe path.
func ReadDir(dir string) (Site, error) {
	s := Site{}
	err := filepath.WalkDir(dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, name)
		if err != nil {
			return err
		}
		p := filepath.ToSlash(rel)
		if d.IsDir() {
			if p != "." && manifest.CheckPath(p) != nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || manifest.CheckPath(p) != nil {
			return nil
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		s[p] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("meshtest: read %s: %w", dir, err)
	}
	return s, nil
}

// Size returns the bytes of all the site's files together.
func (s Site) Size() int64 {
	var n int64
	for _, b := range s {
		n += int64(len(b))
	}
	return n
}

// Paths returns the site's paths, sorted.
func (s Site) Paths() []string {
	ps := make([]string, 0, len(s))
	for p := range s {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// PathsFrom returns the site's paths, sorted, except that the path first
// comes first if the site has it: a page before the resources it names
// (CrowdConfig.Together).
func (s Site) PathsFrom(first string) []string {
	ps := s.Paths()
	if i := slices.Index(ps, first); i > 0 {
		ps = slices.Insert(slices.Delete(ps, i, i+1), 0, first)
	}
	return ps
}

// Manifest builds the site's manifest in memory, as manifest.FromDir would
// from the same files on disk: the same CIDs, sizes and content types (from
// the extension, else sniffed). It is parsed back from its JSON, as a client
// would, so that its paths are indexed.
func (s Site) Manifest(ctx context.Context) (*manifest.Manifest, error) {
	m := &manifest.Manifest{Version: manifest.Version, Profile: manifest.Profile}
	for _, p := range s.Paths() {
		if err := manifest.CheckPath(p); err != nil {
			return nil, fmt.Errorf("meshtest: manifest: %w", err)
		}
		a, err := manifest.FromReader(ctx, bytes.NewReader(s[p]))
		if err != nil {
			return nil, fmt.Errorf("meshtest: manifest: %s: %w", p, err)
		}
		a.Path = p
		a.Type = mime.TypeByExtension(path.Ext(p))
		if a.Type == "" {
			a.Type = http.DetectContentType(s[p])
		}
		m.Assets = append(m.Assets, a)
	}
	j, err := m.Marshal()
	if err != nil {
		return nil, fmt.Errorf("meshtest: manifest: %w", err)
	}
	m, err = manifest.Parse(j)
	if err != nil {
		return nil, fmt.Errorf("meshtest: manifest: %w", err)
	}
	return m, nil
}
