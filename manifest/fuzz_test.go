package manifest_test

import (
	"errors"
	"testing"

	"github.com/meshcdn/meshcdn/manifest"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"profile":"unixfs-v1-2025","assets":[]}`))
	f.Add([]byte(`{"version":1,"profile":"unixfs-v1-2025","assets":[{"path":"a","cid":"bafkreicnpm7pomakz5ymrewygj63qjzpkrbuvw6gdjhbgcswhs2zudipi4","size":1,"type":"text/plain"}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := manifest.Parse(data)
		if err != nil {
			if m != nil {
				t.Fatal("Parse returned a manifest and an error")
			}
			if !errors.Is(err, manifest.ErrInvalid) && !errors.Is(err, manifest.ErrUnsupportedVersion) {
				t.Fatalf("Parse error %v is neither ErrInvalid nor ErrUnsupportedVersion", err)
			}
			return
		}
		// What parses must survive a round trip unchanged.
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := manifest.Parse(out)
		if err != nil || len(m2.Assets) != len(m.Assets) {
			t.Fatalf("round trip: %v", err)
		}
		for _, a := range m.Assets {
			if manifest.CheckPath(a.Path) != nil {
				t.Fatalf("unsafe path %q accepted", a.Path)
			}
		}
	})
}
