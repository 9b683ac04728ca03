// Choosing the WebGPU adapter. siqvl asks Deno's WebGPU (wgpu) for a Vulkan, Metal or D3D12
// adapter only: wgpu's OpenGL fallback (what Deno picks when no Vulkan driver is installed on
// Linux) is refused, because its compute path is not one siqvl supports and it floods stderr with
// "wgpu-hal heuristics assumed that the view dimension …" warnings. When nothing is found, the
// error names what the OpenGL backend would have offered and the command that fixes it here.
//
// SIQVL_ADAPTER (comma list) overrides the choice:
//   vulkan | metal | dx12 (d3d12) | gl (opengl)  backends to try (default vulkan,metal,dx12)
//   high-performance | low-power                 the power preference (default high-performance)
//   fallback                                     ask for the fallback (software) adapter
// An explicit DENO_WEBGPU_BACKEND is kept when SIQVL_ADAPTER names no backend. Deno reads that
// variable once, when its WebGPU instance is created, so it is set before the first request.

/** A wgpu backend as DENO_WEBGPU_BACKEND names it. */
export type Backend = "vulkan" | "metal" | "dx12" | "gl";

const BACKEND_NAMES: Record<Backend, string> = {
  vulkan: "Vulkan",
  metal: "Metal",
  dx12: "D3D12",
  gl: "OpenGL",
};
const ALIASES: Record<string, Backend> = {
  vulkan: "vulkan",
  vk: "vulkan",
  metal: "metal",
  dx12: "dx12",
  d3d12: "dx12",
  gl: "gl",
  opengl: "gl",
  gles: "gl",
};
/** The backends siqvl runs well on (tried unless SIQVL_ADAPTER says otherwise). */
export const GOOD_BACKENDS: readonly Backend[] = ["vulkan", "metal", "dx12"];
/** Backends wgpu can use on each OS (to name the one an adapter came from). */
const OS_BACKENDS: Record<string, readonly Backend[]> = {
  linux: ["vulkan", "gl"],
  android: ["vulkan", "gl"],
  darwin: ["metal", "vulkan", "gl"],
  windows: ["dx12", "vulkan", "gl"],
};

/** What to ask WebGPU for. */
export interface AdapterChoice {
  backends: Backend[];
  powerPreference: GPUPowerPreference;
  forceFallbackAdapter: boolean;
  /** Where the choice came from, for messages: "default", "SIQVL_ADAPTER=…", …. */
  source: string;
}

/** Parse SIQVL_ADAPTER (and an explicit DENO_WEBGPU_BACKEND) into a choice. */
export function parseAdapterChoice(
  siqvlAdapter: string | undefined,
  denoBackend?: string,
): AdapterChoice {
  const choice: AdapterChoice = {
    backends: [],
    powerPreference: "high-performance",
    forceFallbackAdapter: false,
    source: "default",
  };
  for (const raw of (siqvlAdapter ?? "").split(",")) {
    const tok = raw.trim().toLowerCase();
    if (!tok) continue;
    if (tok in ALIASES) {
      const b = ALIASES[tok];
      if (!choice.backends.includes(b)) choice.backends.push(b);
    } else if (tok === "high-performance" || tok === "low-power") choice.powerPreference = tok;
    else if (tok === "fallback" || tok === "software") choice.forceFallbackAdapter = true;
    else {
      throw new Error(
        `SIQVL_ADAPTER: unknown entry "${raw.trim()}"; expected a comma list of vulkan, metal, ` +
          "dx12, gl, high-performance, low-power, fallback",
      );
    }
  }
  if (siqvlAdapter?.trim()) choice.source = `SIQVL_ADAPTER=${siqvlAdapter.trim()}`;
  if (choice.backends.length === 0 && denoBackend?.trim()) {
    // Deno's own variable, given by the user: keep it as it is (it may name "primary" etc.).
    choice.backends = denoBackend.split(",").map((s) => ALIASES[s.trim().toLowerCase()])
      .filter((b): b is Backend => b !== undefined);
    choice.source = `DENO_WEBGPU_BACKEND=${denoBackend.trim()}`;
  }
  if (choice.backends.length === 0) choice.backends = [...GOOD_BACKENDS];
  return choice;
}

