// The set-up path: adapter choice (SIQVL_ADAPTER), the fix named for each platform, the setup
// check and `deno task demo` with no usable adapter (hidden by VK_ICD_FILENAMES), and --help of the
// CLIs without a GPU.

import assert from "node:assert/strict";
import {
  backendLabel,
  canInstallLavapipe,
  driverFix,
  type LinuxFacts,
  parseAdapterChoice,
} from "../src/gpu/adapter.ts";
import { adapterLine } from "../src/gpu/announce.ts";
import { Gpu } from "../src/gpu/device.ts";
import { NO_ADAPTER_EXIT } from "../scripts/setup.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Environment in which the Vulkan loader finds no driver, and setup installs nothing. */
const NO_ADAPTER_ENV = {
  VK_ICD_FILENAMES: "/nonexistent/icd.json",
  VK_DRIVER_FILES: "/nonexistent/icd.json",
  SIQVL_SETUP_INSTALL: "0",
  NO_COLOR: "1",
};

async function run(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", ...env },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("SIQVL_ADAPTER: default, backends, power preference, fallback, errors", () => {
  const def = parseAdapterChoice(undefined);
  assert.deepEqual(def.backends, ["vulkan", "metal", "dx12"]);
  assert.deepEqual(def.powerPreference, "high-performance");
  assert.deepEqual(def.forceFallbackAdapter, false);
  assert.deepEqual(def.source, "default");

  const c = parseAdapterChoice(" GL, low-power ,fallback");
  assert.deepEqual(c.backends, ["gl"]);
  assert.deepEqual(c.powerPreference, "low-power");
  assert.deepEqual(c.forceFallbackAdapter, true);
  assert.deepEqual(c.source, "SIQVL_ADAPTER=GL, low-power ,fallback");
  assert.deepEqual(parseAdapterChoice("d3d12,vulkan,vk").backends, ["dx12", "vulkan"]);
  // Only a power preference: the backends stay the good ones.
  assert.deepEqual(parseAdapterChoice("low-power").backends, ["vulkan", "metal", "dx12"]);
  // DENO_WEBGPU_BACKEND given by the user is kept, unless SIQVL_ADAPTER names backends.
  assert.deepEqual(parseAdapterChoice(undefined, "gl").backends, ["gl"]);
  assert.deepEqual(parseAdapterChoice(undefined, "gl").source, "DENO_WEBGPU_BACKEND=gl");
  assert.deepEqual(parseAdapterChoice("vulkan", "gl").backends, ["vulkan"]);

  assert.throws(() => parseAdapterChoice("vulkan,cuda"), /SIQVL_ADAPTER: unknown entry "cuda"/);
});

Deno.test("backendLabel names the backend this OS can have", () => {
  assert.deepEqual(backendLabel(["vulkan", "metal", "dx12"], "linux"), "Vulkan");
  assert.deepEqual(backendLabel(["vulkan", "metal", "dx12"], "darwin"), "Metal/Vulkan");
  assert.deepEqual(backendLabel(["vulkan", "metal", "dx12"], "windows"), "D3D12/Vulkan");
  assert.deepEqual(backendLabel(["gl"], "linux"), "OpenGL");
});

Deno.test("driverFix: the exact command per platform and state", () => {
  const facts = (f: Partial<LinuxFacts>) => (): LinuxFacts => ({
    distro: ["debian"],
    root: true,
    lavapipeIcd: null,
    vulkanLoader: false,
    brokenOverrides: [],
    ...f,
  });
  assert.match(driverFix("linux", facts({})), /^apt-get install -y mesa-vulkan-drivers libvulkan1/);
  assert.match(
    driverFix("linux", facts({ root: false, distro: ["ubuntu", "debian"] })),
    /^sudo apt-get install -y mesa-vulkan-drivers libvulkan1/,
  );
  assert.match(driverFix("linux", facts({ distro: ["fedora"] })), /^dnf install -y mesa-vulkan/);
  assert.match(driverFix("linux", facts({ distro: ["arch"] })), /^pacman -S .*vulkan-swrast/);
  const broken = driverFix("linux", facts({ brokenOverrides: ["VK_ICD_FILENAMES=/x"] }));
  assert.match(broken, /^unset VK_ICD_FILENAMES \(VK_ICD_FILENAMES=\/x: no such file\)/);
  const installed = driverFix(
    "linux",
    facts({ lavapipeIcd: "/usr/share/vulkan/icd.d/lvp_icd.json", vulkanLoader: true }),
  );
  assert.ok(installed.includes("vulkaninfo --summary"));
  assert.ok(driverFix("darwin").includes("Metal"));
  assert.ok(driverFix("windows").includes("D3D12"));

  const base: LinuxFacts = facts({})();
  assert.ok(canInstallLavapipe(base));
  assert.ok(canInstallLavapipe({ ...base, distro: ["ubuntu", "debian"] }));
  assert.ok(!canInstallLavapipe({ ...base, root: false }));
  assert.ok(!canInstallLavapipe({ ...base, distro: ["fedora"] }));
  assert.ok(!canInstallLavapipe({ ...base, lavapipeIcd: "/x/lvp_icd.json", vulkanLoader: true }));
  assert.ok(canInstallLavapipe({ ...base, lavapipeIcd: "/x/lvp_icd.json", vulkanLoader: false }));
  assert.ok(!canInstallLavapipe({ ...base, brokenOverrides: ["VK_ICD_FILENAMES=/x"] }));
});

