#!/usr/bin/env bash
# Builds Kubo v0.43.1 from its Go module, as ../shared/INTEROP.md describes, and
# prints the path of the binary. Kubo's go.mod replaces go-libp2p with a fork the
# module proxy does not serve, so plain `go install` fails: we drop that replace
# and build against go-libp2p v0.51.0. The binary is cached outside the repo.
set -euo pipefail
version=v0.43.1
cache="${MESHCDN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcdn}"
bin="$cache/kubo-$version/ipfs"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
dir=$(go mod download -json "github.com/ipfs/kubo@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "kubo.sh: go mod download gave no directory" >&2; exit 1; }
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$dir/." "$work/"
chmod -R u+w "$work"
(
  cd "$work"
  go mod edit -dropreplace=github.com/libp2p/go-libp2p -require=github.com/libp2p/go-libp2p@v0.51.0
  go mod tidy >&2
  mkdir -p "$(dirname "$bin")"
  go build -o "$bin.tmp" ./cmd/ipfs >&2
)
mv "$bin.tmp" "$bin"
echo "$bin"