/** "Vulkan", "D3D12/Vulkan", …: the backends of `choice` that this OS has. */
export function backendLabel(backends: readonly Backend[], os: string = Deno.build.os): string {
  const possible = (OS_BACKENDS[os] ?? backends).filter((b) => backends.includes(b));
  return (possible.length ? possible : backends).map((b) => BACKEND_NAMES[b]).join("/");
}

function envGranted(name: string): boolean {
  try {
    return Deno.permissions.querySync({ name: "env", variable: name }).state === "granted";
  } catch {
    return false;
  }
}
function env(name: string): string | undefined {
  return envGranted(name) ? Deno.env.get(name) : undefined;
}

/** An adapter and how it was chosen. */
export interface ChosenAdapter {
  adapter: GPUAdapter;
  choice: AdapterChoice;
  /** The backend it came from ("Vulkan"), or "unknown" when DENO_WEBGPU_BACKEND was not set. */
  backend: string;
}

/**
 * Request the adapter siqvl runs on (see the header for SIQVL_ADAPTER). Throws a message naming
 * what was tried, what the refused OpenGL backend offers and the fix when there is none.
 */
export async function requestSiqvlAdapter(gpu: GPU): Promise<ChosenAdapter> {
  const choice = parseAdapterChoice(env("SIQVL_ADAPTER"), env("DENO_WEBGPU_BACKEND"));
  let backend = "unknown";
  if (envGranted("DENO_WEBGPU_BACKEND")) {
    Deno.env.set("DENO_WEBGPU_BACKEND", choice.backends.join(","));
    backend = backendLabel(choice.backends);
  }
  const adapter = await gpu.requestAdapter({
    powerPreference: choice.powerPreference,
    forceFallbackAdapter: choice.forceFallbackAdapter,
  });
  if (adapter) return { adapter, choice, backend };
  throw new Error(await noAdapterMessage(choice));
}

/** The error text for "no adapter": what was tried, what else exists, and the fix. */
export async function noAdapterMessage(choice: AdapterChoice): Promise<string> {
  const tried = choice.backends.map((b) => BACKEND_NAMES[b]).join("/");
  const refused = choice.backends.includes("gl") ? null : await probeBackend("gl");
  const lines = [
    `No usable WebGPU adapter: none on ${tried} (${choice.source}).`,
  ];
  if (refused) {
    lines.push(
      `Deno would fall back to "${refused}" on the OpenGL backend, which siqvl refuses ` +
        "(its compute path is unsupported here and floods wgpu-hal texture-view warnings; " +
        "SIQVL_ADAPTER=gl forces it anyway).",
    );
  }
  lines.push(`fix: ${await driverFix()}`);
  return lines.join("\n");
}

/**
 * The adapter a backend offers, asked in a child Deno (the WebGPU instance of this process is
 * fixed once created). Null when there is none or a child cannot be run.
 */
export async function probeBackend(backend: Backend): Promise<string | null> {
  try {
    if (Deno.permissions.querySync({ name: "run" }).state !== "granted") return null;
    const code = "const a = await navigator.gpu.requestAdapter();" +
      "console.log(a ? (a.info.description || a.info.device || a.info.vendor || '?') : '');";
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--unstable-webgpu", code],
      env: { DENO_WEBGPU_BACKEND: backend, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "null",
      stdin: "null",
      signal: AbortSignal.timeout(4000),
    }).output();
    const name = new TextDecoder().decode(out.stdout).trim();
    return out.success && name ? name : null;
  } catch {
    return null;
  }
}

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}
function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Facts about a Linux machine that decide the fix. */
export interface LinuxFacts {
  /** ID and ID_LIKE from /etc/os-release, e.g. ["ubuntu", "debian"]. */
  distro: string[];
  root: boolean;
  /** The lavapipe ICD file when one is installed. */
  lavapipeIcd: string | null;
  /** Whether the Vulkan loader (libvulkan.so.1) is installed. */
  vulkanLoader: boolean;
  /** Vulkan loader overrides that name files which do not exist ("VK_ICD_FILENAMES=/x"). */
  brokenOverrides: string[];
}

const ICD_DIRS = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"];
const LIB_DIRS = [
  "/usr/lib/x86_64-linux-gnu",
  "/usr/lib/aarch64-linux-gnu",
  "/usr/lib64",
  "/usr/lib",
];

