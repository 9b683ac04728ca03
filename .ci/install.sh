#!/usr/bin/env bash
# Sets up a bare Debian/Ubuntu machine with Node/npm for siqvl the way a user does: Deno 2.9 from
# npm (npx) and the `setup` task, which checks for a WebGPU adapter and, as root, installs Mesa
# lavapipe with scripts/setup.sh when there is none. `.ci/run` needs no separate install step.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's chromium for `deno task test:browser` (headless, WebGPU on its bundled SwiftShader;
# no browser download). Only where apt-get runs as root; elsewhere test:browser says it is missing.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }
fi
exec npx -y deno@2.9 task setup
