package mesh

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/manifest"
)

// GatewayConfig configures a Gateway.
type GatewayConfig struct {
	// Manifest maps the paths the gateway serves. Nil serves only /ipfs/CID.
	// Replace it later with SetManifest.
	Manifest *manifest.Manifest

	// AllowRemote lets clients on other machines use the gateway. Default
	// false: requests from addresses other than loopback get 403, even if
	// the gateway was bound to a wider address by mistake.
	AllowRemote bool
}

// Gateway is a local HTTP gateway: an http.Handler that serves the assets of
// a manifest by path (GET /img/logo.png) and any content by CID (GET
// /ipfs/CID), fetched through the node, with Range requests, ETags from CIDs
// (If-None-Match gives 304), HEAD and the manifest's content types. A desktop
// webview or Electron renderer loads assets from it. Unknown paths are 404,
// unsafe paths 400, other methods 405. Serve it on 127.0.0.1: see
// ListenGateway in examples/desktop.
type Gateway struct {
	n           *Node
	m           atomic.Pointer[manifest.Manifest]
	allowRemote bool
}

// Gateway returns a gateway serving through the node.
func (n *Node) Gateway(cfg GatewayConfig) *Gateway {
	g := &Gateway{n: n, allowRemote: cfg.AllowRemote}
	g.m.Store(cfg.Manifest)
	return g
}

// SetManifest replaces the manifest the gateway serves paths from.
func (g *Gateway) SetManifest(m *manifest.Manifest) { g.m.Store(m) }

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.allowRemote && !isLoopback(r.RemoteAddr) {
		http.Error(w, "meshcdn gateway: loopback clients only", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	m := g.m.Load()
	if rest, ok := strings.CutPrefix(p, "/ipfs/"); ok {
		c, err := cid.Decode(strings.TrimSuffix(rest, "/"))
		if err != nil {
			http.Error(w, "bad CID", http.StatusBadRequest)
			return
		}
		typ := ""
		if m != nil {
			for _, a := range m.Assets {
				if a.Cid.Equals(c) {
					typ = a.Type
					break
				}
			}
		}
		w.Header().Set("Cache-Control", "public, max-age=29030400, immutable")
		rd, err := g.n.Open(r.Context(), c)
		g.serve(w, r, rd, err, c, typ)
		return
	}
	if m == nil {
		http.NotFound(w, r)
		return
	}
	rel := strings.TrimPrefix(p, "/")
	if rel == "" || strings.HasSuffix(rel, "/") {
		rel += "index.html"
	}
	if err := manifest.CheckPath(rel); err != nil {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	a, ok := m.Lookup(rel)
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	t, err := g.n.target(a)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rd, err := g.n.fetcher.Open(r.Context(), t)
	g.serve(w, r, rd, err, a.Cid, a.Type)
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, rd *fetch.Reader, err error, c cid.Cid, typ string) {
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, ErrClosed) || errors.Is(err, fetch.ErrClosed) {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), status)
		return
	}
	defer rd.Close()
	w.Header().Set("Etag", `"`+c.String()+`"`)
	w.Header().Set("X-Ipfs-Path", "/ipfs/"+c.String())
	if typ != "" {
		w.Header().Set("Content-Type", typ)
	}
	if rd.Size() < 0 {
		// Content opened by CID alone: its size comes with its first
		// block (the DAG root, or the only leaf).
		var one [1]byte
		if _, err := io.ReadFull(rd, one[:]); err != nil && !errors.Is(err, io.EOF) {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if _, err := rd.Seek(0, io.SeekStart); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	// ServeContent answers If-None-Match from the ETag, HEAD and Range
	// requests; it learns the size by seeking to the end.
	http.ServeContent(w, r, "", noModTime, rd)
}

var noModTime time.Time

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
