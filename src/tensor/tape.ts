// The autograd tape, micrograd-style, on GPU tensors.
//
// Each op that sees an input requiring a gradient attaches a Node to its output (see record() in
// tensor.ts): the inputs, the storages it saved, and a closure that enqueues the backward kernels.
// backward() collects the nodes reachable from the loss, runs them newest first, sums gradients
// that meet at a tensor, hands leaf gradients to `.grad`, and releases each node's saved storage
// as soon as its closure has run — activations die at their last use.
//
// Gradient checkpointing: checkpoint(fn, inputs) runs fn and keeps no inner tape; its node re-runs
// fn under a fresh tape during backward and pushes the gradient through that. It is chosen by
// memory: setCheckpointBudget(bytes) lets checkpoint() keep the inner tape of a call (no
// recompute) while the activations kept that way — measured as the pool's live-byte growth over
// fn — stay within the budget; only the calls past it drop their tape. The budget is 0 (always
// recompute) until set.

import { enableGrad, keep, newNodeId, noGrad, setBackwardImpl, Tensor, tidy } from "./tensor.ts";
import { addInPlace, fill } from "./ops/elementwise.ts";
import { currentPart, profileBackward } from "../gpu/profile.ts";

function releaseNode(t: Tensor): void {
  const n = t.node;
  if (!n) return;
  for (const s of n.saved) s.release();
  n.saved = [];
  t.node = null;
}

/** Tensors with a node reachable from `roots`, newest node first. */
function order(roots: Tensor[], stop?: Set<Tensor>): Tensor[] {
  const seen = new Set<Tensor>();
  const out: Tensor[] = [];
  const stack = [...roots];
  while (stack.length) {
    const t = stack.pop()!;
    if (!t.node || seen.has(t) || stop?.has(t)) continue;
    seen.add(t);
    out.push(t);
    for (const i of t.node.inputs) if (i.requiresGrad && i.node) stack.push(i);
  }
  out.sort((a, b) => b.node!.id - a.node!.id);
  return out;
}

/** A gradient we may accumulate into: copied when its storage is shared with another handle. */
function own(g: Tensor): Tensor {
  if (g.storage.refs === 1) return g;
  const c = new Tensor(g.gpu, g.shape, g.dtype);
  g.gpu.copy(g.storage.buffer, 0, c.storage.buffer, 0, g.bytes);
  g.dispose();
  return c;
}

function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  if (g.dtype !== "f32") throw new Error(`gradient for ${leaf.describe()} is ${g.dtype}`);
  if (leaf.grad) {
    addInPlace(leaf.grad, g);
    g.dispose();
  } else {
    // A gradient owned by the leaf must outlive any tidy() scope around backward.
    g = own(g);
    const same = g.shape.length === leaf.shape.length &&
      g.shape.every((d, i) => d === leaf.shape[i]);
    leaf.grad = keep(same ? g : g.view(leaf.shape));
    if (leaf.grad !== g) g.dispose();
  }
}

/**
 * Backpropagate `grad` (default: ones, for a one-element loss) from the given outputs.
 * Returns nothing; leaves that require gradients receive them in `.grad` (accumulated).
 */
export function backwardFrom(outputs: Tensor[], grads: Tensor[]): void {
  const pending = new Map<Tensor, Tensor>();
  outputs.forEach((o, i) => {
    if (!o.requiresGrad) throw new Error(`backward: ${o.describe()} does not require grad`);
    if (!o.node) {
      accumulateLeaf(o, grads[i]);
      return;
    }
    const prev = pending.get(o);
    if (prev) {
      addInPlace(prev, grads[i]);
      grads[i].dispose();
    } else pending.set(o, own(grads[i]));
  });
  noGrad(() => {
    for (const t of order(outputs)) {
      const g = pending.get(t);
      pending.delete(t);
      const node = t.node!;
      if (!g) {
        releaseNode(t);
        continue;
      }
      const gi = profileBackward(node.part, () => node.backward(g));
      g.dispose();
      node.inputs.forEach((inp, k) => {
        const gk = gi[k];
        if (!gk) return;
        if (!inp.requiresGrad) {
          gk.dispose();
          return;
        }
        if (gk.size !== inp.size) {
          throw new Error(
            `${node.name} backward: gradient ${gk.describe()} for input ${inp.describe()}`,
          );
        }
        if (!inp.node) {
          accumulateLeaf(inp, gk);
          return;
        }
        const prev = pending.get(inp);
        if (prev) {
          addInPlace(prev, gk);
          gk.dispose();
        } else pending.set(inp, own(gk));
      });
      releaseNode(t);
    }
  });
  for (const g of pending.values()) g.dispose();
}

