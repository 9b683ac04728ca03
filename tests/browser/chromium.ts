// Headless Chromium driven over the DevTools protocol (CDP) with Deno's own WebSocket: find
// Debian's chromium (nothing is installed here), start it with a fresh profile, open a page and
// await a promise the page publishes as `window.__result`. The flags are the ones measured in
// shared/docs/BROWSER.md: --enable-unsafe-webgpu gives the SwiftShader core adapter headless.

/** Where Debian and Ubuntu put the browser (the real binary first, then the wrapper). */
export const CHROMIUM_PATHS = [
  "/usr/lib/chromium/chromium",
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
];

/** The chromium binary: $CHROMIUM when set, else the first of CHROMIUM_PATHS that exists. */
export function findChromium(): string | null {
  const env = Deno.env.get("CHROMIUM");
  if (env) return env;
  for (const p of CHROMIUM_PATHS) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch { /* not here */ }
  }
  return null;
}

/** Flags for WebGPU compute in headless Chromium on a GPU-less machine (SwiftShader). */
export const WEBGPU_FLAGS = [
  "--headless=new",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-webgpu-developer-features",
  "--disable-dev-shm-usage",
  "--no-first-run",
  "--no-default-browser-check",
];

/** A running headless Chromium and one CDP session on its first page. */
export class Chromium {
  #proc: Deno.ChildProcess;
  #profile: string;
  #ws: WebSocket;
  #next = 1;
  #pending = new Map<number, { ok: (v: unknown) => void; fail: (e: Error) => void }>();
  /** Console lines and exceptions of the page, for failure messages. */
  readonly console: string[] = [];

  private constructor(proc: Deno.ChildProcess, profile: string, ws: WebSocket) {
    this.#proc = proc;
    this.#profile = profile;
    this.#ws = ws;
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data as string);
      if (msg.id !== undefined) {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.error) p?.fail(new Error(`CDP: ${msg.error.message}`));
        else p?.ok(msg.result);
      } else if (msg.method === "Runtime.consoleAPICalled") {
        const args = msg.params.args.map((a: { value?: unknown; description?: string }) =>
          a.value ?? a.description ?? ""
        );
        this.console.push(`${msg.params.type}: ${args.join(" ")}`);
      } else if (msg.method === "Runtime.exceptionThrown") {
        const d = msg.params.exceptionDetails;
        this.console.push(`exception: ${d.exception?.description ?? d.text}`);
      }
    };
  }

  /** Start chromium headless with WebGPU and attach to its blank page. */
  static async launch(
    binary: string,
    extraFlags: string[] = [],
    baseFlags: readonly string[] = WEBGPU_FLAGS,
  ): Promise<Chromium> {
    const profile = await Deno.makeTempDir({ prefix: "siqvl-chromium-" });
    const proc = new Deno.Command(binary, {
      args: [
        ...baseFlags,
        ...extraFlags,
        `--user-data-dir=${profile}`,
        "--remote-debugging-port=0",
        "about:blank",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      const port = await devToolsPort(profile, proc);
      const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      const page = targets.find((t: { type: string }) => t.type === "page");
      if (!page) throw new Error("chromium: no page target");
      const ws = new WebSocket(page.webSocketDebuggerUrl);
      await new Promise<void>((ok, fail) => {
        ws.onopen = () => ok();
        ws.onerror = () => fail(new Error("chromium: DevTools WebSocket failed"));
      });
      const c = new Chromium(proc, profile, ws);
      await c.send("Runtime.enable");
      await c.send("Page.enable");
      return c;
    } catch (e) {
      try {
        proc.kill("SIGKILL");
      } catch { /* already gone */ }
      await proc.status;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /** One CDP command. */
  send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.#next++;
    return new Promise((ok, fail) => {
      this.#pending.set(id, { ok, fail });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluate an expression in the page (awaiting a promise), returning its JSON value. */
  async evaluate<T = unknown>(expression: string): Promise<T> {
    const r = await this.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }) as { result: { value?: T }; exceptionDetails?: { exception?: { description?: string } } };
    if (r.exceptionDetails) {
      throw new Error(`page: ${r.exceptionDetails.exception?.description ?? "exception"}`);
    }
    return r.result.value as T;
  }

  /**
   * Navigate to `url` and await `window.__result` (a promise the page sets), for at most
   * `timeoutMs`. Throws with the page's console on timeout.
   */
  async run<T = unknown>(url: string, timeoutMs: number): Promise<T> {
    await this.send("Page.navigate", { url });
    const deadline = Date.now() + timeoutMs;
    while (await this.evaluate<string>("typeof window.__result") === "undefined") {
      if (Date.now() > deadline) {
        throw new Error(
          `page ${url} set no window.__result within ${timeoutMs} ms; console:\n` +
            this.console.slice(-20).join("\n"),
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const left = Math.max(1000, deadline - Date.now());
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, fail) => {
      timer = setTimeout(() => {
        fail(
          new Error(
            `page ${url}: window.__result did not settle within ${timeoutMs} ms; console:\n` +
              this.console.slice(-20).join("\n"),
          ),
        );
      }, left);
    });
    try {
      return await Promise.race([this.evaluate<T>("window.__result"), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** A PNG screenshot of the page's viewport. */
  async screenshot(width: number, height: number): Promise<Uint8Array> {
    await this.send("Emulation.setDeviceMetricsOverride", {
      width,
      height,
      deviceScaleFactor: 1,
      mobile: false,
    });
    const r = await this.send("Page.captureScreenshot", { format: "png" }) as { data: string };
    return Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0));
  }

  /** Stop the browser this object started and remove its profile. */
  async close(): Promise<void> {
    try {
      this.#ws.close();
    } catch { /* closed */ }
    try {
      this.#proc.kill("SIGTERM");
    } catch { /* already gone */ }
    const done = await Promise.race([
      this.#proc.status.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 3000)),
    ]);
    if (!done) {
      try {
        this.#proc.kill("SIGKILL");
      } catch { /* gone */ }
      await this.#proc.status;
    }
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }
}

// Chromium writes "<port>\n<path>" to DevToolsActivePort once DevTools listens.
async function devToolsPort(profile: string, proc: Deno.ChildProcess): Promise<number> {
  let exited = false;
  proc.status.then(() => (exited = true));
  for (let i = 0; i < 300; i++) {
    try {
      const text = await Deno.readTextFile(`${profile}/DevToolsActivePort`);
      const port = parseInt(text.split("\n")[0], 10);
      if (port > 0) return port;
    } catch { /* not yet */ }
    if (exited) throw new Error("chromium exited before DevTools started");
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("chromium: DevTools did not start within 30 s");
}
