// Fused linear + cross-entropy over a large vocabulary (shaders/linear_ce.wgsl).
//
//   linearCrossEntropy(h, w, targets, {chunk?, tileBytes?, windowBytes?}) → [] f32
//     h: [N, H] f32, w: [V, H] f32 | f16 | bf16 (the LM head; may exceed one storage binding),
//     targets: i32 [N], −100 = ignore.
//     loss = Σ_{i counted} (logsumexp_v(h_i · w_v) − h_i · w_{t_i}) / count, 0 when count = 0.
//     The count is computed on the GPU. A target outside [0, V) (other than −100) makes the loss
//     NaN (it cannot be reported without a readback).
//
// What is kept in memory — never the [N, V] logits:
//   * Without gradients: tokens go through in chunks; each logits workgroup holds an 8-token ×
//     (8 lanes × 8 rows) block of logits in registers and folds it into a running max / sum per
//     token (online logsumexp). Partials [chunk, slots] (slots = V / 32, 8 bytes each) are
//     combined per token. Nothing of size V × tokens is written.
//   * With gradients (h or w requires grad): a transient logits tile [chunk, V] of at most
//     `tileBytes` (default 32 MiB → 48 tokens at V = 151,936) is written by the same kernel,
//     turned in place into G = (softmax − onehot) / count, and consumed by dh = G · W and
//     dW = Gᵀ · h. The gradients are computed during the forward (as Liger's fused linear
//     cross-entropy does: this saves recomputing the logits, a third of the work) and kept on the
//     tape; backward only multiplies them by the upstream scalar on the GPU. dh [N, H] and, when
//     w requires grad, dW [V, H] f32 are held from forward to backward.
//   * W and dW are bound as row windows of at most one storage binding (offsets multiples of
//     minStorageBufferOffsetAlignment); every kernel that reads W or writes dW loops over them.
// Autograd: inputs [h, w]; dW is f32 whatever w's dtype.

import type { Gpu } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import { type DType, isGradEnabled, record, type Storage, Tensor } from "../tensor.ts";
import { maxBindingBytes, splitRows } from "../windows.ts";

const SHADER = "linear_ce";
/** Tokens per logits / dh invocation (matches R in the shader). */
const R = 8;
/** Invocations per workgroup (LANES) × vocabulary rows per invocation and step (C). */
const LANES = 8, C = 8;
/** 8-row blocks per lane and logits workgroup: one workgroup covers 256 vocabulary rows. */
const STEPS = 4;
const GROUP_ROWS = LANES * C * STEPS;
/** Hidden columns per dh / dw workgroup (8 lanes × 8). */
const HIDDEN_GROUP = LANES * 8;
/** Workgroup size of the scale entry point (vec4 elements per workgroup). */
const SCALE_WG = 64;
const WEIGHT_TYPE: Partial<Record<DType, number>> = { f32: 0, f16: 1, bf16: 2 };

/** Default budget of the transient [chunk, V] logits tile (and of the partials buffer). */
export const LINEAR_CE_TILE_BYTES = 32 * 2 ** 20;

/** Options of linearCrossEntropy. */
export interface LinearCEOptions {
  /** Tokens per chunk (default: as many as the tile budget allows, balanced over chunks). */
  chunk?: number;
  /** Budget in bytes of the [chunk, V] f32 logits tile used with gradients (default 32 MiB). */
  tileBytes?: number;
  /**
   * Largest W / dW window in bytes (default: the storage binding limit, maxBindingBytes in
   * src/tensor/windows.ts, which setBindingLimitForTests lowers). For tests.
   */
  windowBytes?: number;
}

/** Rows [v0, v0 + rows) of a [V, ·] matrix bound as one storage window. */
export interface CeWindow {
  v0: number;
  rows: number;
  /** Byte offset and size of the binding. */
  offset: number;
  size: number;
}

/**
 * Split V rows of `rowBytes` bytes into windows of at most `maxBytes`, each starting at a row that
 * is a multiple of 4 and at a byte offset that is a multiple of `align` (splitRows in
 * src/tensor/windows.ts).
 */
export function linearCeWindows(
  V: number,
  rowBytes: number,
  maxBytes: number,
  align: number,
): CeWindow[] {
  try {
    return splitRows(V, rowBytes, maxBytes, align, 4).map((r) => ({
      v0: r.row0,
      rows: r.rows,
      offset: r.offset,
      size: r.size,
    }));
  } catch (e) {
    throw new Error(`linearCrossEntropy: ${(e as Error).message}`);
  }
}

// Arguments of shaders/linear_ce.wgsl. W is bound twice, as array<vec2u> (half types, wbuf) and
// array<vec4u> (f32, wbuf4): both slots get the same window (wBind).
const K = kernel(SHADER, {
  uniforms: [
    "n",
    "h4",
    "rows",
    "v0",
    "t0",
    "vp4",
    "nslot",
    "slot0",
    "steps",
    "flag",
    "vocab",
    "ngx",
    "ntot",
  ],
  bindings: [
    "hbuf",
    "wbuf",
    "tgt",
    "part",
    "zt",
    "tile",
    "dh",
    "dw",
    "stats",
    "lossrow",
    "out",
    "wbuf4",
  ],
});

