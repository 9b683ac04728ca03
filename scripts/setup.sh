#!/usr/bin/env bash
# Installs a Vulkan driver for WebGPU on Debian/Ubuntu, as root: Mesa's software driver lavapipe
# (mesa-vulkan-drivers) and the Vulkan loader (libvulkan1). On Debian it prefers Mesa 25 from
# <codename>-backports (2–3× faster than bookworm's Mesa 22), adding that suite on the mirror
# already configured; otherwise (or when backports fails) the distribution's own Mesa.
# `deno task setup` (scripts/setup.ts) runs this when no usable adapter is found; so does CI.
# Idempotent: apt-get skips what is installed.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh must run as root (sudo bash scripts/setup.sh)" >&2
  exit 1
fi
. /etc/os-release
case " ${ID:-} ${ID_LIKE:-} " in
*" debian "* | *" ubuntu "*) ;;
*)
  echo "scripts/setup.sh is for Debian/Ubuntu; this is ${PRETTY_NAME:-an unknown system}" >&2
  exit 1
  ;;
esac
export DEBIAN_FRONTEND=noninteractive
pkgs=(mesa-vulkan-drivers libvulkan1)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

backports=""
if [ "${ID:-}" = debian ] && [ -n "${VERSION_CODENAME:-}" ]; then
  backports="${VERSION_CODENAME}-backports"
  if ! grep -rqs -- "$backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # The first non-security Debian mirror already configured (deb822 "URIs:" or a "deb" line).
    mirror=$({ grep -rhsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ || true; } |
      grep -v security | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)
    mirror=${mirror:-http://deb.debian.org/debian/}
    echo "[setup] adding ${backports} (${mirror})"
    echo "deb ${mirror%/} ${backports} main" >/etc/apt/sources.list.d/siqvl-backports.list
  fi
fi

echo "[setup] apt-get update"
apt-get update -qq >"$log" 2>&1 || { echo "[setup] apt-get update had errors:"; tail -5 "$log"; }
if [ -n "$backports" ] && apt-get install -y -qq -t "$backports" "${pkgs[@]}" >"$log" 2>&1; then
  echo "[setup] installed ${pkgs[*]} from ${backports}"
else
  [ -n "$backports" ] && echo "[setup] ${backports} unavailable; using the default suite"
  if ! apt-get install -y -qq "${pkgs[@]}" >"$log" 2>&1; then
    echo "[setup] apt-get install ${pkgs[*]} failed:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  echo "[setup] installed ${pkgs[*]}"
fi
dpkg-query -W -f='[setup] ${Package} ${Version}\n' "${pkgs[@]}" 2>/dev/null || true
