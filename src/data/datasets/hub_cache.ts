/**
 * A {@link HubClient} over the project's hub module (`src/io/hub.ts`): files are downloaded
 * once into the Hugging Face cache layout (`datasets--org--name/snapshots/<sha>/…`) and then
 * read by position from disk; with `offline` (or `HF_HUB_OFFLINE`) only the cache is used.
 *
 * Use it when shards are read many times (several passes); {@link httpHubClient} streams row
 * groups with range requests and downloads nothing whole.
 *
 * @module
 */

import { type HubOptions, listRepoFiles, resolveDatasetFile } from "../../io/hub.ts";
import { type HubClient, openLocalFile } from "./remote_files.ts";

/** Options of {@link cachedHubClient}: hub location/cache/token/offline plus a revision. */
export interface CachedHubOptions extends HubOptions {
  /** Default "main". */
  revision?: string;
}

/** A hub client that downloads into (or reads from) the local hub cache. */
export function cachedHubClient(opts: CachedHubOptions = {}): HubClient {
  const revision = opts.revision ?? "main";
  return {
    async listFiles(repo, dir) {
      let paths: string[];
      try {
        paths = await listRepoFiles(repo, { ...opts, type: "dataset", revision, path: dir });
      } catch (e) {
        // A folder the repo does not have is an empty listing, not an error.
        if (/not found|404|does not exist/i.test(String(e))) return [];
        throw e;
      }
      const prefix = dir.replace(/\/+$/, "") + "/";
      return paths.filter((p) => p.startsWith(prefix) && !p.slice(prefix.length).includes("/"));
    },
    async openFile(repo, path) {
      return await openLocalFile(await resolveDatasetFile(repo, path, revision, opts));
    },
  };
}
