// Fused scaled-dot-product attention (shaders/attention.wgsl).
//
//   attention(q, k, v, {causal, keyMask?, qOffset?, scale?})
//     q [B, T, Hq, D], k / v [B, S, Hkv, D] f32 → out [B, T, Hq, D]
//     keyMask i32 [B, S] (1 = attend, 0 = masked); query row i sits at position qOffset + i and,
//     when causal, sees key j iff j <= qOffset + i; GQA: query head h uses kv head
//     floor(h / (Hq / Hkv)); scale defaults to D^-0.5. Rows that see no key give 0 (and 0
//     gradient). The forward keeps only logsumexp [B, Hq, T]; backward recomputes the
//     probabilities block by block (no [T, S] tensor ever exists). With at most 8 query rows per
//     kv head (decode) the forward splits the keys over many invocations and merges the parts.
//   softmax(x)   see softmax.ts.
//   rope(x, positions, theta)   rotary position embedding, see rope.ts.

import { f32 } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import { record, Tensor } from "../tensor.ts";
import { useGpuKernels } from "../variants.ts";
import { type AttentionDims, attentionTiledForward } from "./attention_tiled.ts";

export { rope, ropeInvFreq } from "./rope.ts";

/** Options of {@link attention}. */
export interface AttentionOptions {
  /** Key j visible to query i iff j <= qOffset + i. */
  causal: boolean;
  /** i32 [B, S]: 1 = attend, 0 = masked key (padding). */
  keyMask?: Tensor;
  /** Position of query row 0 (KV-cache decode: the cache length before this step); only
   * matters when causal. */
  qOffset?: number;
  /** Score scale (default D^-0.5). */
  scale?: number;
}

/** Largest head dimension the kernels hold per invocation (4 · MAXD4 in attention.wgsl). */
export const ATTENTION_MAX_HEAD_DIM = 128;

// Arguments of shaders/attention.wgsl.
const K = kernel("attention", {
  uniforms: [
    "T",
    "S",
    "Hq",
    "Hkv",
    "D4",
    "G",
    "qoff",
    "causal",
    "masked",
    "scale",
    "nstat",
    "nsplit",
    "slen",
  ],
  bindings: [
    "q",
    "k",
    "v",
    "kmask",
    "dout",
    "o",
    "lse",
    "stats",
    "dq",
    "dk",
    "dv",
    "part_ml",
    "part_acc",
  ],
});

const ROWS_PER_WG = 64; // query rows (fwd, dq) or keys (dkdv) per workgroup
const PREP_WG = 64;
/** Decode path (fwd_split): at most this many query rows per kv group, at least this many keys. */
const SPLIT_MAX_ROWS = 8;
const SPLIT_MIN_KEYS = 64;
/** Keys per split at least, and splits per kv group at most (a multiple of 8). */
const SPLIT_KEYS = 32;
const SPLIT_MAX = 64;

type Dims = AttentionDims;

