package manifest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshcdn/meshcdn/manifest"
)

func Example() {
	dir, err := os.MkdirTemp("", "meshcdn-site-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><h1>hi</h1>\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "css"), 0o755)
	os.WriteFile(filepath.Join(dir, "css", "site.css"), []byte("h1 { color: teal }\n"), 0o644)

	// At deploy time: build the manifest of the site's directory.
	m, err := manifest.FromDir(context.Background(), dir)
	if err != nil {
		panic(err)
	}
	data, err := m.Marshal()
	if err != nil {
		panic(err)
	}

	// In a client: parse (and check) the manifest, look an asset up.
	m2, err := manifest.Parse(data)
	if err != nil {
		panic(err)
	}
	for _, a := range m2.Assets {
		fmt.Println(a.Path, a.Size, a.Type)
	}
	a, _ := m2.Lookup("/index.html")
	fmt.Println(a.Cid)
	// Output:
	// css/site.css 19 text/css; charset=utf-8
	// index.html 27 text/html; charset=utf-8
	// bafkreigwpyralpaanpsbb6v6pocsbnyx4d7lmim4d3v5xqabm4ig7sl2ou
}
