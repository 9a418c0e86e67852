package siteurl

import "testing"

func TestOrigin(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://127.0.0.1:8800/manifest.json", "http://127.0.0.1:8800"},
		{"https://cdn.example/site/v2/manifest.json?sig=1", "https://cdn.example/site/v2"},
		{"manifest.json", ""},
		{"http://127.0.0.1:8800", ""},
		{"http://127.0.0.1:8800/", ""},
		{"ftp://host/manifest.json", ""},
		{"http://[::1/manifest.json", ""},
	} {
		got, err := Origin("manifest", tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("Origin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
