package manifest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/meshcdn/meshcdn/internal/dagfile"
)

// FromDir builds the manifest of every regular file under dir, sorted by
// path. Symbolic links, other special files, and files or directories whose
// names make an unsafe path (see CheckPath) are skipped. Each file is read
// once and hashed with the unixfs-v1-2025 profile, exactly as store.Import
// and Kubo (`ipfs add --profile unixfs-v1-2025`) would; nothing is stored and
// memory use stays at about one chunk plus the inner nodes.
//
// exclude lists paths relative to dir (slash-separated, as in the manifest)
// that are left out: the manifest's own file when it is written into dir
// (a manifest never lists itself), earlier manifests, temporary files.
func FromDir(ctx context.Context, dir string, exclude ...string) (*Manifest, error) {
	m := &Manifest{Version: Version, Profile: Profile}
	skip := make(map[string]bool, len(exclude))
	for _, e := range exclude {
		skip[path.Clean(strings.TrimPrefix(filepath.ToSlash(e), "/"))] = true
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if CheckPath(rel) != nil || skip[rel] {
			return nil
		}
		a, err := FromFile(ctx, p)
		if err != nil {
			return err
		}
		a.Path = rel
		m.Assets = append(m.Assets, a)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("manifest: from %s: %w", dir, err)
	}
	sort.Slice(m.Assets, func(i, j int) bool { return m.Assets[i].Path < m.Assets[j].Path })
	m.buildIndex()
	return m, nil
}

// FromFile computes the asset of one file: its CID, size, content type (from
// the extension, else sniffed from its first 512 bytes) and inner nodes. Path
// is the file's base name.
func FromFile(ctx context.Context, name string) (Asset, error) {
	f, err := os.Open(name)
	if err != nil {
		return Asset{}, err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return Asset{}, err
	}
	typ := mime.TypeByExtension(path.Ext(name))
	if typ == "" {
		typ = http.DetectContentType(head[:n])
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Asset{}, err
	}
	a, err := FromReader(ctx, f)
	if err != nil {
		return Asset{}, fmt.Errorf("%s: %w", name, err)
	}
	a.Path = filepath.Base(name)
	a.Type = typ
	return a, nil
}

// FromReader computes the CID, size and inner nodes of the bytes r gives.
// Path and Type are left for the caller.
func FromReader(ctx context.Context, r io.Reader) (Asset, error) {
	sink := &innerSink{nodes: make(dagfile.Nodes)}
	nd, err := dagfile.Import(ctx, r, sink)
	if err != nil {
		return Asset{}, err
	}
	a := Asset{Cid: nd.Cid()}
	if nd.Cid().Type() == cid.Raw {
		a.Size = int64(len(nd.RawData()))
		return a, nil
	}
	a.Size, err = dagfile.Walk(ctx, sink.nodes, nd.Cid(), 0, func(b blocks.Block) error {
		a.Nodes = append(a.Nodes, b)
		return nil
	}, func(dagfile.Leaf) error { return nil })
	if err != nil {
		return Asset{}, err
	}
	return a, nil
}

// innerSink is the DAGService an import writes to when only the CIDs are
// wanted: it keeps the dag-pb nodes and drops the leaves, whose CIDs are in
// the inner nodes.
type innerSink struct {
	nodes dagfile.Nodes
}

func (s *innerSink) Add(_ context.Context, n ipld.Node) error {
	if n.Cid().Type() != cid.Raw {
		s.nodes[n.Cid().KeyString()] = n
	}
	return nil
}

func (s *innerSink) AddMany(ctx context.Context, ns []ipld.Node) error {
	for _, n := range ns {
		if err := s.Add(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

var errSinkRead = errors.New("manifest: the import sink is write-only")

func (s *innerSink) Get(context.Context, cid.Cid) (ipld.Node, error) { return nil, errSinkRead }

func (s *innerSink) GetMany(_ context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for range cs {
		ch <- &ipld.NodeOption{Err: errSinkRead}
	}
	close(ch)
	return ch
}

func (s *innerSink) Remove(context.Context, cid.Cid) error { return nil }

func (s *innerSink) RemoveMany(context.Context, []cid.Cid) error { return nil }

var _ ipld.DAGService = (*innerSink)(nil)