/** Look at this Linux machine (never throws; unknown facts come back empty). */
export function linuxFacts(): LinuxFacts {
  const osr = readText("/etc/os-release") ?? "";
  const field = (k: string) =>
    (osr.match(new RegExp(`^${k}=("?)(.*)\\1$`, "m"))?.[2] ?? "").toLowerCase();
  const distro = [field("ID"), ...field("ID_LIKE").split(/\s+/)].filter(Boolean);
  let root = false;
  try {
    root = Deno.uid() === 0;
  } catch { /* not on this OS */ }
  let lavapipeIcd: string | null = null;
  for (const dir of ICD_DIRS) {
    try {
      for (const e of Deno.readDirSync(dir)) {
        if (/^lvp_icd.*\.json$/.test(e.name)) lavapipeIcd ??= `${dir}/${e.name}`;
      }
    } catch { /* no such directory */ }
  }
  const brokenOverrides: string[] = [];
  for (const v of ["VK_ICD_FILENAMES", "VK_DRIVER_FILES", "VK_ADD_DRIVER_FILES"]) {
    const val = env(v);
    if (val && val.split(":").filter(Boolean).every((p) => !exists(p))) {
      brokenOverrides.push(`${v}=${val}`);
    }
  }
  const vulkanLoader = LIB_DIRS.some((d) => exists(`${d}/libvulkan.so.1`));
  return { distro, root, lavapipeIcd, vulkanLoader, brokenOverrides };
}

/** The Debian/Ubuntu installer that siqvl's setup and CI share (relative to this module). */
export const INSTALL_SCRIPT = new URL("../../scripts/setup.sh", import.meta.url);

/** Whether installing lavapipe with INSTALL_SCRIPT can fix "no adapter" on this machine. */
export function canInstallLavapipe(f: LinuxFacts): boolean {
  return f.root && (f.lavapipeIcd === null || !f.vulkanLoader) && f.brokenOverrides.length === 0 &&
    (f.distro.includes("debian") || f.distro.includes("ubuntu"));
}

/** The exact command (or step) that gives this machine a usable adapter. */
export function driverFix(
  os: string = Deno.build.os,
  facts: () => LinuxFacts = linuxFacts,
): string {
  if (os === "darwin") {
    return "WebGPU uses Metal here: run a native (not Rosetta) Deno on macOS 10.15 or newer.";
  }
  if (os === "windows") {
    return "install or update your GPU vendor's driver (D3D12 or Vulkan).";
  }
  if (os !== "linux") return `install a Vulkan driver for ${os}.`;
  const f = facts();
  if (f.brokenOverrides.length) {
    return `unset ${f.brokenOverrides.map((o) => o.split("=")[0]).join(" ")} ` +
      `(${f.brokenOverrides.join(", ")}: no such file), which hides the installed Vulkan drivers.`;
  }
  if (f.lavapipeIcd && f.vulkanLoader) {
    return `a Vulkan driver is installed (${f.lavapipeIcd}) but the Vulkan loader offers no ` +
      "device: check `vulkaninfo --summary` (apt-get install vulkan-tools) and the VK_* " +
      "environment variables.";
  }
  const sudo = f.root ? "" : "sudo ";
  const has = (d: string) => f.distro.includes(d);
  if (has("debian") || has("ubuntu")) {
    return `${sudo}apt-get install -y mesa-vulkan-drivers libvulkan1   (Mesa's software Vulkan ` +
      "driver, lavapipe; or your GPU's Vulkan driver. `npx -y deno@2.9 task setup` as root " +
      "does this, with Mesa 25 from backports on Debian)";
  }
  if (has("fedora") || has("rhel") || has("centos")) {
    return `${sudo}dnf install -y mesa-vulkan-drivers vulkan-loader   (lavapipe, software Vulkan)`;
  }
  if (has("arch")) {
    return `${sudo}pacman -S --noconfirm vulkan-swrast vulkan-icd-loader   (lavapipe)`;
  }
  if (has("alpine")) return `${sudo}apk add mesa-vulkan-swrast vulkan-loader   (lavapipe)`;
  return "install your GPU's Vulkan driver, or Mesa's software Vulkan driver (lavapipe, often " +
    "packaged as mesa-vulkan-drivers) and the Vulkan loader (libvulkan1 / vulkan-loader).";
}