setBackwardImpl((t: Tensor, grad?: Tensor) => {
  let g = grad;
  if (!g) {
    if (t.size !== 1) {
      throw new Error(
        `backward() without a gradient needs a one-element tensor, got ${t.describe()}`,
      );
    }
    g = fill(t.gpu, t.shape, 1);
  }
  backwardFrom([t], [g]);
});

/** Drop the tape below `outputs` (down to, not including, `stop`), releasing saved storage. */
export function releaseGraph(outputs: Tensor[], stop?: Set<Tensor>): void {
  for (const t of order(outputs, stop)) releaseNode(t);
}

let checkpointBudget = 0;
/** Checkpointed calls whose inner tape is kept, with the bytes it holds, until their backward. */
const keptCalls: { out: Tensor; bytes: number }[] = [];
const checkpointCounts = { kept: 0, recomputed: 0 };

/**
 * Let checkpoint() keep up to `bytes` of inner activations instead of recomputing them (0: always
 * recompute, Infinity: never). Returns the previous budget.
 */
export function setCheckpointBudget(bytes: number): number {
  if (!(bytes >= 0)) throw new Error(`setCheckpointBudget: bad byte count ${bytes}`);
  const prev = checkpointBudget;
  checkpointBudget = bytes;
  return prev;
}

/** checkpoint() calls since the last reset that kept their tape / will recompute; bytes kept now. */
export function checkpointStats(reset = false): {
  kept: number;
  recomputed: number;
  keptBytes: number;
} {
  const out = { ...checkpointCounts, keptBytes: keptNow() };
  if (reset) checkpointCounts.kept = checkpointCounts.recomputed = 0;
  return out;
}

// Bytes held by kept calls whose backward has not run yet (their output still has its node).
function keptNow(): number {
  for (let i = keptCalls.length - 1; i >= 0; i--) {
    if (!keptCalls[i].out.node) keptCalls.splice(i, 1);
  }
  return keptCalls.reduce((s, k) => s + k.bytes, 0);
}

/**
 * Gradient checkpointing: `fn(...inputs)` runs now without keeping its inner activations; during
 * backward it is run again under a fresh tape and the gradient is pushed through that recompute.
 * Parameters used inside `fn` receive their gradients then. `fn` must be deterministic.
 */
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[]): Tensor {
  const pool = inputs[0]?.gpu.pool;
  const already = checkpointBudget > 0 ? keptNow() : 0;
  const live0 = pool?.stats().live ?? 0;
  const out = tidy(() => fn(...inputs));
  if (!out.requiresGrad || !out.node) return out;
  if (checkpointBudget > 0 && pool) {
    const bytes = Math.max(0, pool.stats().live - live0);
    if (already + bytes <= checkpointBudget) {
      keptCalls.push({ out, bytes });
      checkpointCounts.kept++;
      return out;
    }
  }
  checkpointCounts.recomputed++;
  // Forget the inner graph: only the inputs are kept (their storage is saved below).
  releaseGraph([out], new Set(inputs));
  out.requiresGrad = false;
  const gpu = out.gpu;
  const result = out;
  const saved = inputs.map((x) => {
    x.storage.retain();
    return x.storage;
  });
  result.requiresGrad = true;
  result.node = {
    id: newNodeId(),
    name: "checkpoint",
    part: currentPart(),
    inputs,
    saved,
    backward: (g) => {
      const xs = inputs.map((x) => {
        const d = x.detach();
        d.requiresGrad = x.requiresGrad;
        return d;
      });
      const y = enableGrad(() => tidy(() => fn(...xs)));
      if (y.requiresGrad) {
        const g2 = new Tensor(gpu, g.shape, g.dtype, g.storage);
        backwardFrom([y], [g2]);
      }
      y.dispose();
      return xs.map((x) => {
        const gx = x.grad;
        x.grad = null;
        x.dispose();
        return gx;
      });
    },
  };
  return result;
}