type Bind = { buffer: GPUBuffer; offset: number; size: number };
const window = (buffer: GPUBuffer, w: CeWindow): Bind => ({
  buffer,
  offset: w.offset,
  size: w.size,
});
// array<vec4u> needs at least 16 bytes (pool buffers hold ≥ 256).
const wBind = (b: Bind) => ({ wbuf: b, wbuf4: { ...b, size: Math.max(16, b.size) } });

/** x[·] *= g[0] in place over the windows of an f32 [rows, H] buffer. */
function scaleByScalar(gpu: Gpu, x: GPUBuffer, wins: CeWindow[], h4: number, g: Tensor): void {
  for (const win of wins) {
    const n4 = win.rows * h4;
    K.dispatch(gpu, "scale", {
      u: { ntot: n4 },
      b: { dw: window(x, win), out: g },
      workgroups: Math.ceil(n4 / SCALE_WG),
      label: "linear_ce scale",
    });
  }
}

/**
 * Mean cross-entropy of the logits h · wᵀ against `targets` (−100 = ignore), computed without
 * materialising the [N, V] logits. See the file header for what is kept.
 */
export function linearCrossEntropy(
  h: Tensor,
  w: Tensor,
  targets: Tensor,
  opts: LinearCEOptions = {},
): Tensor {
  const op = "linearCrossEntropy";
  if (h.dtype !== "f32" || h.ndim !== 2) {
    throw new Error(`${op}: h must be f32 [N, H], got ${h.describe()}`);
  }
  const [N, H] = h.shape;
  const wt = WEIGHT_TYPE[w.dtype];
  if (wt === undefined || w.ndim !== 2 || w.shape[1] !== H) {
    throw new Error(`${op}: w must be [V, ${H}] f32/f16/bf16, got ${w.describe()}`);
  }
  const V = w.shape[0];
  if (targets.dtype !== "i32" || targets.ndim !== 1 || targets.shape[0] !== N) {
    throw new Error(`${op}: targets must be i32 [${N}], got ${targets.describe()}`);
  }
  if (N === 0 || V === 0 || H === 0) throw new Error(`${op}: empty input (N=${N}, V=${V}, H=${H})`);
  if (H % 4 !== 0) throw new Error(`${op}: hidden size ${H} must be a multiple of 4`);
  if (w.storage.refs <= 0) throw new Error(`${op}: w ${w.describe()} was released`);
  const gpu = h.gpu;
  const lim = gpu.limits;
  const maxBind = lim.maxStorageBufferBindingSize;
  const winBytes = Math.min(opts.windowBytes ?? Infinity, maxBindingBytes(gpu));
  const tileBytes = opts.tileBytes ?? LINEAR_CE_TILE_BYTES;
  const align = lim.minStorageBufferOffsetAlignment;
  const h4 = H / 4;
  const Vp = Math.ceil(V / 4) * 4;
  const vp4 = Vp / 4;
  const grad = isGradEnabled() && (h.requiresGrad || w.requiresGrad);

  const wWins = linearCeWindows(V, H * (w.dtype === "f32" ? 4 : 2), winBytes, align);
  const slot0: number[] = [];
  let nslot = 0;
  for (const win of wWins) {
    slot0.push(nslot);
    nslot += Math.ceil(win.rows / GROUP_ROWS) * LANES;
  }

  // Tokens per chunk: the tile (gradients) or the partials must fit the budget and a binding.
  const perToken = grad ? Vp * 4 : nslot * 8;
  const cap = Math.floor(Math.min(tileBytes, maxBind) / perToken);
  let nc: number;
  if (opts.chunk !== undefined) {
    if (!Number.isInteger(opts.chunk) || opts.chunk < 1) {
      throw new Error(`${op}: chunk must be a positive integer, got ${opts.chunk}`);
    }
    nc = Math.min(opts.chunk, N);
    if (nc * perToken > maxBind) {
      throw new Error(`${op}: chunk ${nc} needs ${nc * perToken} bytes, more than one binding`);
    }
  } else {
    if (cap < 1) {
      throw new Error(`${op}: tileBytes ${tileBytes} cannot hold one token's ${perToken} bytes`);
    }
    nc = Math.min(N, cap);
    if (nc < N) {
      // balance the chunks, in whole 8-token blocks where the budget allows
      const chunks = Math.ceil(N / nc);
      const even = Math.ceil(N / chunks);
      const blocks = Math.ceil(even / R) * R;
      nc = blocks <= cap ? blocks : even;
    }
  }
  if (N * H * 4 > maxBind) throw new Error(`${op}: h ${h.describe()} exceeds one storage binding`);

  const dispose: Tensor[] = [];
  const tmp = (shape: number[], dtype: DType = "f32") => {
    const t = Tensor.empty(gpu, shape, dtype);
    dispose.push(t);
    return t;
  };
  const stats = tmp([2]);
  const zt = tmp([N]);
  const lossrow = tmp([N]);
  const part = tmp([nc, nslot, 2]);
  const tile = grad ? tmp([nc, Vp]) : tmp([4]);
  const loss = Tensor.empty(gpu, [], "f32");
  const dh = grad && h.requiresGrad ? Tensor.empty(gpu, [N, H], "f32") : null;
  const dW = grad && w.requiresGrad ? Tensor.empty(gpu, [V, H], "f32") : null;
  const dWins = dW ? linearCeWindows(V, H * 4, winBytes, align) : [];

  const hB = h.binding(), tB = targets.binding();
  const wB = wWins.map((win) => window(w.storage.buffer, win));
  const common = { h4, vp4, nslot, vocab: V, steps: STEPS };

  K.dispatch(gpu, "count", {
    u: { ntot: N },
    b: { tgt: targets, stats },
    workgroups: 1,
    label: "linear_ce count",
  });
  for (let t0 = 0; t0 < N; t0 += nc) {
    const n = Math.min(nc, N - t0);
    const ntb = Math.ceil(n / R);
    wWins.forEach((win, k) => {
      K.dispatch(gpu, "logits", {
        constants: { WT: wt },
        u: {
          ...common,
          n,
          t0,
          rows: win.rows,
          v0: win.v0,
          slot0: slot0[k],
          flag: grad ? 1 : 0,
          ngx: ntb,
        },
        b: {
          hbuf: hB,
          ...wBind(wB[k]),
          tgt: tB,
          part: part.binding(),
          zt: zt.binding(),
          tile: tile.binding(),
        },
        workgroups: ntb * Math.ceil(win.rows / GROUP_ROWS),
        label: "linear_ce logits",
      });
    });
    K.dispatch(gpu, "finish", {
      u: { ...common, n, t0, flag: grad ? 1 : 0 },
      b: {
        tgt: tB,
        part: part.binding(),
        zt: zt.binding(),
        tile: tile.binding(),
        stats: stats.binding(),
        lossrow: lossrow.binding(),
      },
      workgroups: n,
      label: "linear_ce finish",
    });
    if (dh) {
      const hg = Math.ceil(h4 / (HIDDEN_GROUP / 4));
      wWins.forEach((win, k) => {
        K.dispatch(gpu, "dh_window", {
          constants: { WT: wt },
          u: {
            ...common,
            n,
            t0,
            rows: win.rows,
            v0: win.v0,
            flag: k > 0 ? 1 : 0,
            ngx: hg,
          },
          b: { ...wBind(wB[k]), tile, dh },
          workgroups: hg * ntb,
          label: "linear_ce dh",
        });
      });
    }
    if (dW) {
      const hg = Math.ceil(h4 / (HIDDEN_GROUP / 4));
      for (const win of dWins) {
        K.dispatch(gpu, "dw_window", {
          u: {
            ...common,
            n,
            t0,
            rows: win.rows,
            v0: win.v0,
            flag: t0 > 0 ? 1 : 0,
            ngx: hg,
          },
          b: { hbuf: hB, tile, dw: window(dW.storage.buffer, win) },
          workgroups: hg * Math.ceil(win.rows / C),
          label: "linear_ce dw",
        });
      }
    }
  }
  K.dispatch(gpu, "loss_total", {
    u: { ntot: N },
    b: { stats: stats.binding(), lossrow: lossrow.binding(), out: loss.binding() },
    workgroups: 1,
    label: "linear_ce loss",
  });
  for (const t of dispose) t.dispose();
  if (!grad) return loss;

  // The gradients are ready; backward scales them by the upstream gradient (a GPU scalar).
  const dhS = dh?.storage ?? null, dWS = dW?.storage ?? null;
  const saved = [dh, dW].filter((t): t is Tensor => t !== null);
  const out = record(op, loss, [h, w], (g) => {
    const take = (s: Storage | null, shape: number[], wins: CeWindow[]): Tensor | null => {
      if (!s) return null;
      const t = new Tensor(gpu, shape, "f32", s);
      // Hand the tape's saved reference to the gradient tensor (no copy of a [V, H] gradient).
      const node = out.node;
      const at = node ? node.saved.indexOf(s) : -1;
      if (node && at >= 0) {
        node.saved.splice(at, 1);
        s.release();
      }
      scaleByScalar(gpu, s.buffer, wins, h4, g);
      return t;
    };
    return [
      take(dhS, [N, H], [{ v0: 0, rows: N, offset: 0, size: N * H * 4 }]),
      take(dWS, [V, H], dWins),
    ];
  }, saved);
  for (const t of saved) t.dispose();
  return out;
}
