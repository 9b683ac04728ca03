// Hub + cache, end to end against a fake hub on 127.0.0.1 that serves the URL layout
// @huggingface/hub requests (revision info, tree, paths-info, resolve with ranges, preupload,
// LFS batch, commit, tag). Offline mode is tested with the server shut down.

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createTag,
  hubCacheDir,
  hubEndpoint,
  hubToken,
  isOfflineEnv,
  listRepoFiles,
  parseRepoSpec,
  resolveDatasetFile,
  resolveModel,
  uploadFolder,
} from "../src/io/hub.ts";
import { openTensors } from "../src/io/reader.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { writeStateDict } from "../src/io/state_dict.ts";

const te = new TextEncoder();

async function hex(algo: "SHA-1" | "SHA-256", data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest(algo, data.slice()));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}
async function gitOid(data: Uint8Array): Promise<string> {
  const head = te.encode(`blob ${data.byteLength}\0`);
  const all = new Uint8Array(head.byteLength + data.byteLength);
  all.set(head);
  all.set(data, head.byteLength);
  return await hex("SHA-1", all);
}
const randomSha = () =>
  [...crypto.getRandomValues(new Uint8Array(20))].map((b) => b.toString(16).padStart(2, "0"))
    .join("");

interface Repo {
  private: boolean;
  commits: Map<string, Map<string, Uint8Array>>;
  refs: Map<string, string>;
}

const LFS_THRESHOLD = 1000;

/** An in-memory hub speaking the subset of the HTTP API that @huggingface/hub uses. */
class FakeHub {
  repos = new Map<string, Repo>(); // key "models/org/name" or "datasets/org/name"
  lfs = new Map<string, Uint8Array>(); // sha256 → bytes
  log: string[] = [];
  token = "hf_secret_test_token";
  server: Deno.HttpServer<Deno.NetAddr>;
  url: string;

