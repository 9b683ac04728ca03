// deno task setup — makes sure this machine has a WebGPU adapter siqvl can run on. `deno task demo`
// and `deno task test` run it first, so `npx -y deno@2.9 task demo` works on a bare machine.
//
// Ready: prints the adapter, exit 0. No usable adapter: on Debian/Ubuntu as root with no Vulkan
// driver installed, installs Mesa's lavapipe with scripts/setup.sh (SIQVL_SETUP_INSTALL=0 turns
// that off) and checks again in a fresh process; otherwise prints what was found and the exact
// fix for this platform, exit 3 (NO_ADAPTER_EXIT).

import { fileURLToPath as fromFileUrl } from "node:url";
import { Gpu } from "../src/gpu/device.ts";
import { canInstallLavapipe, INSTALL_SCRIPT, linuxFacts } from "../src/gpu/adapter.ts";

/** Exit status when no usable adapter is found (and none could be installed). */
export const NO_ADAPTER_EXIT = 3;

const HELP = `Usage: deno task setup

Checks for a WebGPU adapter siqvl can use (Vulkan, Metal or D3D12; SIQVL_ADAPTER overrides the
choice, see src/gpu/adapter.ts). When there is none on Debian/Ubuntu as root, installs Mesa's
software Vulkan driver (lavapipe) with scripts/setup.sh, then checks again; elsewhere prints the
command that fixes it. SIQVL_SETUP_INSTALL=0: check only. Exit status 0 ready, 3 no adapter.`;

/** The check: null when ready (after printing the adapter), else the error message. */
async function check(): Promise<string | null> {
  try {
    const gpu = await Gpu.get();
    console.log(`[setup] WebGPU ready: ${gpu.adapterDescription} [${gpu.backend}]`);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

async function main(): Promise<number> {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(HELP);
    return 0;
  }
  const err = await check();
  if (err === null) return 0;
  const install = Deno.env.get("SIQVL_SETUP_INSTALL") !== "0";
  if (install && Deno.build.os === "linux" && canInstallLavapipe(linuxFacts())) {
    console.log("[setup] no Vulkan driver: installing Mesa lavapipe (scripts/setup.sh)");
    const res = await new Deno.Command("bash", { args: [fromFileUrl(INSTALL_SCRIPT)] }).spawn()
      .status;
    if (!res.success) {
      console.error(`error: scripts/setup.sh failed (exit ${res.code}); before it:\n${err}`);
      return NO_ADAPTER_EXIT;
    }
    // This process's WebGPU instance saw no driver; a new one sees the installed one.
    const again = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", fromFileUrl(import.meta.url)],
      env: { SIQVL_SETUP_INSTALL: "0" },
    }).spawn().status;
    return again.code;
  }
  console.error(`error: ${err}`);
  return NO_ADAPTER_EXIT;
}

if (import.meta.main) Deno.exit(await main());
