// Hugging Face Hub access in the Python cache layout, so that models a Python user already
// downloaded load here with no network, and what is downloaded here is shared with Python.
//
//   <cache>/models--org--name/blobs/<etag>                 file contents
//   <cache>/models--org--name/snapshots/<commit>/<path>    relative symlinks into blobs/
//   <cache>/models--org--name/refs/<revision>              commit sha of a branch or tag
//   (datasets--org--name/… for datasets)
//
// <cache> is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub. The endpoint is $HF_ENDPOINT (passed to @huggingface/hub as
// hubUrl, which it does not read itself), the token $HF_TOKEN or the token file, and
// HF_HUB_OFFLINE=1 resolves from the cache only. Downloads go through @huggingface/hub's
// downloadFileToCacheDir, always at a resolved commit so snapshots are keyed by commit sha.

import {
  createRepo,
  datasetInfo,
  downloadFileToCacheDir,
  HubApiError,
  listFiles,
  modelInfo,
  uploadFiles,
} from "../deps.ts";
import { homedir } from "node:os";
import { exists } from "./file.ts";
import { pathToFileURL } from "node:url";
import { isAbsolute, join, normalize, relative, resolve, sep } from "node:path";

/** Where the hub lives and how to reach it; every field falls back to the environment. */
export interface HubOptions {
  /** Hub base URL; default $HF_ENDPOINT or https://huggingface.co. */
  hubUrl?: string;
  /** Cache directory; default $HF_HUB_CACHE, $HF_HOME/hub, … (see module doc). */
  cacheDir?: string;
  /** Access token; default $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, or the token file. */
  token?: string;
  /** Cache only, no network; default from $HF_HUB_OFFLINE. */
  offline?: boolean;
}

/** Options for {@link resolveModel}. */
export interface ResolveModelOptions extends HubOptions {
  /**
   * Files to make available: explicit repo paths, or "auto" (default): top-level config,
   * tokenizer and processor files (*.json, *.txt, *.jinja, *.model, *.tiktoken) plus one set
   * of weights (model.safetensors, its sharded index and shards, pytorch_model.bin, its index
   * and shards, or a PEFT adapter_model.*), in that order of preference.
   */
  files?: string[] | "auto";
  /** Revision (branch, tag or commit) when the spec has no `@revision`; default "main". */
  revision?: string;
}

/** A repo id and revision parsed from `org/name[@revision]`. */
export interface RepoSpec {
  /** "org/name" (or "name"). */
  repo: string;
  /** Branch, tag or commit sha. */
  revision: string;
}

const DEFAULT_ENDPOINT = "https://huggingface.co";
const COMMIT_RE = /^[0-9a-f]{40}$/;
const REPO_RE = /^(?:[A-Za-z0-9][\w.-]*\/)?[A-Za-z0-9][\w.-]*$/;

function env(name: string): string | undefined {
  try {
    const v = Deno.env.get(name);
    return v === undefined || v === "" ? undefined : v;
  } catch {
    return undefined; // no --allow-env: behave as unset
  }
}

function expandHome(p: string): string {
  return p === "~" || p.startsWith("~/") ? join(homedir(), p.slice(1)) : p;
}

const TRUE_VALUES = new Set(["1", "ON", "YES", "TRUE"]);

/** True when $HF_HUB_OFFLINE is 1/on/yes/true (as huggingface_hub reads it). */
export function isOfflineEnv(): boolean {
  const v = env("HF_HUB_OFFLINE");
  return v !== undefined && TRUE_VALUES.has(v.trim().toUpperCase());
}

function hfHome(): string {
  const home = env("HF_HOME");
  if (home) return expandHome(home);
  const xdg = env("XDG_CACHE_HOME");
  return join(xdg ? expandHome(xdg) : join(homedir(), ".cache"), "huggingface");
}

/** The hub cache directory from the environment (see module doc). */
export function hubCacheDir(): string {
  const direct = env("HF_HUB_CACHE") ?? env("HUGGINGFACE_HUB_CACHE");
  return direct ? expandHome(direct) : join(hfHome(), "hub");
}