  constructor() {
    this.server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.handle(req),
    );
    this.url = `http://127.0.0.1:${this.server.addr.port}`;
  }

  async close(): Promise<void> {
    await this.server.shutdown();
  }

  addRepo(
    key: string,
    files: Record<string, Uint8Array | string>,
    opts: { private?: boolean } = {},
  ) {
    const sha = randomSha();
    const m = new Map<string, Uint8Array>();
    for (const [p, c] of Object.entries(files)) m.set(p, typeof c === "string" ? te.encode(c) : c);
    const r = this.repos.get(key);
    if (r) {
      // A new commit on main; older commits stay reachable by sha.
      r.commits.set(sha, m);
      r.refs.set("main", sha);
    } else {
      this.repos.set(key, {
        private: !!opts.private,
        commits: new Map([[sha, m]]),
        refs: new Map([["main", sha]]),
      });
    }
    return sha;
  }

  #repo(key: string, req: Request): Repo | Response {
    const r = this.repos.get(key);
    if (!r) return Response.json({ error: "Repository not found" }, { status: 404 });
    if (r.private && req.headers.get("authorization") !== `Bearer ${this.token}`) {
      return Response.json({ error: "Invalid credentials" }, { status: 401 });
    }
    return r;
  }

  #commit(r: Repo, rev: string): [string, Map<string, Uint8Array>] | undefined {
    const sha = r.refs.get(rev) ?? (r.commits.has(rev) ? rev : undefined);
    return sha ? [sha, r.commits.get(sha)!] : undefined;
  }

  async #entry(path: string, data: Uint8Array, sha: string, expand: boolean) {
    const e: Record<string, unknown> = {
      type: "file",
      path,
      size: data.byteLength,
      oid: await gitOid(data),
    };
    if (data.byteLength > LFS_THRESHOLD) {
      e.lfs = { oid: await hex("SHA-256", data), size: data.byteLength, pointerSize: 134 };
    }
    if (expand) e.lastCommit = { id: sha, title: "commit", date: new Date().toISOString() };
    return e;
  }

  async handle(req: Request): Promise<Response> {
    const u = new URL(req.url);
    const p = decodeURIComponent(u.pathname);
    this.log.push(`${req.method} ${u.pathname}`);
    let m: RegExpMatchArray | null;
    // Repo info at a revision.
    if ((m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/revision\/(.+)$/))) {
      const r = this.#repo(`${m[1]}/${m[2]}`, req);
      if (r instanceof Response) return r;
      const c = this.#commit(r, m[3]);
      if (!c) return Response.json({ error: "Invalid rev id" }, { status: 404 });
      return Response.json({
        _id: "x",
        id: m[2],
        sha: c[0],
        private: r.private,
        lastModified: new Date().toISOString(),
        siblings: [...c[1].keys()].map((rfilename) => ({ rfilename })),
      });
    }
    // Tree listing.
    if ((m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/))) {
      const r = this.#repo(`${m[1]}/${m[2]}`, req);
      if (r instanceof Response) return r;
      const c = this.#commit(r, m[3]);
      if (!c) return Response.json({ error: "Invalid rev id" }, { status: 404 });
      const prefix = m[4] ? `${m[4]}/` : "";
      const recursive = u.searchParams.get("recursive") === "true";
      const out: unknown[] = [];
      const dirs = new Set<string>();
      for (const [path, data] of c[1]) {
        if (!path.startsWith(prefix)) continue;
        const rest = path.slice(prefix.length);
        if (!recursive && rest.includes("/")) {
          dirs.add(prefix + rest.split("/")[0]);
          continue;
        }
        out.push(await this.#entry(path, data, c[0], false));
      }
      for (const d of dirs) out.push({ type: "directory", path: d, size: 0, oid: "0".repeat(40) });
      return Response.json(out);
    }
    // Paths info.
    if (
      (m = p.match(/^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/paths-info\/(.+)$/)) &&
      req.method === "POST"
    ) {
      const r = this.#repo(`${m[1]}/${m[2]}`, req);
      if (r instanceof Response) return r;
      const c = this.#commit(r, m[3]);
      if (!c) return Response.json({ error: "Invalid rev id" }, { status: 404 });
      const body = await req.json() as { paths: string[]; expand?: boolean };
      const out = [];
      for (const path of body.paths) {
        const d = c[1].get(path);
        if (d) out.push(await this.#entry(path, d, c[0], !!body.expand));
      }
      return Response.json(out);
    }
    // File download.
    if ((m = p.match(/^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/))) {
      const r = this.#repo(`${m[1] ? "datasets" : "models"}/${m[2]}`, req);
      if (r instanceof Response) return r;
      const c = this.#commit(r, m[3]);
      const data = c?.[1].get(m[4]);
      if (!c || !data) {
        return new Response("Entry not found", {
          status: 404,
          headers: { "X-Error-Code": "EntryNotFound" },
        });
      }
      const etag = data.byteLength > LFS_THRESHOLD
        ? await hex("SHA-256", data)
        : await gitOid(data);
      const headers: Record<string, string> = {
        "etag": `"${etag}"`,
        "x-repo-commit": c[0],
        "accept-ranges": "bytes",
      };
      const range = req.headers.get("range")?.match(/^bytes=(\d+)-(\d*)$/);
      if (range) {
        const start = Number(range[1]);
        const end = range[2]
          ? Math.min(Number(range[2]), data.byteLength - 1)
          : data.byteLength - 1;
        headers["content-range"] = `bytes ${start}-${end}/${data.byteLength}`;
        return new Response(data.slice(start, end + 1), { status: 206, headers });
      }
      return new Response(data.slice(), { status: 200, headers });
    }
    // Upload: create repo.
    if (p === "/api/repos/create" && req.method === "POST") {
      if (req.headers.get("authorization") !== `Bearer ${this.token}`) {
        return Response.json({ error: "Invalid credentials" }, { status: 401 });
      }
      const b = await req.json() as {
        name: string;
        organization: string;
        type: string;
        visibility?: string;
      };
      const key = `${b.type}s/${b.organization}/${b.name}`;
      if (this.repos.has(key)) {
        return Response.json({ error: "You already created this model repo" }, { status: 409 });
      }
      this.addRepo(key, {}, { private: b.visibility === "private" });
      return Response.json({ url: `${this.url}/${b.organization}/${b.name}`, id: "x" });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/preupload\/(.+)$/))) {
      const r = this.#repo(`models/${m[1]}`, req);
      if (r instanceof Response) return r;
      const b = await req.json() as { files: { path: string; size: number }[] };
      return Response.json({
        files: b.files.map((f) => ({
          path: f.path,
          uploadMode: f.size > LFS_THRESHOLD ? "lfs" : "regular",
        })),
      });
    }
    if ((m = p.match(/^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/))) {
      const b = await req.json() as {
        objects: { oid: string; size: number }[];
        transfers: string[];
      };
      return Response.json({
        transfer: "basic",
        objects: b.objects.map((o) => ({
          oid: o.oid,
          size: o.size,
          actions: this.lfs.has(o.oid)
            ? undefined
            : { upload: { href: `${this.url}/lfs-upload/${o.oid}` } },
        })),
      }, { headers: { "content-type": "application/vnd.git-lfs+json" } });
    }
    if ((m = p.match(/^\/lfs-upload\/([0-9a-f]{64})$/)) && req.method === "PUT") {
      const data = new Uint8Array(await req.arrayBuffer());
      if (await hex("SHA-256", data) !== m[1]) return new Response("sha mismatch", { status: 400 });
      this.lfs.set(m[1], data);
      return new Response(null, { status: 200 });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/commit\/(.+)$/)) && req.method === "POST") {
      const r = this.#repo(`models/${m[1]}`, req);
      if (r instanceof Response) return r;
      if (req.headers.get("authorization") !== `Bearer ${this.token}`) {
        return Response.json({ error: "Invalid credentials" }, { status: 401 });
      }
      const branch = m[2];
      const parent = this.#commit(r, branch)?.[1] ?? new Map();
      const files = new Map(parent);
      for (const line of (await req.text()).split("\n")) {
        const { key, value } = JSON.parse(line);
        if (key === "file") {
          files.set(
            value.path,
            Uint8Array.from(atob(value.content), (ch) => ch.charCodeAt(0)),
          );
        }
        if (key === "lfsFile") {
          const d = this.lfs.get(value.oid);
          if (!d) {
            return Response.json({ error: `LFS object ${value.oid} not uploaded` }, {
              status: 400,
            });
          }
          files.set(value.path, d);
        }
        if (key === "deletedFile") files.delete(value.path);
      }
      const sha = randomSha();
      r.commits.set(sha, files);
      r.refs.set(branch, sha);
      return Response.json({ commitOid: sha, commitUrl: `${this.url}/${m[1]}/commit/${sha}` });
    }
    if ((m = p.match(/^\/api\/models\/([^/]+\/[^/]+)\/tag\/(.+)$/)) && req.method === "POST") {
      const r = this.#repo(`models/${m[1]}`, req);
      if (r instanceof Response) return r;
      const b = await req.json() as { tag: string };
      if (r.refs.has(b.tag)) return Response.json({ error: "tag exists" }, { status: 409 });
      const c = this.#commit(r, m[2]);
      if (!c) return Response.json({ error: "Invalid rev id" }, { status: 404 });
      r.refs.set(b.tag, c[0]);
      return Response.json({});
    }
    return new Response(`not found: ${req.method} ${p}`, { status: 404 });
  }
}

