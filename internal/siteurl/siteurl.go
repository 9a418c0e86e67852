// Package siteurl reads the URLs the example programs are given.
package siteurl

import (
	"fmt"
	"net/url"
)

// Origin returns the directory of manifestURL, an absolute http(s) URL of
// a site's manifest, as an origin base URL without its trailing slash:
// http://host/site/manifest.json gives http://host/site. The error names
// flag, where the URL came from.
func Origin(flag, manifestURL string) (string, error) {
	u, err := url.Parse(manifestURL)
	if err != nil {
		return "", fmt.Errorf("-%s %q: %v", flag, manifestURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("-%s %q: want an absolute http(s) URL of the manifest, such as http://127.0.0.1:8800/manifest.json", flag, manifestURL)
	}
	if u.Path == "" || u.Path[len(u.Path)-1] == '/' {
		return "", fmt.Errorf("-%s %q: names a directory, not the manifest file (manifest.json)", flag, manifestURL)
	}
	dir := u.ResolveReference(&url.URL{Path: "./"})
	dir.RawQuery, dir.Fragment = "", ""
	s := dir.String()
	return s[:len(s)-1], nil
}
