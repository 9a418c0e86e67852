package manifest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/store"
)

const (
	// Version is the manifest format version this package reads and writes.
	Version = 1
	// Profile names the import parameters every CID of a manifest follows.
	Profile = "unixfs-v1-2025"
	// MaxSize is the most bytes Read accepts: 64 MiB holds about a million
	// small assets or 1 TiB of large ones.
	MaxSize = 64 << 20
	// MaxPathLen is the longest asset path accepted, in bytes.
	MaxPathLen = 1024
	// MaxAssetSize is the largest asset size accepted: 1 PiB.
	MaxAssetSize = 1 << 50
	// MaxSeeds is the most entries of Seeds accepted.
	MaxSeeds = 64
	// MaxSeedLen is the longest entry of Seeds accepted, in bytes.
	MaxSeedLen = 1024
)

var (
	// ErrUnsupportedVersion means the manifest's version is not Version.
	ErrUnsupportedVersion = errors.New("manifest: unsupported version")
	// ErrInvalid means the manifest breaks a rule of the format; the
	// wrapping error says which field of which asset.
	ErrInvalid = errors.New("manifest: invalid")
)

// Manifest maps asset paths to content. Build one with FromDir, read one with
// Parse or Read. A parsed Manifest has been checked in full: see Parse.
type Manifest struct {
	Version int
	Profile string
	Assets  []Asset
	// Seeds are multiaddrs of the site's seeds, each ending in /p2p/ID:
	// peers a reader may connect to and keep connected (bootstrap peers).
	// Optional; see the package doc for what readers do with them.
	Seeds []string
	index map[string]int
}

// Asset is one file of a manifest.
type Asset struct {
	// Path is relative, slash-separated and clean: no leading slash, no "."
	// or ".." segment, no backslash or control character.
	Path string
	// Cid is the file's root: a raw leaf for files of at most 1 MiB, a dag-pb
	// node above.
	Cid cid.Cid
	// Size is the file's size in bytes.
	Size int64
	// Type is the content type served for it, as in a Content-Type header.
	Type string
	// Nodes are the file's inner dag-pb nodes, root first, each checked
	// against its CID: with them every leaf's CID and byte range is known
	// before any leaf is fetched. Empty for a single-leaf file.
	Nodes []blocks.Block
}

// Leaves lists the asset's leaves with their byte ranges in the plain file,
// from its Nodes alone.
func (a Asset) Leaves(ctx context.Context) ([]store.Leaf, error) {
	return store.Leaves(ctx, dagfile.NewNodes(a.Nodes), a.Cid, a.Size)
}

// Lookup returns the asset at path. A leading slash is ignored; a nil
// Manifest lists nothing. Lookup does not modify m, so concurrent calls are
// safe, also on a Manifest built as a literal or whose Assets changed after
// Parse (it then searches them).
func (m *Manifest) Lookup(path string) (Asset, bool) {
	if m == nil {
		return Asset{}, false
	}
	path = strings.TrimPrefix(path, "/")
	if i, ok := m.index[path]; ok && i < len(m.Assets) && m.Assets[i].Path == path {
		return m.Assets[i], true
	}
	for _, a := range m.Assets { // no index, or Assets changed since it was built
		if a.Path == path {
			return a, true
		}
	}
	return Asset{}, false
}

func (m *Manifest) buildIndex() {
	m.index = make(map[string]int, len(m.Assets))
	for i, a := range m.Assets {
		m.index[a.Path] = i
	}
}

// wire types: the JSON form documented in doc.go.
type wireManifest struct {
	Version *int        `json:"version"`
	Profile string      `json:"profile"`
	Assets  []wireAsset `json:"assets"`
	Seeds   []string    `json:"seeds,omitempty"`
}

type wireAsset struct {
	Path  string   `json:"path"`
	Cid   string   `json:"cid"`
	Size  *int64   `json:"size"`
	Type  string   `json:"type"`
	Nodes []string `json:"nodes,omitempty"`
}

// Marshal returns the manifest as indented JSON. It fails with an error
// matching ErrInvalid when Read would refuse what it wrote (an unsafe or
// duplicate path, a missing type, a size the CID or inner nodes do not
// match, more than MaxSize bytes, ...): a manifest built or edited in code
// is checked before it is deployed, not when every node fails to load it.
func (m *Manifest) Marshal() ([]byte, error) {
	v := Version
	w := wireManifest{Version: &v, Profile: Profile, Assets: make([]wireAsset, len(m.Assets)), Seeds: m.Seeds}
	for i, a := range m.Assets {
		size := a.Size
		w.Assets[i] = wireAsset{Path: a.Path, Cid: a.Cid.String(), Size: &size, Type: a.Type}
		for _, n := range a.Nodes {
			w.Assets[i].Nodes = append(w.Assets[i].Nodes, base64.StdEncoding.EncodeToString(n.RawData()))
		}
	}
	out, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("manifest: marshal: %w", err)
	}
	out = append(out, '\n')
	if len(out) > MaxSize {
		return nil, fmt.Errorf("manifest: marshal: %w: %d bytes, larger than %d", ErrInvalid, len(out), MaxSize)
	}
	if _, err := Parse(out); err != nil {
		return nil, fmt.Errorf("manifest: marshal: %w", err)
	}
	return out, nil
}

