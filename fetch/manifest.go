package fetch

import (
	"context"
	"fmt"
	"net/url"

	"github.com/meshcdn/meshcdn/manifest"
)

// AssetTarget returns the Target of a manifest asset. base is the origin's
// base URL: the plain file is base/PATH (fetched with Range requests), or
// "" for no plain origin. gateway is a trustless gateway's base URL, or "".
func AssetTarget(a manifest.Asset, base, gateway string) (Target, error) {
	t := Target{Cid: a.Cid, Size: a.Size, Nodes: a.Nodes, Gateway: gateway}
	if base != "" {
		u, err := url.JoinPath(base, a.Path)
		if err != nil {
			return Target{}, fmt.Errorf("fetch: origin URL for %s: %w", a.Path, err)
		}
		t.URL = u
	}
	return t, nil
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