Deno.test("the adapter line names adapter, backend, limits and f16", async () => {
  const gpu = await Gpu.get();
  const line = adapterLine(gpu);
  assert.ok(line.includes(`[siqvl] adapter: ${gpu.adapterDescription} [${gpu.backend}]`));
  assert.ok(
    line.includes(`binding ${Math.round(gpu.limits.maxStorageBufferBindingSize / 2 ** 20)} MiB`),
  );
  assert.ok(line.includes(`shader-f16 ${gpu.features.shaderF16 ? "verified" : "off"}`));
  assert.deepEqual(line.includes("software adapter"), gpu.isFallbackAdapter);
  assert.ok(!gpu.backend.includes("OpenGL"), `default choice must not use OpenGL: ${line}`);
});

Deno.test("setup with a usable adapter: exit 0 and the adapter named", async () => {
  const r = await run(["run", "-A", "--unstable-webgpu", "scripts/setup.ts"], {
    SIQVL_SETUP_INSTALL: "0",
    NO_COLOR: "1",
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\[setup\] WebGPU ready: .+ \[(Vulkan|Metal|D3D12)[^\]]*\]$/m);
});

Deno.test("setup with no adapter: clear error, the fix, exit status 3, no wgpu warnings", async () => {
  const r = await run(["run", "-A", "--unstable-webgpu", "scripts/setup.ts"], NO_ADAPTER_ENV);
  assert.equal(r.code, NO_ADAPTER_EXIT, r.stdout + r.stderr);
  assert.ok(
    r.stderr.includes("error: No usable WebGPU adapter: none on Vulkan/Metal/D3D12"),
    r.stderr,
  );
  assert.ok(r.stderr.includes("fix: unset VK_ICD_FILENAMES VK_DRIVER_FILES"), r.stderr);
  assert.ok(!r.stderr.includes("wgpu-hal heuristics"), r.stderr);
  assert.ok(!r.stdout.includes("WebGPU ready"), r.stdout);
});

Deno.test("`deno task demo` with no adapter stops in setup, before the demo starts", async () => {
  const r = await run(["task", "demo", "--output_dir", "/nonexistent/never-written"], {
    ...NO_ADAPTER_ENV,
  });
  assert.equal(r.code, NO_ADAPTER_EXIT, r.stdout + r.stderr);
  assert.ok(r.stderr.includes("No usable WebGPU adapter"), r.stderr);
  assert.ok(r.stderr.includes("fix: "), r.stderr);
  assert.ok(!r.stdout.includes("[demo]"), r.stdout);
});

Deno.test("CLI --help / -h need no GPU", async () => {
  for (
    const args of [
      ["cli/generate.ts", "--help"],
      ["cli/generate.ts", "-h"],
      ["cli/fixture.ts", "-h"],
      ["cli/train.ts", "--help"],
      ["cli/train.ts", "-h"],
      ["cli/demo.ts", "--help"],
    ]
  ) {
    const r = await run(["run", "-A", "--unstable-webgpu", ...args], NO_ADAPTER_ENV);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stdout, /^usage: /im, args.join(" "));
    assert.ok(!r.stderr.includes("WebGPU adapter"), `${args.join(" ")}: ${r.stderr}`);
  }
});
