#!/usr/bin/env bash
# Install what VoidVM needs on a fresh Debian machine: system packages (as root), a virtualenv
# with the server, the Python SDK and the dev tools. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=${1:-}
# passt from Debian for its user and man page; gcc, make, curl, xz-utils build the newer one VoidVM runs.
packages=(qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static passt nftables gcc libc6-dev make curl xz-utils)
if [ "$want_tests" = "--test" ]; then
  packages+=(postgresql redis-server nodejs npm zsh fish)  # zsh, fish: completion tests
fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Node may come from elsewhere (nodesource, nvm): only ask Debian for it if `node` is absent.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]:-}"
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "Installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Missing Debian packages. Run:"
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
fi

if [ "$(id -u)" -eq 0 ]; then
  scripts/build-passt.sh
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Reinstall only when the dependency lists change.
stamp=.venv/.voidvm-installed
sum=$(cat pyproject.toml sdk/python/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]' -e sdk/python
  echo "$sum" > "$stamp"
fi
