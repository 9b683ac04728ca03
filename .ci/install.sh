#!/usr/bin/env bash
# Sets up a bare Debian/Ubuntu machine with Node/npm for siqvl the way a user does: Deno 2.9 from
# npm (npx) and the `setup` task, which checks for a WebGPU adapter and, as root, installs Mesa
# lavapipe with scripts/setup.sh when there is none. `.ci/run` needs no separate install step.
set -euo pipefail
cd "$(dirname "$0")/.."
exec npx -y deno@2.9 task setup