/** The hub endpoint: $HF_ENDPOINT or https://huggingface.co, without a trailing slash. */
export function hubEndpoint(): string {
  return (env("HF_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
}

/** The access token: $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, or the file $HF_TOKEN_PATH / $HF_HOME/token. */
export function hubToken(): string | undefined {
  const t = env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN");
  if (t) return t.trim();
  const file = env("HF_TOKEN_PATH") ?? join(hfHome(), "token");
  try {
    const s = Deno.readTextFileSync(expandHome(file)).trim();
    return s === "" ? undefined : s;
  } catch {
    return undefined;
  }
}

interface Resolved {
  hubUrl: string;
  cacheDir: string;
  token?: string;
  offline: boolean;
}

function resolveOptions(o: HubOptions): Resolved {
  return {
    hubUrl: (o.hubUrl ?? hubEndpoint()).replace(/\/+$/, ""),
    cacheDir: o.cacheDir ?? hubCacheDir(),
    token: o.token ?? hubToken(),
    offline: o.offline ?? isOfflineEnv(),
  };
}

/** Parse `org/name[@revision]` (also `name[@revision]`); throws for anything else. */
export function parseRepoSpec(spec: string, defaultRevision = "main"): RepoSpec {
  const at = spec.indexOf("@");
  const repo = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? defaultRevision : spec.slice(at + 1);
  if (!REPO_RE.test(repo) || repo.includes("..") || revision === "" || revision.includes("..")) {
    throw new Error(`not a hub repo id "org/name[@revision]": ${spec}`);
  }
  return { repo, revision };
}

/** Which kind of hub repo. */
export type RepoKind = "model" | "dataset";

function repoFolder(kind: RepoKind, repo: string): string {
  return `${kind}s--${repo.split("/").join("--")}`;
}

/** Reject repo paths that would leave the snapshot directory. */
function checkRepoPath(path: string, what: string): void {
  const n = normalize(path);
  if (path === "" || isAbsolute(path) || n === ".." || n.startsWith(`..${sep}`)) {
    throw new Error(`invalid file path "${path}" in ${what}`);
  }
}

function describe(kind: RepoKind, repo: string, revision: string): string {
  return `${kind === "dataset" ? "dataset " : ""}${repo}@${revision}`;
}

/** Commit sha that `revision` names in the cache, or undefined. */
async function cachedCommit(storage: string, revision: string): Promise<string | undefined> {
  if (COMMIT_RE.test(revision)) {
    return (await exists(join(storage, "snapshots", revision))) ? revision : undefined;
  }
  try {
    const sha = (await Deno.readTextFile(join(storage, "refs", revision))).trim();
    return COMMIT_RE.test(sha) ? sha : undefined;
  } catch {
    return undefined;
  }
}

async function writeRef(storage: string, revision: string, sha: string): Promise<void> {
  if (revision === sha) return;
  const refPath = join(storage, "refs", revision);
  await Deno.mkdir(join(refPath, ".."), { recursive: true });
  await Deno.writeTextFile(refPath, sha);
}

function isNetworkError(e: unknown): boolean {
  return e instanceof TypeError && !(e instanceof HubApiError);
}

function apiError(e: unknown, kind: RepoKind, repo: string, revision: string, o: Resolved): Error {
  const what = describe(kind, repo, revision);
  if (isNetworkError(e)) {
    return new Error(`cannot reach ${o.hubUrl} for ${what}: ${(e as Error).message}`);
  }
  if (e instanceof HubApiError) {
    if (e.statusCode === 401 || e.statusCode === 403 || e.statusCode === 404) {
      return new Error(
        `cannot access ${what} on ${o.hubUrl} (HTTP ${e.statusCode}): check the repo id and ` +
          `revision; private or gated repos need a token (HF_TOKEN)${o.token ? "" : " — none set"}`,
      );
    }
    return new Error(`hub error for ${what} on ${o.hubUrl}: ${e.message}`);
  }
  return e as Error;
}

async function remoteCommit(
  kind: RepoKind,
  repo: string,
  revision: string,
  o: Resolved,
): Promise<string> {
  if (COMMIT_RE.test(revision)) return revision;
  const params = {
    name: repo,
    revision,
    hubUrl: o.hubUrl,
    accessToken: o.token,
    additionalFields: ["sha" as const],
  };
  const info = kind === "dataset" ? await datasetInfo(params) : await modelInfo(params);
  const sha = (info as { sha?: unknown }).sha;
  if (typeof sha !== "string" || !COMMIT_RE.test(sha)) {
    throw new Error(`hub returned no commit sha for ${describe(kind, repo, revision)}`);
  }
  return sha;
}

async function listTopLevel(kind: RepoKind, repo: string, sha: string, o: Resolved) {
  const out: string[] = [];
  for await (
    const e of listFiles({
      repo: { type: kind, name: repo },
      revision: sha,
      hubUrl: o.hubUrl,
      accessToken: o.token,
    })
  ) {
    if (e.type === "file") out.push(e.path);
  }
  return out;
}

async function download(
  kind: RepoKind,
  repo: string,
  sha: string,
  path: string,
  o: Resolved,
  revision: string,
): Promise<void> {
  checkRepoPath(path, describe(kind, repo, revision));
  try {
    await downloadFileToCacheDir({
      repo: { type: kind, name: repo },
      path,
      revision: sha,
      hubUrl: o.hubUrl,
      cacheDir: o.cacheDir,
      accessToken: o.token,
    });
  } catch (e) {
    if (e instanceof Error && /cannot get path info|invalid response for file/.test(e.message)) {
      throw new Error(`file "${path}" not found in ${describe(kind, repo, revision)}`);
    }
    throw apiError(e, kind, repo, revision, o);
  }
}

const SUPPORT_FILE = /^[^/]+\.(json|txt|jinja|model|tiktoken)$/;
const WEIGHT_CHOICES = [
  "model.safetensors",
  "model.safetensors.index.json",
  "pytorch_model.bin",
  "pytorch_model.bin.index.json",
  "adapter_model.safetensors",
  "adapter_model.bin",
];

/** Shard file names listed by an index file (validated to stay inside the snapshot). */
async function shardsOf(indexPath: string, what: string): Promise<string[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    throw new Error(`invalid index ${indexPath} in ${what}: ${(e as Error).message}`);
  }
  const map = (raw as { weight_map?: unknown })?.weight_map;
  if (map === null || typeof map !== "object") {
    throw new Error(`invalid index ${indexPath} in ${what}: no weight_map`);
  }
  const files = new Set<string>();
  for (const f of Object.values(map as Record<string, unknown>)) {
    if (typeof f !== "string") throw new Error(`invalid index ${indexPath} in ${what}`);
    checkRepoPath(f, what);
    files.add(f);
  }
  return [...files];
}

/**
 * Turn a model argument into a local directory holding its files: an existing directory is
 * returned as is; `org/name[@revision]` is resolved against the hub cache, downloading what is
 * missing (unless offline) and returning `<cache>/models--org--name/snapshots/<commit>`.
 * When the hub cannot be reached, a cached snapshot of the revision is used instead.
 */
export async function resolveModel(
  spec: string,
  options: ResolveModelOptions = {},
): Promise<string> {
  try {
    const st = await Deno.stat(spec);
    if (st.isDirectory) return spec;
    throw new Error(`model argument ${spec} is a file; expected a directory or org/name[@rev]`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  let parsed: RepoSpec;
  try {
    parsed = parseRepoSpec(spec, options.revision ?? "main");
  } catch {
    throw new Error(
      `no such model directory, and not a hub repo id "org/name[@revision]": ${spec}`,
    );
  }
  const o = resolveOptions(options);
  const files = options.files ?? "auto";
  const { repo, revision } = parsed;
  if (o.offline) return await fromCache("model", repo, revision, files, o, "HF_HUB_OFFLINE is set");
  if (COMMIT_RE.test(revision)) {
    // A commit never changes: a complete cached snapshot needs no network.
    try {
      return await fromCache("model", repo, revision, files, o, "");
    } catch {
      // incomplete: fetch what is missing below
    }
  }

  let sha: string;
  try {
    sha = await remoteCommit("model", repo, revision, o);
  } catch (e) {
    if (isNetworkError(e)) {
      return await fromCache(
        "model",
        repo,
        revision,
        files,
        o,
        `cannot reach ${o.hubUrl} (${(e as Error).message})`,
      );
    }
    throw apiError(e, "model", repo, revision, o);
  }
  const storage = join(o.cacheDir, repoFolder("model", repo));
  const snapshot = join(storage, "snapshots", sha);
  const what = describe("model", repo, revision);
  let wanted: string[];
  if (files === "auto") {
    let listing: string[];
    try {
      listing = await listTopLevel("model", repo, sha, o);
    } catch (e) {
      throw apiError(e, "model", repo, revision, o);
    }
    const have = new Set(listing);
    wanted = listing.filter((f) => SUPPORT_FILE.test(f) && !f.endsWith(".index.json"));
    const weights = WEIGHT_CHOICES.find((w) => have.has(w));
    if (weights) wanted.push(weights);
  } else {
    wanted = [...files];
  }
  for (const f of wanted) {
    if (!(await exists(join(snapshot, f)))) await download("model", repo, sha, f, o, revision);
  }
  for (const index of wanted.filter((f) => f.endsWith(".index.json") && f.includes("model"))) {
    for (const shard of await shardsOf(join(snapshot, index), what)) {
      if (!(await exists(join(snapshot, shard)))) {
        await download("model", repo, sha, shard, o, revision);
      }
    }
  }
  await Deno.mkdir(snapshot, { recursive: true });
  await writeRef(storage, revision, sha);
  return snapshot;
}

async function fromCache(
  kind: RepoKind,
  repo: string,
  revision: string,
  files: string[] | "auto",
  o: Resolved,
  why: string,
): Promise<string> {
  const what = describe(kind, repo, revision);
  const storage = join(o.cacheDir, repoFolder(kind, repo));
  const hint = `${why}; download it once online, or point HF_HUB_CACHE / HF_HOME at a cache ` +
    `that has it`;
  if (!(await exists(storage))) {
    throw new Error(`${what} is not in the hub cache ${o.cacheDir} (${hint})`);
  }
  const sha = await cachedCommit(storage, revision);
  if (!sha && COMMIT_RE.test(revision)) {
    throw new Error(`snapshot ${revision} of ${what} is not in the hub cache ${storage} (${hint})`);
  }
  if (!sha) {
    throw new Error(
      `revision "${revision}" of ${kind === "dataset" ? "dataset " : ""}${repo} is not in the ` +
        `hub cache (no refs/${revision} in ${storage}; ${hint})`,
    );
  }
  const snapshot = join(storage, "snapshots", sha);
  if (!(await exists(snapshot))) {
    throw new Error(`snapshot ${sha} of ${what} is missing from ${storage} (${hint})`);
  }
  const missing = async (f: string) => {
    checkRepoPath(f, what);
    if (!(await exists(join(snapshot, f)))) {
      throw new Error(`file "${f}" of ${what} is not in the hub cache (${snapshot}; ${hint})`);
    }
  };
  if (files === "auto") {
    await missing("config.json");
    let weights: string | undefined;
    for (const w of WEIGHT_CHOICES) {
      if (await exists(join(snapshot, w))) {
        weights = w;
        break;
      }
    }
    if (!weights) {
      throw new Error(
        `no weights of ${what} in the hub cache (${snapshot} has none of ` +
          `${WEIGHT_CHOICES.join(", ")}; ${hint})`,
      );
    }
    if (weights.endsWith(".index.json")) {
      for (const s of await shardsOf(join(snapshot, weights), what)) await missing(s);
    }
  } else {
    for (const f of files) await missing(f);
  }
  return snapshot;
}

/**
 * Local path of one file of a dataset repo (`datasets--org--name` in the cache), downloading it
 * unless it is cached or the hub is offline.
 */
export async function resolveDatasetFile(
  repo: string,
  path: string,
  revision = "main",
  options: HubOptions = {},
): Promise<string> {
  parseRepoSpec(repo);
  const o = resolveOptions(options);
  const what = describe("dataset", repo, revision);
  checkRepoPath(path, what);
  const storage = join(o.cacheDir, repoFolder("dataset", repo));
  const cached = async (why: string) => {
    const snap = await fromCache("dataset", repo, revision, [path], o, why);
    return join(snap, path);
  };
  if (o.offline) return await cached("HF_HUB_OFFLINE is set");
  let sha: string;
  try {
    sha = await remoteCommit("dataset", repo, revision, o);
  } catch (e) {
    if (isNetworkError(e)) {
      return await cached(`cannot reach ${o.hubUrl} (${(e as Error).message})`);
    }
    throw apiError(e, "dataset", repo, revision, o);
  }
  const local = join(storage, "snapshots", sha, path);
  if (!(await exists(local))) await download("dataset", repo, sha, path, o, revision);
  await writeRef(storage, revision, sha);
  return local;
}

/** Options for {@link listRepoFiles}. */
export interface ListRepoFilesOptions extends HubOptions {
  /** "model" (default) or "dataset". */
  type?: RepoKind;
  /** Branch, tag or commit (default "main"). */
  revision?: string;
  /** Folder inside the repo to list (default: the whole repo). */
  path?: string;
}

/**
 * Paths of all files in a repo (recursively, optionally under `path`), from the hub, or from
 * the cached snapshot when offline (only the files downloaded so far).
 */
export async function listRepoFiles(
  repo: string,
  options: ListRepoFilesOptions = {},
): Promise<string[]> {
  parseRepoSpec(repo);
  const kind = options.type ?? "model";
  const revision = options.revision ?? "main";
  const o = resolveOptions(options);
  if (options.path) checkRepoPath(options.path, describe(kind, repo, revision));
  if (o.offline) {
    const storage = join(o.cacheDir, repoFolder(kind, repo));
    const sha = await cachedCommit(storage, revision);
    if (!sha) {
      throw new Error(
        `${describe(kind, repo, revision)} is not in the hub cache ${o.cacheDir} ` +
          `(HF_HUB_OFFLINE is set)`,
      );
    }
    const root = join(storage, "snapshots", sha);
    const out: string[] = [];
    const walk = async (dir: string) => {
      for await (const e of Deno.readDir(dir)) {
        const p = join(dir, e.name);
        if (e.isDirectory) await walk(p);
        else out.push(relative(root, p).split(sep).join("/"));
      }
    };
    const start = options.path ? join(root, options.path) : root;
    if (await exists(start)) await walk(start);
    return out.sort();
  }
  const out: string[] = [];
  try {
    for await (
      const e of listFiles({
        repo: { type: kind, name: repo },
        revision,
        path: options.path,
        recursive: true,
        hubUrl: o.hubUrl,
        accessToken: o.token,
      })
    ) {
      if (e.type === "file") out.push(e.path);
    }
  } catch (e) {
    throw apiError(e, kind, repo, revision, o);
  }
  return out.sort();
}

// ---------------------------------------------------------------------------------------------
// Upload (push_to_hub).

/** Options for {@link uploadFolder}. */
export interface UploadFolderOptions {
  /** Write token; default from the environment (HF_TOKEN or the token file). */
  token?: string;
  /** Hub base URL; default $HF_ENDPOINT or https://huggingface.co. */
  hubUrl?: string;
  /** Commit title (default "Upload N files"). */
  commitTitle?: string;
  /** Commit description. */
  commitDescription?: string;
  /** Branch to commit to (default "main"). */
  branch?: string;
  /** Create the repo first if it does not exist (default true). */
  createRepo?: boolean;
  /** Visibility when creating (default public). */
  private?: boolean;
}

/** Files under `dir` to upload, as repo paths, skipping hidden files and folders except .gitattributes. */
async function folderFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.name.startsWith(".") && e.name !== ".gitattributes") continue;
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.isFile || e.isSymlink) out.push(relative(dir, p).split(sep).join("/"));
    }
  };
  await walk(dir);
  return out.sort();
}

