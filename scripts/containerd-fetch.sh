#!/usr/bin/env bash
# Fetches containerd from Debian's trixie (1.7.x) and sid (2.1.x) with apt-get download through an
# extra source list under a temporary directory, and unpacks each with dpkg -x. Nothing is installed
# into the system. runc comes from bookworm (trixie's needs a newer glibc): install it with apt-get.
#
# Usage: scripts/containerd-fetch.sh [CACHE_DIR]
# Prints one line per suite: "<suite> <version> <dir>" where <dir>/usr/bin/containerd exists.
set -euo pipefail
cache=${1:-${DRA_HAL_TOOLS_CACHE:-$HOME/.cache/dra-hal-tools}/containerd}
mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/sources.list.d" "$tmp/lists/partial" "$tmp/archives/partial"
cat >"$tmp/sources.list.d/extra.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$tmp/sources.list.d"
  -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache::Archives=$tmp/archives"
  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" update -qq >&2
for suite in trixie sid; do
  version=$(apt-cache "${apt_opts[@]}" madison containerd | awk -v s="$suite" '$0 ~ s"/main" { print $3; exit }')
  test -n "$version" || { echo "containerd: no version in $suite" >&2; exit 1; }
  dir="$cache/$version"
  if ! test -x "$dir/usr/bin/containerd"; then
    (cd "$tmp" && apt-get "${apt_opts[@]}" download -qq "containerd=$version" >&2)
    rm -rf "$dir.partial"
    dpkg -x "$tmp"/containerd_*"$(printf %s "$version" | sed 's/^[0-9]*://')"_*.deb "$dir.partial"
    rm -f "$tmp"/containerd_*.deb
    mv "$dir.partial" "$dir"
  fi
  echo "$suite $version $dir"
done
