// push_to_hub: upload a stage's final model directory (files only: no checkpoints, no merged
// export) to a model repo in one commit, then tag that commit `stage{N}-step{S}`.
// Repo id: --hub_model_id, else `siq-vl_{vision}_{text}_stage{N}` in the token owner's namespace.

import { whoAmI } from "../deps.ts";
import { join } from "node:path";
import { createTag, hubEndpoint, hubToken, uploadFolder } from "../io/hub.ts";

/** Options of {@link pushToHub}. */
export interface PushOptions {
  stage: number;
  step?: number;
  log?: (s: string) => void;
  hubUrl?: string;
  token?: string;
  private?: boolean;
}

/** The full repo id: `name` alone gets the token owner's namespace. */
export async function fullRepoId(id: string, hubUrl: string, token: string): Promise<string> {
  if (id.includes("/")) return id;
  let who;
  try {
    who = await whoAmI({ accessToken: token, hubUrl });
  } catch (e) {
    throw new Error(
      `--hub_model_id ${id} has no namespace and the token's owner could not be looked up ` +
        `(${(e as Error).message}); pass --hub_model_id <user>/${id}`,
    );
  }
  return `${who.name}/${id}`;
}

/** Upload the final files of `dir`; returns the commit URL. */
export async function pushToHub(dir: string, hubId: string, opts: PushOptions): Promise<string> {
  const hubUrl = (opts.hubUrl ?? hubEndpoint()).replace(/\/+$/, "");
  const token = opts.token ?? hubToken();
  if (!token) throw new Error("--push_to_hub needs a write token: set HF_TOKEN");
  const repo = await fullRepoId(hubId, hubUrl, token);
  // A clean folder with the final files only (hard links where possible).
  const staging = join(dir, `.hub-upload-${Deno.pid}`);
  await Deno.remove(staging, { recursive: true }).catch(() => {});
  await Deno.mkdir(staging);
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (!e.isFile || e.name.startsWith(".")) continue;
      const src = join(dir, e.name), dst = join(staging, e.name);
      try {
        await Deno.link(src, dst);
      } catch {
        await Deno.copyFile(src, dst);
      }
    }
    let step = opts.step;
    if (step === undefined) {
      try {
        step = JSON.parse(await Deno.readTextFile(join(dir, "trainer_state.json"))).global_step;
      } catch { /* no state */ }
    }
    opts.log?.(`[siqvl] uploading ${dir} to ${repo} on ${hubUrl}`);
    const res = await uploadFolder(repo, staging, {
      token,
      hubUrl,
      private: opts.private,
      commitTitle: `SiQ-VL stage ${opts.stage}${step !== undefined ? ` at step ${step}` : ""}`,
    });
    const tag = `stage${opts.stage}${step !== undefined ? `-step${step}` : ""}`;
    await createTag(repo, tag, { token, hubUrl, revision: res.commit, existOk: true });
    opts.log?.(`[siqvl] tagged ${repo}@${res.commit.slice(0, 8)} as ${tag}`);
    return res.url;
  } finally {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
  }
}