/**
 * Upload every file under `dir` to model repo `repoId` in one commit (large files go through
 * the hub's LFS/xet storage, handled by @huggingface/hub). Creates the repo when needed.
 * Returns the new commit sha and URL.
 */
export async function uploadFolder(
  repoId: string,
  dir: string,
  options: UploadFolderOptions = {},
): Promise<{ commit: string; url: string }> {
  parseRepoSpec(repoId);
  const token = options.token ?? hubToken();
  if (!token) throw new Error(`pushing ${repoId} to the hub needs a token: set HF_TOKEN`);
  const hubUrl = (options.hubUrl ?? hubEndpoint()).replace(/\/+$/, "");
  const paths = await folderFiles(dir);
  if (paths.length === 0) throw new Error(`nothing to upload: ${dir} has no files`);
  if (options.createRepo ?? true) {
    try {
      await createRepo({
        repo: { type: "model", name: repoId },
        accessToken: token,
        hubUrl,
        private: options.private,
      });
    } catch (e) {
      if (!(e instanceof HubApiError && e.statusCode === 409)) {
        throw new Error(`cannot create ${repoId} on ${hubUrl}: ${(e as Error).message}`);
      }
    }
  }
  const abs = resolve(dir);
  let out;
  try {
    out = await uploadFiles({
      repo: { type: "model", name: repoId },
      accessToken: token,
      hubUrl,
      branch: options.branch,
      commitTitle: options.commitTitle ?? `Upload ${paths.length} files`,
      commitDescription: options.commitDescription,
      files: paths.map((p) => ({ path: p, content: pathToFileURL(join(abs, p)) })),
    });
  } catch (e) {
    throw new Error(`upload of ${dir} to ${repoId} on ${hubUrl} failed: ${(e as Error).message}`);
  }
  if (!out) throw new Error(`upload of ${dir} to ${repoId} returned no commit`);
  return { commit: out.commit.oid, url: out.commit.url };
}