const ENV_KEYS = [
  "HF_HOME",
  "HF_HUB_CACHE",
  "HUGGINGFACE_HUB_CACHE",
  "HF_ENDPOINT",
  "HF_TOKEN",
  "HUGGING_FACE_HUB_TOKEN",
  "HF_TOKEN_PATH",
  "HF_HUB_OFFLINE",
  "XDG_CACHE_HOME",
];

/** Run `fn` with the hub environment cleared and then restored. */
async function withEnv(vars: Record<string, string>, fn: () => Promise<void>): Promise<void> {
  const saved = new Map(ENV_KEYS.map((k) => [k, Deno.env.get(k)]));
  for (const k of ENV_KEYS) Deno.env.delete(k);
  // Never pick up a developer's real token file (~/.cache/huggingface/token).
  Deno.env.set("HF_TOKEN_PATH", "/nonexistent/siqvl-test-token");
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  try {
    await fn();
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}

/** Silence @huggingface/hub's "Downloading …" debug lines during a test. */
async function quiet<T>(fn: () => Promise<T>): Promise<T> {
  const debug = console.debug;
  console.debug = () => {};
  try {
    return await fn();
  } finally {
    console.debug = debug;
  }
}

async function modelFiles(dir: string) {
  // A small model: config + tokenizer files, sharded safetensors, a .bin too, plus noise.
  await writeStateDict(dir, [
    { name: "a", dtype: "F32", shape: [300], data: new Float32Array(300).map((_, i) => i) },
    { name: "b", dtype: "BF16", shape: [2], data: new Uint16Array([0x3f80, 0x4000]) },
  ], { maxShardBytes: 1000 });
  const files: Record<string, Uint8Array | string> = {};
  for (const e of Deno.readDirSync(dir)) files[e.name] = Deno.readFileSync(join(dir, e.name));
  files["config.json"] = JSON.stringify({ model_type: "qwen2", hidden_size: 8 });
  files["tokenizer_config.json"] = "{}";
  files["merges.txt"] = "a b\n";
  files["chat_template.jinja"] = "{{ messages }}";
  files["pytorch_model.bin"] = new Uint8Array(2000); // not chosen: safetensors preferred
  files["README.md"] = "# readme";
  files["onnx/model.onnx"] = new Uint8Array(10);
  return files;
}

Deno.test("hub: spec parsing and environment resolution", async () => {
  assert.deepEqual(parseRepoSpec("Qwen/Qwen2.5-0.5B-Instruct"), {
    repo: "Qwen/Qwen2.5-0.5B-Instruct",
    revision: "main",
  });
  assert.deepEqual(parseRepoSpec("google/siglip2-base-patch16-224@v1.0"), {
    repo: "google/siglip2-base-patch16-224",
    revision: "v1.0",
  });
  assert.deepEqual(parseRepoSpec("gpt2@refs/pr/1"), { repo: "gpt2", revision: "refs/pr/1" });
  for (const bad of ["a/b/c", "/abs/path", "org/name@", "../x", "org/na me", "org/x@../../etc"]) {
    assert.throws(() => parseRepoSpec(bad), /not a hub repo id/, bad);
  }
  const dir = await Deno.makeTempDir({ prefix: "siqvl_io_hubenv_" });
  try {
    await withEnv({}, async () => {
      assert.equal(hubEndpoint(), "https://huggingface.co");
      assert.equal(isOfflineEnv(), false);
      Deno.env.set("XDG_CACHE_HOME", join(dir, "xdg"));
      assert.equal(hubCacheDir(), join(dir, "xdg", "huggingface", "hub"));
      Deno.env.set("HF_HOME", join(dir, "home"));
      assert.equal(hubCacheDir(), join(dir, "home", "hub"));
      Deno.env.set("HF_HUB_CACHE", join(dir, "cache"));
      assert.equal(hubCacheDir(), join(dir, "cache"));
      Deno.env.set("HF_ENDPOINT", "http://mirror.local:8080/");
      assert.equal(hubEndpoint(), "http://mirror.local:8080");
      // Token: env first, then the token file in HF_HOME.
      assert.equal(hubToken(), undefined);
      Deno.env.delete("HF_TOKEN_PATH");
      await Deno.mkdir(join(dir, "home"), { recursive: true });
      await Deno.writeTextFile(join(dir, "home", "token"), "hf_from_file\n");
      assert.equal(hubToken(), "hf_from_file");
      Deno.env.set("HF_TOKEN", "hf_from_env");
      assert.equal(hubToken(), "hf_from_env");
      for (const v of ["1", "true", "ON", "yes"]) {
        Deno.env.set("HF_HUB_OFFLINE", v);
        assert.equal(isOfflineEnv(), true, v);
      }
      Deno.env.set("HF_HUB_OFFLINE", "0");
      assert.equal(isOfflineEnv(), false);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hub: download into the python cache layout, reuse it, then resolve offline", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "siqvl_io_hub_" });
  const hub = new FakeHub();
  try {
    const sha = hub.addRepo("models/org/tiny", await modelFiles(join(tmp, "src")));
    const cache = join(tmp, "cache");
    const snap = await quiet(() => resolveModel("org/tiny", { hubUrl: hub.url, cacheDir: cache }));
    const storage = join(cache, "models--org--tiny");
    assert.equal(snap, join(storage, "snapshots", sha));
    assert.equal((await Deno.readTextFile(join(storage, "refs", "main"))).trim(), sha);
    const got = [...Deno.readDirSync(snap)].map((e) => e.name).sort();
    assert.deepEqual(got, [
      "chat_template.jinja",
      "config.json",
      "merges.txt",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "tokenizer_config.json",
    ]);
    // Snapshot entries are relative symlinks into blobs/, named by etag (sha256 for LFS files).
    const link = await Deno.readLink(join(snap, "model-00001-of-00002.safetensors"));
    assert.match(link, /^\.\.\/\.\.\/blobs\/[0-9a-f]{64}$/);
    assert.match(
      await Deno.readLink(join(snap, "config.json")),
      /^\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/,
    );
    // The weights read through the cache.
    const r = await openTensors(snap);
    assert.deepEqual((await r.readF32("a")).slice(0, 3), new Float32Array([0, 1, 2]));
    assert.deepEqual([...await r.readF32("b")], [1, 2]);
    r.close();
    // Requests made: revision → tree → per file paths-info + range probe + GET.
    assert.equal(hub.log[0], "GET /api/models/org/tiny/revision/main");
    assert.ok(hub.log.some((l) => l === `GET /api/models/org/tiny/tree/${sha}`));
    assert.ok(hub.log.some((l) => l === `POST /api/models/org/tiny/paths-info/${sha}`));
    assert.ok(hub.log.some((l) => l === `GET /org/tiny/resolve/${sha}/config.json`));
    assert.ok(!hub.log.some((l) => l.includes("pytorch_model.bin") || l.includes("onnx")));

    // Second resolve: nothing is downloaded again.
    hub.log = [];
    assert.equal(await resolveModel("org/tiny", { hubUrl: hub.url, cacheDir: cache }), snap);
    assert.ok(!hub.log.some((l) => l.includes("/resolve/")), hub.log.join("\n"));

    // Explicit files; a missing one is named.
    await quiet(() =>
      resolveModel("org/tiny", { hubUrl: hub.url, cacheDir: cache, files: ["README.md"] })
    );
    assert.equal(await Deno.readTextFile(join(snap, "README.md")), "# readme");
    await assert.rejects(
      () =>
        quiet(() =>
          resolveModel("org/tiny", { hubUrl: hub.url, cacheDir: cache, files: ["nope.json"] })
        ),
      /file "nope\.json" not found in org\/tiny@main/,
    );
    await assert.rejects(
      () => resolveModel("org/missing", { hubUrl: hub.url, cacheDir: cache }),
      /cannot access org\/missing@main on http:\/\/127\.0\.0\.1:\d+ \(HTTP 404\)/,
    );
    await assert.rejects(
      () => resolveModel("./no/such/dir/here", { hubUrl: hub.url, cacheDir: cache }),
      /no such model directory, and not a hub repo id/,
    );

    // A new commit on main moves refs/main; the old snapshot stays.
    const sha2 = hub.addRepo("models/org/tiny", {
      "config.json": '{"v":2}',
      "model.safetensors": Deno.readFileSync(join(snap, "model-00002-of-00002.safetensors")),
    });
    const snap2 = await quiet(() => resolveModel("org/tiny", { hubUrl: hub.url, cacheDir: cache }));
    assert.equal(snap2, join(storage, "snapshots", sha2));
    assert.equal((await Deno.readTextFile(join(storage, "refs", "main"))).trim(), sha2);
    // Pinned to the first commit by sha: served from the cache without the network.
    hub.log = [];
    assert.equal(await resolveModel(`org/tiny@${sha}`, { hubUrl: hub.url, cacheDir: cache }), snap);
    assert.ok(
      !hub.log.some((l) => l.includes("/resolve/") || l.includes("/revision/")),
      hub.log.join("\n"),
    );

    await hub.close();

    // Offline with the server gone, through the environment (HF_HOME + HF_HUB_OFFLINE).
    await Deno.mkdir(join(tmp, "home"));
    await Deno.rename(cache, join(tmp, "home", "hub"));
    const home = join(tmp, "home");
    const off = join(home, "hub", "models--org--tiny", "snapshots");
    await withEnv({ HF_HOME: home, HF_HUB_OFFLINE: "1", HF_ENDPOINT: hub.url }, async () => {
      assert.equal(await resolveModel("org/tiny"), join(off, sha2));
      assert.equal(await resolveModel(`org/tiny@${sha}`), join(off, sha));
      await assert.rejects(
        () => resolveModel("org/other"),
        /org\/other@main is not in the hub cache .*HF_HUB_OFFLINE is set/,
      );
      await assert.rejects(
        () => resolveModel("org/tiny@v9"),
        /revision "v9" of org\/tiny is not in the hub cache \(no refs\/v9/,
      );
      await assert.rejects(
        () => resolveModel("org/tiny", { files: ["config.json", "tokenizer.json"] }),
        /file "tokenizer\.json" of org\/tiny@main is not in the hub cache/,
      );
      const r2 = await openTensors(await resolveModel("org/tiny"));
      assert.deepEqual(r2.keys(), ["b"]);
      r2.close();
    });
    // Not offline but unreachable: falls back to the cache, or says it cannot reach the hub.
    await withEnv({ HF_HOME: home, HF_ENDPOINT: hub.url }, async () => {
      assert.equal(await resolveModel("org/tiny"), join(off, sha2));
      await assert.rejects(
        () => resolveModel("org/other"),
        /not in the hub cache .*cannot reach http:\/\/127\.0\.0\.1/,
      );
    });
  } finally {
    await hub.close().catch(() => {});
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: a cache laid out by python's huggingface_hub resolves offline", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "siqvl_io_hubpy_" });
  try {
    const storage = join(tmp, "models--Qwen--Qwen2.5-0.5B-Instruct");
    const sha = "7ae557604adf67be50417f59c2c2f167def9a775";
    await Deno.mkdir(join(storage, "blobs"), { recursive: true });
    await Deno.mkdir(join(storage, "refs"), { recursive: true });
    await Deno.mkdir(join(storage, "snapshots", sha), { recursive: true });
    await Deno.writeTextFile(join(storage, "refs", "main"), sha); // python writes no newline
    const st = join(tmp, "w.safetensors");
    await writeSafetensors(st, {
      "model.norm.weight": { dtype: "BF16", shape: [2], data: new Uint16Array([0x3f80, 0x3f80]) },
    });
    const blobs: [string, Uint8Array][] = [
      ["config.json", te.encode('{"model_type":"qwen2"}')],
      ["model.safetensors", await Deno.readFile(st)],
    ];
    for (const [name, data] of blobs) {
      const etag = await hex("SHA-256", data);
      await Deno.writeFile(join(storage, "blobs", etag), data);
      await Deno.symlink(`../../blobs/${etag}`, join(storage, "snapshots", sha, name));
    }
    const snap = await resolveModel("Qwen/Qwen2.5-0.5B-Instruct", { cacheDir: tmp, offline: true });
    assert.equal(snap, join(storage, "snapshots", sha));
    const r = await openTensors(snap);
    assert.deepEqual([...await r.readF32("model.norm.weight")], [1, 1]);
    r.close();
    // Offline "auto" without weights is a clear error naming the repo.
    await Deno.remove(join(storage, "snapshots", sha, "model.safetensors"));
    await assert.rejects(
      () => resolveModel("Qwen/Qwen2.5-0.5B-Instruct", { cacheDir: tmp, offline: true }),
      /no weights of Qwen\/Qwen2\.5-0\.5B-Instruct@main in the hub cache/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: HF_ENDPOINT, HF_HUB_CACHE and HF_TOKEN from the environment; private repos", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "siqvl_io_hubtok_" });
  const hub = new FakeHub();
  try {
    const sha = hub.addRepo("models/org/secret", {
      "config.json": "{}",
      "model.safetensors": await (async () => {
        const p = join(tmp, "m.safetensors");
        await writeSafetensors(p, { x: { dtype: "F32", shape: [1], data: new Float32Array([7]) } });
        return await Deno.readFile(p);
      })(),
    }, { private: true });
    await withEnv({ HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, "c") }, async () => {
      await assert.rejects(
        () => resolveModel("org/secret"),
        /HTTP 401.*need a token \(HF_TOKEN\) — none set/,
      );
      Deno.env.set("HF_TOKEN", hub.token);
      const snap = await quiet(() => resolveModel("org/secret"));
      assert.equal(snap, join(tmp, "c", "models--org--secret", "snapshots", sha));
      const r = await openTensors(snap);
      assert.deepEqual([...await r.readF32("x")], [7]);
      r.close();
    });
  } finally {
    await hub.close();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: dataset files (datasets--org--name), listing, offline", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "siqvl_io_hubds_" });
  const hub = new FakeHub();
  try {
    const parquet = new Uint8Array(3000).map((_, i) => i % 251);
    const sha = hub.addRepo("datasets/HuggingFaceM4/FineVision", {
      "README.md": "card",
      "ai2d/train-00000-of-00002.parquet": parquet,
      "ai2d/train-00001-of-00002.parquet": "small",
      "chartqa/train-00000-of-00001.parquet": "x",
    });
    const o = { hubUrl: hub.url, cacheDir: join(tmp, "c") };
    assert.deepEqual(
      await listRepoFiles("HuggingFaceM4/FineVision", { ...o, type: "dataset", path: "ai2d" }),
      ["ai2d/train-00000-of-00002.parquet", "ai2d/train-00001-of-00002.parquet"],
    );
    const local = await quiet(() =>
      resolveDatasetFile("HuggingFaceM4/FineVision", "ai2d/train-00000-of-00002.parquet", "main", o)
    );
    assert.equal(
      local,
      join(
        tmp,
        "c",
        "datasets--HuggingFaceM4--FineVision",
        "snapshots",
        sha,
        "ai2d",
        "train-00000-of-00002.parquet",
      ),
    );
    assert.deepEqual(await Deno.readFile(local), parquet);
    assert.ok(
      hub.log.includes(
        `GET /datasets/HuggingFaceM4/FineVision/resolve/${sha}/ai2d/train-00000-of-00002.parquet`,
      ),
    );
    await assert.rejects(
      () => quiet(() => resolveDatasetFile("HuggingFaceM4/FineVision", "nope.parquet", "main", o)),
      /file "nope\.parquet" not found in dataset HuggingFaceM4\/FineVision@main/,
    );
    await hub.close();
    const off = { ...o, offline: true };
    assert.equal(
      await resolveDatasetFile(
        "HuggingFaceM4/FineVision",
        "ai2d/train-00000-of-00002.parquet",
        "main",
        off,
      ),
      local,
    );
    await assert.rejects(
      () =>
        resolveDatasetFile(
          "HuggingFaceM4/FineVision",
          "chartqa/train-00000-of-00001.parquet",
          "main",
          off,
        ),
      /file "chartqa\/train-00000-of-00001\.parquet" of dataset HuggingFaceM4\/FineVision@main is not in the hub cache/,
    );
    assert.deepEqual(
      await listRepoFiles("HuggingFaceM4/FineVision", { ...off, type: "dataset" }),
      ["ai2d/train-00000-of-00002.parquet"],
    );
  } finally {
    await hub.close().catch(() => {});
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("hub: uploadFolder (regular + LFS files) and createTag, then download it back", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "siqvl_io_hubup_" });
  const hub = new FakeHub();
  try {
    const out = join(tmp, "run", "stage1");
    await writeStateDict(out, [
      {
        name: "projector.mlp.weight",
        dtype: "F32",
        shape: [16, 32],
        data: new Float32Array(512).fill(0.5),
      },
    ], { format: "bin" });
    await Deno.writeTextFile(join(out, "config.json"), '{"model_type":"siq_vl"}');
    await Deno.mkdir(join(out, "sub"));
    await Deno.writeTextFile(join(out, "sub", "notes.txt"), "hello");
    await Deno.writeTextFile(join(out, ".hidden"), "skip me");

    await assert.rejects(
      () => withEnv({}, () => uploadFolder("me/siq-vl", out, { hubUrl: hub.url }).then(() => {})),
      /needs a token: set HF_TOKEN/,
    );
    const res = await uploadFolder("me/siq-vl", out, {
      hubUrl: hub.url,
      token: hub.token,
      commitTitle: "stage 1",
    });
    assert.match(res.commit, /^[0-9a-f]{40}$/);
    const repo = hub.repos.get("models/me/siq-vl")!;
    const files = repo.commits.get(res.commit)!;
    assert.deepEqual([...files.keys()].sort(), [
      "config.json",
      "pytorch_model.bin",
      "sub/notes.txt",
    ]);
    assert.deepEqual(
      files.get("pytorch_model.bin"),
      await Deno.readFile(join(out, "pytorch_model.bin")),
    );
    assert.equal(hub.lfs.size, 1, "the .bin went through LFS");
    assert.ok(hub.log.includes("POST /api/repos/create"));
    assert.ok(hub.log.includes("POST /api/models/me/siq-vl/preupload/main"));
    assert.ok(hub.log.includes("POST /me/siq-vl.git/info/lfs/objects/batch"));
    assert.ok(hub.log.includes("POST /api/models/me/siq-vl/commit/main"));

    // Second push into the existing repo (409 on create is fine); tag it.
    await Deno.writeTextFile(join(out, "config.json"), '{"model_type":"siq_vl","v":2}');
    const res2 = await uploadFolder("me/siq-vl", out, { hubUrl: hub.url, token: hub.token });
    assert.notEqual(res2.commit, res.commit);
    await createTag("me/siq-vl", "wandb-abc123", {
      hubUrl: hub.url,
      token: hub.token,
      message: "run",
    });
    assert.equal(repo.refs.get("wandb-abc123"), res2.commit);
    await assert.rejects(
      () => createTag("me/siq-vl", "wandb-abc123", { hubUrl: hub.url, token: hub.token }),
      /cannot create tag "wandb-abc123" on me\/siq-vl@main \(HTTP 409\)/,
    );
    await createTag("me/siq-vl", "wandb-abc123", {
      hubUrl: hub.url,
      token: hub.token,
      existOk: true,
    });

    // Download the tagged revision back and read the weights.
    const snap = await quiet(() =>
      resolveModel("me/siq-vl@wandb-abc123", { hubUrl: hub.url, cacheDir: join(tmp, "c") })
    );
    assert.match(await Deno.readTextFile(join(snap, "config.json")), /"v":2/);
    assert.equal(
      (await Deno.readTextFile(join(tmp, "c", "models--me--siq-vl", "refs", "wandb-abc123")))
        .trim(),
      res2.commit,
    );
    const r = await openTensors(snap);
    assert.deepEqual(r.info("projector.mlp.weight"), { dtype: "F32", shape: [16, 32] });
    assert.equal((await r.readF32("projector.mlp.weight"))[511], 0.5);
    r.close();
  } finally {
    await hub.close();
    await Deno.remove(tmp, { recursive: true });
  }
});
