#!/usr/bin/env bash
# Installs what siqvl's tests need on a bare Debian 12 machine with Node/npm:
# Deno 2.9 (from npm) and a Vulkan driver for WebGPU (Mesa lavapipe, preferring
# Mesa 25 from bookworm-backports). Idempotent: skips what is already there.
set -euo pipefail

if ! command -v deno >/dev/null 2>&1; then
  echo "[install] deno 2.9 from npm"
  npm i -g deno@2.9 >/dev/null
fi
deno --version | head -1

have_lavapipe() {
  ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 &&
    ldconfig -p | grep -q libvulkan.so.1
}

if ! have_lavapipe; then
  echo "[install] Mesa lavapipe (Vulkan in software)"
  export DEBIAN_FRONTEND=noninteractive
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q "bookworm-backports" "$src"; then
    # Add the backports suite to the mirror that is already configured.
    sed -i '0,/^Suites: bookworm bookworm-updates/s//Suites: bookworm bookworm-updates bookworm-backports/' "$src" || true
  fi
  apt-get update -qq || true
  if ! apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
    echo "[install] backports unavailable; falling back to the default suite"
    apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
fi
dpkg-query -W -f='[install] ${Package} ${Version}\n' mesa-vulkan-drivers 2>/dev/null || true
