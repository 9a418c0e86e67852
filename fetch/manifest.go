package fetch

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/meshcdn/meshcdn/manifest"
)

// AssetTarget returns the Target of a manifest asset. base is the origin's
// base URL: the plain file is base/PATH (fetched with Range requests), or
// "" for no plain origin. gateway is a trustless gateway's base URL, or "".
//
// PATH is the asset's path as the manifest names the file, each segment
// escaped: a file named "100%.html" or "a?b" is asked for as "100%25.html"
// and "a%3Fb", as a static file server maps them back.
func AssetTarget(a manifest.Asset, base, gateway string) (Target, error) {
	t := Target{Cid: a.Cid, Size: a.Size, Nodes: a.Nodes, Gateway: gateway}
	if base != "" {
		u, err := assetURL(base, a.Path)
		if err != nil {
			return Target{}, fmt.Errorf("fetch: origin URL for %s: %w", a.Path, err)
		}
		t.URL = u
	}
	return t, nil
}

// assetURL joins base and the file path p, escaping each segment of p (a
// "%" in a file name is a character, not an escape).
func assetURL(base, p string) (string, error) {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return url.JoinPath(base, segs...)
}

// OpenPath opens the asset at path in m, its plain file served by the
// origin at base/PATH ("" for no origin). It is Open of AssetTarget; a path
// the manifest does not list fails with an error wrapping ErrNoRoute.
func (f *Fetcher) OpenPath(ctx context.Context, m *manifest.Manifest, base, path string) (*Reader, error) {
	a, ok := m.Lookup(path)
	if !ok {
		return nil, fmt.Errorf("fetch: open %q: %w: not in the manifest", path, ErrNoRoute)
	}
	t, err := AssetTarget(a, base, "")
	if err != nil {
		return nil, err
	}
	return f.Open(ctx, t)
}