// Read reads and parses a manifest of at most MaxSize bytes.
func Read(r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: read: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	return Parse(data)
}

// Parse parses and checks a manifest. It is strict: an unknown version is
// ErrUnsupportedVersion; unknown fields, a missing field, a bad CID (not
// CIDv1 sha2-256 raw or dag-pb), a negative size, an unsafe or duplicate
// path, a bad content type, inner nodes that do not hash to their CIDs or do
// not add up to the asset's size, a field name in another case or given
// twice, bytes that are not UTF-8, or data after the JSON object are
// ErrInvalid, wrapped with the asset and field at fault. Each asset is
// checked as it is read (decode.go).
func Parse(data []byte) (*Manifest, error) {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if probe.Version == nil {
		return nil, fmt.Errorf("%w: no version", ErrInvalid)
	}
	if *probe.Version != Version {
		return nil, fmt.Errorf("%w: %d (this reader knows %d)", ErrUnsupportedVersion, *probe.Version, Version)
	}
	if !utf8.Valid(data) {
		// encoding/json would put U+FFFD for each bad byte, silently
		// renaming a path.
		return nil, fmt.Errorf("%w: not UTF-8", ErrInvalid)
	}
	m := &Manifest{Version: Version, Profile: Profile, index: make(map[string]int)}
	var profile string
	dec := json.NewDecoder(bytes.NewReader(data))
	err := decodeObject(dec, manifestFields, func(i int) error {
		switch i {
		case 0:
			var v int // checked above
			return dec.Decode(&v)
		case 1:
			return dec.Decode(&profile)
		case 2:
			return decodeSeeds(dec, &m.Seeds)
		}
		return decodeArray(dec, func(i int) error { return m.addAsset(dec, i) })
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, errTrailing)
	}
	if profile != Profile {
		return nil, fmt.Errorf("%w: profile %q, want %q", ErrInvalid, profile, Profile)
	}
	if err := checkSeeds(m.Seeds); err != nil {
		return nil, fmt.Errorf("%w: seeds: %v", ErrInvalid, err)
	}
	return m, nil
}

// manifestFields are the names of a manifest's fields, as Parse numbers
// them.
var manifestFields = []string{"version", "profile", "seeds", "assets"}

// addAsset decodes asset i from dec, checks it, and adds it to m.
func (m *Manifest) addAsset(dec *json.Decoder, i int) error {
	wa, err := decodeAsset(dec)
	if err != nil {
		return errAsset(i, wa.Path, err)
	}
	a, err := parseAsset(wa)
	if err != nil {
		return errAsset(i, wa.Path, err)
	}
	if _, dup := m.index[a.Path]; dup {
		return fmt.Errorf("asset %d: duplicate path %q", i, a.Path)
	}
	m.index[a.Path] = len(m.Assets)
	m.Assets = append(m.Assets, a)
	return nil
}

