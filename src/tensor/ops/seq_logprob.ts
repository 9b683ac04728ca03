// Per-sequence log-probabilities of label tokens under a linear head (shaders/seq_logprob.wgsl).
//
//   sequenceLogProbs(h, w, targets, segments, numSeqs, {average?, tileBytes?}) → [S] f32
//     h: [N, H] f32 hidden states (already aligned with targets: row i predicts targets[i]),
//     w: [V, H] f32 | f16 | bf16 (the LM head), targets: CPU i32 [N] (−100 = not counted),
//     segments: CPU i32 [N], the sequence (0 .. S−1) each counted token belongs to.
//     out[s] = Σ_{i ∈ s} log softmax(h_i · wᵀ)[t_i]        (average: divided by |s|, 0 if empty)
//   This is what preference losses need (TRL's "logps": summed completion log-probs, or their
//   per-token average for IPO / SimPO / ORPO), for the policy and the reference alike.
//
// Memory: only the counted rows are touched (gathered from h), in chunks whose logits tile
// [chunk, V] f32 fits `tileBytes` (the fused linear + cross-entropy's budget by default); the
// [N, V] logits never exist. Forward keeps the per-token logsumexp [Ns] only.
// Backward (upstream g [S]): per-token weights a_i = g[s_i] (/ |s_i|), then per chunk the logits
// are recomputed and turned in place into G_i = a_i · (onehot(t_i) − softmax(z_i)), the
// derivative of a_i · log p_i; dh_i = G_i · W and dW = Σ_chunks Gᵀ · h_chunk.
// Autograd: inputs [h, w] (dW is f32; w must be f32 to receive it).

import type { BindingLike } from "../../gpu/device.ts";
import { noGrad, record, Tensor, tidy } from "../tensor.ts";
import { addInPlace, zeros } from "./elementwise.ts";
import { gatherRows, scatterRows } from "./embedding.ts";
import { LINEAR_CE_TILE_BYTES } from "./linear_ce.ts";
import { matmul } from "./matmul.ts";

const SHADER = "seq_logprob";
const WG = 64;

/** Options of sequenceLogProbs. */
export interface SeqLogProbOptions {
  /** Per-token mean instead of the sum (TRL's `average_log_prob`). */
  average?: boolean;
  /** Budget in bytes of one [chunk, V] f32 logits tile (default: linear_ce's, 32 MiB). */
  tileBytes?: number;
}

/** The counted tokens, sorted by sequence: their rows in h, targets, sequence ids, offsets. */
interface Selection {
  rows: Int32Array;
  tgt: Int32Array;
  seg: Int32Array;
  /** [S + 1]: tokens of sequence s are offs[s] .. offs[s+1]−1 of the selection. */
  offs: Int32Array;
}

function select(
  targets: ArrayLike<number>,
  segments: ArrayLike<number>,
  S: number,
  V: number,
): Selection {
  const op = "sequenceLogProbs";
  const counts = new Int32Array(S + 1);
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    if (t === -100) continue;
    if (!(Number.isInteger(t) && t >= 0 && t < V)) {
      throw new Error(`${op}: targets[${i}] = ${t} is outside [0, ${V}) and not −100`);
    }
    const s = segments[i];
    if (!(Number.isInteger(s) && s >= 0 && s < S)) {
      throw new Error(`${op}: segments[${i}] = ${s} is outside [0, ${S}) for a counted token`);
    }
    counts[s + 1]++;
  }
  for (let s = 0; s < S; s++) counts[s + 1] += counts[s];
  const ns = counts[S];
  const rows = new Int32Array(ns), tgt = new Int32Array(ns), seg = new Int32Array(ns);
  const next = counts.slice(0, S);
  for (let i = 0; i < targets.length; i++) {
    if (targets[i] === -100) continue;
    const s = segments[i];
    const j = next[s]++;
    rows[j] = i;
    tgt[j] = targets[i];
    seg[j] = s;
  }
  return { rows, tgt, seg, offs: counts };
}

/** Token counts per sequence (the |s| the average divides by). */
export function sequenceTokenCounts(
  targets: ArrayLike<number>,
  segments: ArrayLike<number>,
  S: number,
): Int32Array {
  const out = new Int32Array(S);
  for (let i = 0; i < targets.length; i++) if (targets[i] !== -100) out[segments[i]]++;
  return out;
}

/**
 * Σ (or mean) over each sequence's counted tokens of log p(target), computed chunk by chunk
 * without the full logits. See the file header.
 */
