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
import { FakeHub, hex, quiet, withEnv } from "./fake_hub.ts";

const te = new TextEncoder();

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