func parseAsset(wa wireAsset) (Asset, error) {
	if err := CheckPath(wa.Path); err != nil {
		return Asset{}, err
	}
	if wa.Size == nil {
		return Asset{}, errors.New("no size")
	}
	a := Asset{Path: wa.Path, Size: *wa.Size, Type: wa.Type}
	if a.Size < 0 || a.Size > MaxAssetSize {
		return Asset{}, fmt.Errorf("size %d out of range", a.Size)
	}
	c, err := cid.Decode(wa.Cid)
	if err != nil {
		return Asset{}, fmt.Errorf("cid: %v", err)
	}
	p := c.Prefix()
	if p.Version != 1 || p.MhType != mh.SHA2_256 || dagfile.CheckHash(c) != nil || (p.Codec != cid.Raw && p.Codec != cid.DagProtobuf) {
		return Asset{}, fmt.Errorf("cid %s is not CIDv1 sha2-256 (32 bytes) raw or dag-pb", c)
	}
	a.Cid = c
	if a.Type == "" {
		return Asset{}, errors.New("no type")
	}
	if _, _, err := mime.ParseMediaType(a.Type); err != nil {
		return Asset{}, fmt.Errorf("type %q: %v", a.Type, err)
	}
	switch p.Codec {
	case cid.Raw:
		if len(wa.Nodes) > 0 {
			return Asset{}, errors.New("a raw (single-leaf) asset has no nodes")
		}
		if a.Size > dagfile.ChunkSize {
			return Asset{}, fmt.Errorf("a raw asset holds at most %d bytes, size says %d", dagfile.ChunkSize, a.Size)
		}
		return a, nil
	}
	if len(wa.Nodes) == 0 {
		return Asset{}, errors.New("a dag-pb asset needs its inner nodes")
	}
	for j, s := range wa.Nodes {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return Asset{}, fmt.Errorf("node %d: %v", j, err)
		}
		if len(raw) > dagfile.MaxInnerNodeSize {
			return Asset{}, fmt.Errorf("node %d: %d bytes", j, len(raw))
		}
		nc, err := dagfile.Prefix.Sum(raw)
		if err != nil {
			return Asset{}, fmt.Errorf("node %d: %v", j, err)
		}
		b, err := blocks.NewBlockWithCid(raw, nc)
		if err != nil {
			return Asset{}, fmt.Errorf("node %d: %v", j, err)
		}
		a.Nodes = append(a.Nodes, b)
	}
	if !a.Nodes[0].Cid().Equals(c) {
		return Asset{}, fmt.Errorf("node 0 is %s, not the root %s", a.Nodes[0].Cid(), c)
	}
	// Walk from the root through the given nodes: every inner node must be
	// there, each is checked against its CID, and the leaves must add up to
	// the size. A node no walk reaches is refused too.
	used := make(map[string]bool, len(a.Nodes))
	g := dagfile.NewNodes(a.Nodes)
	total, err := dagfile.Walk(context.Background(), g, c, a.Size, func(b blocks.Block) error {
		used[b.Cid().KeyString()] = true
		return nil
	}, func(dagfile.Leaf) error { return nil })
	if err != nil {
		return Asset{}, err
	}
	if total != a.Size {
		return Asset{}, fmt.Errorf("nodes describe %d bytes, size says %d", total, a.Size)
	}
	if len(used) != len(a.Nodes) {
		return Asset{}, fmt.Errorf("%d of %d nodes are not part of the file", len(a.Nodes)-len(used), len(a.Nodes))
	}
	return a, nil
}

// CheckSeeds reports whether seeds may be a manifest's Seeds (Marshal and
// Parse refuse those it does not): an error, matching ErrInvalid, names
// the first bad entry.
func CheckSeeds(seeds []string) error {
	if err := checkSeeds(seeds); err != nil {
		return fmt.Errorf("%w: seeds: %v", ErrInvalid, err)
	}
	return nil
}

// checkSeeds checks the form of the seeds field: at most MaxSeeds entries,
// each a string of at most MaxSeedLen bytes that starts with "/" and has a
// /p2p/ component. Whether an entry parses as a multiaddr with transports
// the reader knows is for the reader to find out when it dials: one it
// cannot use is skipped, so that a manifest can name transports some
// readers lack.
func checkSeeds(seeds []string) error {
	if len(seeds) > MaxSeeds {
		return fmt.Errorf("%d entries, at most %d", len(seeds), MaxSeeds)
	}
	for i, s := range seeds {
		switch {
		case len(s) > MaxSeedLen:
			return fmt.Errorf("entry %d longer than %d bytes", i, MaxSeedLen)
		case !strings.HasPrefix(s, "/") || !strings.Contains(s, "/p2p/"):
			return fmt.Errorf("entry %d (%q) is not a multiaddr ending in /p2p/ID", i, s)
		case !utf8.ValidString(s):
			return fmt.Errorf("entry %d is not UTF-8", i)
		}
		for _, r := range s {
			if unicode.IsControl(r) || unicode.IsSpace(r) {
				return fmt.Errorf("entry %d has a space or control character", i)
			}
		}
	}
	return nil
}

// CheckPath reports whether p is a safe asset path: non-empty, valid UTF-8,
// at most MaxPathLen bytes, relative, slash-separated, with no empty, "." or
// ".." segment, no backslash and no control character. Such a path can be
// joined under a directory or a URL prefix without escaping it.
func CheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > MaxPathLen:
		return fmt.Errorf("path longer than %d bytes", MaxPathLen)
	case !utf8.ValidString(p):
		return errors.New("path is not UTF-8")
	case strings.HasPrefix(p, "/"):
		return errors.New("path is absolute")
	case strings.ContainsRune(p, '\\'):
		return errors.New("path has a backslash")
	}
	for _, r := range p {
		if unicode.IsControl(r) {
			return errors.New("path has a control character")
		}
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return errors.New("path has an empty segment")
		case ".", "..":
			return fmt.Errorf("path has a %q segment", seg)
		}
	}
	return nil
}