/** Options for {@link createTag}. */
export interface CreateTagOptions {
  /** Write token; default from the environment. */
  token?: string;
  /** Hub base URL; default $HF_ENDPOINT or https://huggingface.co. */
  hubUrl?: string;
  /** What to tag (branch or commit; default "main"). */
  revision?: string;
  /** Tag message. */
  message?: string;
  /** Succeed when the tag already exists (default false). */
  existOk?: boolean;
}

/** Create a git tag on a model repo (POST /api/models/{repo}/tag/{revision}). */
export async function createTag(
  repoId: string,
  tag: string,
  options: CreateTagOptions = {},
): Promise<void> {
  parseRepoSpec(repoId);
  const token = options.token ?? hubToken();
  if (!token) throw new Error(`tagging ${repoId} needs a token: set HF_TOKEN`);
  const hubUrl = (options.hubUrl ?? hubEndpoint()).replace(/\/+$/, "");
  const revision = options.revision ?? "main";
  const res = await fetch(
    `${hubUrl}/api/models/${repoId}/tag/${encodeURIComponent(revision)}`,
    {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ tag, ...(options.message ? { message: options.message } : {}) }),
    },
  );
  const text = await res.text();
  if (res.ok || (res.status === 409 && options.existOk)) return;
  throw new Error(
    `cannot create tag "${tag}" on ${repoId}@${revision} (HTTP ${res.status}): ${text}`,
  );
}
