// mod.ts must work when imported from a URL: shaders are loaded relative to import.meta.url, never
// from the working directory. Serve the repository on 127.0.0.1 and run a kernel through it.
import { assertClose, GPU_TEST } from "./util.ts";
import { SHADER_FILES } from "../src/gpu/shaders.ts";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

Deno.test("shaders/: SHADER_FILES lists exactly the .wgsl files", () => {
  const files: string[] = [];
  for (const e of Deno.readDirSync(join(root, "shaders"))) {
    if (e.name.endsWith(".wgsl")) files.push(e.name.slice(0, -5));
  }
  const listed = [...SHADER_FILES].sort();
  files.sort();
  if (JSON.stringify(files) !== JSON.stringify(listed)) {
    throw new Error(`shaders/ has [${files}] but SHADER_FILES lists [${listed}]`);
  }
});

Deno.test("mod.ts imported over http runs a kernel", GPU_TEST, async () => {
  const ac = new AbortController();
  const requested: string[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      requested.push(path);
      if (path.includes("..")) return new Response("bad", { status: 400 });
      try {
        const body = await Deno.readFile(join(root, path));
        const type = path.endsWith(".ts") ? "application/typescript" : "text/plain";
        return new Response(body, { headers: { "content-type": type } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  try {
    const { port } = server.addr as Deno.NetAddr;
    // A separate Deno process with no config file (no import map) and a working directory far
    // from the repository: everything must resolve from the URL alone.
    const dir = Deno.makeTempDirSync();
    const script = `
      const m = await import("http://127.0.0.1:${port}/mod.ts");
      const gpu = await m.Gpu.get();
      const a = m.Tensor.from(gpu, [1, 2, 3, 4.5], [4]);
      const b = m.Tensor.from(gpu, [0.5, -1, 2, 0.25], [4]);
      console.log(JSON.stringify(Array.from(await m.add(a, b).read())));
    `;
    Deno.writeTextFileSync(join(dir, "main.ts"), script);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", "--no-config", "--no-lock", "main.ts"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (!out.success) {
      throw new Error(`import over http failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    assertClose(JSON.parse(text.split("\n").pop()!), [1.5, 1, 5, 4.75], 1e-7, "add over http");
    if (!requested.some((p) => p.endsWith("/shaders/elementwise.wgsl"))) {
      throw new Error("the shader was not fetched from the server");
    }
    Deno.removeSync(dir, { recursive: true });
  } finally {
    ac.abort();
    await server.finished;
  }
});