function checkInputs(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Dims {
  for (const [name, t] of [["q", q], ["k", k], ["v", v]] as const) {
    if (t.dtype !== "f32") throw new Error(`attention: ${name} must be f32, got ${t.describe()}`);
    if (t.ndim !== 4) {
      throw new Error(`attention: ${name} must be 4-D [B, T|S, heads, D], got ${t.describe()}`);
    }
  }
  const [B, T, Hq, D] = q.shape;
  const [Bk, S, Hkv, Dk] = k.shape;
  if (!k.shape.every((d, i) => d === v.shape[i])) {
    throw new Error(`attention: k ${k.describe()} and v ${v.describe()} differ in shape`);
  }
  if (Bk !== B || Dk !== D) {
    throw new Error(
      `attention: q ${q.describe()} and k ${k.describe()} disagree on batch or head dim`,
    );
  }
  if (B === 0 || T === 0 || S === 0 || Hq === 0 || Hkv === 0) {
    throw new Error(`attention: empty input (q ${q.describe()}, k ${k.describe()})`);
  }
  if (Hq % Hkv !== 0) {
    throw new Error(`attention: ${Hq} query heads is not a multiple of ${Hkv} kv heads`);
  }
  if (D % 4 !== 0 || D > ATTENTION_MAX_HEAD_DIM) {
    throw new Error(
      `attention: head dim ${D} unsupported (needs a multiple of 4, at most ` +
        `${ATTENTION_MAX_HEAD_DIM})`,
    );
  }
  if (typeof opts?.causal !== "boolean") {
    throw new Error("attention: options.causal (boolean) is required");
  }
  const qOffset = opts.qOffset ?? 0;
  if (!Number.isInteger(qOffset) || qOffset < 0 || qOffset > 0x7fffffff) {
    throw new Error(`attention: qOffset must be a non-negative integer, got ${opts.qOffset}`);
  }
  if (opts.scale !== undefined && !Number.isFinite(opts.scale)) {
    throw new Error(`attention: scale must be a finite number, got ${opts.scale}`);
  }
  const m = opts.keyMask;
  if (m) {
    if (m.dtype !== "i32" || m.ndim !== 2 || m.shape[0] !== B || m.shape[1] !== S) {
      throw new Error(`attention: keyMask must be i32 [${B}, ${S}], got ${m.describe()}`);
    }
  }
  const gpu = q.gpu;
  const maxBind = gpu.limits.maxStorageBufferBindingSize;
  for (const t of [q, k]) {
    if (t.bytes > maxBind) {
      throw new Error(`attention: ${t.describe()} exceeds one storage binding (${maxBind} B)`);
    }
  }
  return { B, T, S, Hq, Hkv, D };
}

function uniforms(d: Dims, opts: AttentionOptions, scale: number, nsplit = 0, slen = 0) {
  return {
    T: d.T,
    S: d.S,
    Hq: d.Hq,
    Hkv: d.Hkv,
    D4: d.D / 4,
    G: d.Hq / d.Hkv,
    qoff: opts.qOffset ?? 0,
    causal: opts.causal ? 1 : 0,
    masked: opts.keyMask ? 1 : 0,
    scale: f32(scale),
    nstat: d.B * d.Hq * d.T,
    nsplit,
    slen,
  };
}

/**
 * Scaled dot-product attention (see the file header): q [B, T, Hq, D], k / v [B, S, Hkv, D]
 * → [B, T, Hq, D].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  const d = checkInputs(q, k, v, opts);
  const gpu = q.gpu;
  const scale = opts.scale ?? 1 / Math.sqrt(d.D);
  const u = uniforms(d, opts, scale);
  const G = d.Hq / d.Hkv;
  const out = Tensor.empty(gpu, q.shape, "f32");
  const lse = Tensor.empty(gpu, [d.B, d.Hq, d.T], "f32");
  // With no mask the kmask slot is bound to k (read-only, never read).
  const mask = opts.keyMask ?? k;
  const inputs = { q, k, v, kmask: mask };
  // Keys the last query row can see.
  const keys = opts.causal ? Math.min(d.S, (opts.qOffset ?? 0) + d.T) : d.S;
  if (G * d.T <= SPLIT_MAX_ROWS && keys >= SPLIT_MIN_KEYS) {
    // Decode: split the keys over invocations, then merge the partial softmax sums.
    const nsplit = 8 * Math.ceil(Math.min(SPLIT_MAX, Math.ceil(keys / SPLIT_KEYS)) / 8);
    const slen = 8 * Math.ceil(keys / nsplit / 8);
    const slots = d.B * d.Hkv * nsplit * 8;
    const partMl = Tensor.empty(gpu, [slots, 2], "f32");
    const partAcc = Tensor.empty(gpu, [slots, d.D], "f32");
    const us = uniforms(d, opts, scale, nsplit, slen);
    const parts = { part_ml: partMl, part_acc: partAcc };
    K.dispatch(gpu, "fwd_split", {
      u: us,
      b: { ...inputs, ...parts },
      workgroups: [nsplit / 8, d.B * d.Hkv],
      label: "attention fwd split",
    });
    K.dispatch(gpu, "fwd_combine", {
      u: us,
      b: { o: out, lse, ...parts },
      workgroups: Math.ceil((d.B * d.Hkv * 8) / PREP_WG),
      label: "attention fwd combine",
    });
    partMl.dispose();
    partAcc.dispose();
  } else if (useGpuKernels(gpu)) {
    // GPU variant (a discrete GPU, or SIQVL_KERNELS=gpu): K/V tiles in workgroup memory
    // (attention_tiled.ts); same out and lse, so the backward below is unchanged.
    const o = { causal: opts.causal, masked: !!opts.keyMask, qOffset: opts.qOffset ?? 0, scale };
    attentionTiledForward(gpu, d, { ...inputs, o: out, lse }, o);
  } else {
    K.dispatch(gpu, "fwd", {
      u: u,
      b: { ...inputs, o: out, lse },
      workgroups: [Math.ceil((G * d.T) / ROWS_PER_WG), d.B * d.Hkv],
      label: "attention fwd",
    });
  }
  const saved = [q, k, v, out, lse];
  if (opts.keyMask) saved.push(opts.keyMask);
  const res = record("attention", out, [q, k, v], (gOut) => {
    const stats = Tensor.empty(gpu, [d.B, d.Hq, d.T, 2], "f32");
    K.dispatch(gpu, "prep", {
      u: u,
      b: { dout: gOut, o: out, lse, stats },
      workgroups: Math.ceil((d.B * d.Hq * d.T) / PREP_WG),
      label: "attention bwd prep",
    });
    let dq: Tensor | null = null, dk: Tensor | null = null, dv: Tensor | null = null;
    if (q.requiresGrad) {
      dq = Tensor.empty(gpu, q.shape, "f32");
      K.dispatch(gpu, "bwd_dq", {
        u: u,
        b: { ...inputs, dout: gOut, stats, dq },
        workgroups: [Math.ceil((G * d.T) / ROWS_PER_WG), d.B * d.Hkv],
        label: "attention bwd dq",
      });
    }
    if (k.requiresGrad || v.requiresGrad) {
      dk = Tensor.empty(gpu, k.shape, "f32");
      dv = Tensor.empty(gpu, v.shape, "f32");
      K.dispatch(gpu, "bwd_dkdv", {
        u: u,
        b: { ...inputs, dout: gOut, stats, dk, dv },
        workgroups: [Math.ceil(d.S / ROWS_PER_WG), d.B * d.Hkv],
        label: "attention bwd dkdv",
      });
      if (!k.requiresGrad) {
        dk.dispose();
        dk = null;
      }
      if (!v.requiresGrad) {
        dv.dispose();
        dv = null;
      }
    }
    stats.dispose();
    return [dq, dk, dv];
  }, saved);
  lse.dispose();
  return res;
}

// softmax() moved to its own op file (one per shader); re-exported for existing importers.
export { softmax } from "./softmax.ts";
