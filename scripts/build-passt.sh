#!/usr/bin/env bash
# Build the passt that VoidVM runs guests' networks with, from Debian's own source package.
#
# Debian 12's passt (2023-03-09) corrupts a slow guest's TCP streams: a guest under software
# emulation that acknowledges late gets the same data again as if it were new, and never sees
# the peer's FIN (tests/integration/test_guest_isolation.py caught it under load). The 2025-05
# source from Debian 13 does not. It is fetched once from the Debian mirror, checked against the
# archive's sha256, built (about 15 s) and installed where VoidVM looks first (config.py).
# Safe to run again: it does nothing when the installed copy is this version.
set -euo pipefail

version=2025_05_03.587980c
tarball=passt_0.0~git20250503.587980c.orig.tar.xz
sha256=69d5eb843f7d648c2cc60bfbca6ea7b5014c6b6f07cdee362c2a8cf490515a49
mirror=${VOIDVM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
target=/usr/local/libexec/voidvm/passt
cache=${VOIDVM_CACHE_DIR:-/var/cache/voidvm}

stamp=$target.version  # passt's own --version prints nothing when stdout is not a terminal
if [ -x "$target" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "VoidVM's passt is not built; run as root: $0" >&2
  exit 1
fi
for tool in cc make curl xz sha256sum; do
  command -v "$tool" >/dev/null || { echo "build-passt: $tool is missing" >&2; exit 1; }
done

mkdir -p "$cache"
if ! echo "$sha256  $cache/$tarball" | sha256sum --check --status 2>/dev/null; then
  echo "Fetching passt $version source from the Debian mirror"
  curl -fsSL --retry 3 -o "$cache/$tarball.part" "$mirror/pool/main/p/passt/$tarball"
  echo "$sha256  $cache/$tarball.part" | sha256sum --check --status \
    || { rm -f "$cache/$tarball.part"; echo "build-passt: checksum mismatch" >&2; exit 1; }
  mv "$cache/$tarball.part" "$cache/$tarball"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$cache/$tarball" -C "$work"
echo "Building passt $version"
make -s -C "$work/passt-$version" passt VERSION="$version" >/dev/null
install -D -m 0755 "$work/passt-$version/passt" "$target"
echo "$version" > "$stamp"