export function sequenceLogProbs(
  h: Tensor,
  w: Tensor,
  targets: ArrayLike<number>,
  segments: ArrayLike<number>,
  numSeqs: number,
  opts: SeqLogProbOptions = {},
): Tensor {
  const op = "sequenceLogProbs";
  if (h.dtype !== "f32" || h.ndim !== 2) {
    throw new Error(`${op}: h must be f32 [N, H], got ${h.describe()}`);
  }
  const [N, H] = h.shape;
  if (w.ndim !== 2 || w.shape[1] !== H || w.dtype === "i32") {
    throw new Error(`${op}: w must be [V, ${H}] f32/f16/bf16, got ${w.describe()}`);
  }
  if (targets.length !== N || segments.length !== N) {
    throw new Error(
      `${op}: targets (${targets.length}) and segments (${segments.length}) must have ${N} ` +
        `entries, one per row of h`,
    );
  }
  if (!(Number.isInteger(numSeqs) && numSeqs >= 1)) {
    throw new Error(`${op}: numSeqs must be a positive integer, got ${numSeqs}`);
  }
  const V = w.shape[0], S = numSeqs, avg = opts.average ? 1 : 0;
  const sel = select(targets, segments, S, V);
  const ns = sel.rows.length;
  const gpu = h.gpu;
  const budget = Math.min(
    opts.tileBytes ?? LINEAR_CE_TILE_BYTES,
    gpu.limits.maxStorageBufferBindingSize,
  );
  const chunk = Math.max(1, Math.floor(budget / (V * 4)));
  const uni = (n: number, t0: number) => [n, V, t0, S, avg, ns];

  const offsT = Tensor.from(gpu, sel.offs, [S + 1], "i32");
  const out = Tensor.empty(gpu, [S], "f32");
  const perSeq = (entry: string, bindings: (BindingLike | null)[]) =>
    gpu.dispatch({
      shader: SHADER,
      entry,
      uniforms: uni(0, 0),
      bindings,
      workgroups: entry === "seq_reduce" ? S : Math.ceil(ns / WG),
      label: `seq_logprob ${entry}`,
    });
  const reduce = (logp: Tensor) =>
    perSeq("seq_reduce", [
      null,
      null,
      null,
      logp.binding(),
      null,
      offsT.binding(),
      null,
      out.binding(),
    ]);
  if (ns === 0) {
    const none = Tensor.empty(gpu, [1], "f32"); // never read: every sequence is empty
    reduce(none);
    none.dispose();
    offsT.dispose();
    return out;
  }
  const rowsT = Tensor.from(gpu, sel.rows, [ns], "i32");
  const tgtT = Tensor.from(gpu, sel.tgt, [ns], "i32");
  const segT = Tensor.from(gpu, sel.seg, [ns], "i32");
  const lse = Tensor.empty(gpu, [ns], "f32");
  const idxOf = (t0: number, n: number) =>
    Tensor.from(gpu, sel.rows.subarray(t0, t0 + n), [n], "i32");
  // The logits of selected tokens t0 .. t0+n−1: [n, V] (rows gathered from h), no tape.
  const tileOf = (t0: number, n: number): Tensor =>
    noGrad(() => tidy(() => matmul(gatherRows(h, idxOf(t0, n)), w, { transB: true })));
  const perRow = (entry: string, tile: Tensor, t0: number, n: number, extra: Tensor) =>
    gpu.dispatch({
      shader: SHADER,
      entry,
      uniforms: uni(n, t0),
      bindings: entry === "row_stats"
        ? [tile.binding(), tgtT.binding(), lse.binding(), extra.binding()]
        : [tile.binding(), tgtT.binding(), lse.binding(), null, null, null, extra.binding()],
      workgroups: n,
      label: `seq_logprob ${entry}`,
    });

  const logp = Tensor.empty(gpu, [ns], "f32");
  for (let t0 = 0; t0 < ns; t0 += chunk) {
    const n = Math.min(chunk, ns - t0);
    const tile = tileOf(t0, n);
    perRow("row_stats", tile, t0, n, logp);
    tile.dispose();
  }
  reduce(logp);
  logp.dispose();

  const result = record(op, out, [h, w], (g) => {
    // runs under noGrad (the tape's backward)
    const wts = Tensor.empty(gpu, [ns], "f32");
    perSeq("token_weights", [
      null,
      null,
      null,
      null,
      segT.binding(),
      offsT.binding(),
      wts.binding(),
      g.binding(),
    ]);
    const dhSel = h.requiresGrad ? Tensor.empty(gpu, [ns, H], "f32") : null;
    let dW: Tensor | null = null;
    for (let t0 = 0; t0 < ns; t0 += chunk) {
      const n = Math.min(chunk, ns - t0);
      const tile = tileOf(t0, n);
      perRow("grad_rows", tile, t0, n, wts); // tile → G
      if (dhSel) {
        const part = matmul(tile, w); // [n, H]
        gpu.copy(part.storage.buffer, 0, dhSel.storage.buffer, t0 * H * 4, n * H * 4);
        part.dispose();
      }
      if (w.requiresGrad) {
        const idx = idxOf(t0, n);
        const hc = gatherRows(h, idx);
        const part = matmul(tile, hc, { transA: true }); // Gᵀ · h_chunk: [V, H]
        idx.dispose();
        hc.dispose();
        if (dW) {
          addInPlace(dW, part);
          part.dispose();
        } else dW = part;
      }
      tile.dispose();
    }
    wts.dispose();
    let dh: Tensor | null = null;
    if (dhSel) {
      const z = zeros(gpu, [N, H]);
      dh = scatterRows(z, rowsT, dhSel);
      z.dispose();
      dhSel.dispose();
    }
    return [dh, dW];
  }, [h, w, rowsT, tgtT, segT, offsT, lse]);
  for (const t of [rowsT, tgtT, segT, offsT, lse]) t.dispose();
  return result;
}
