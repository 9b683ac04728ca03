// Preference losses vs plain references (values, and gradients by finite differences) on random
// log-probs; hostLoss on the tape; DPO on identical chosen / rejected gives a zero gradient.

import { assertClose, gpu, GPU_TEST, rand, rng } from "./util.ts";
import { sequenceLogProbs, Tensor, tidy } from "../src/tensor/mod.ts";
import {
  PO_DEFAULTS,
  PO_LOSSES,
  type PoLossConfig,
  type PoLossType,
  preferenceLoss,
  preferenceWins,
} from "../src/train/po_loss.ts";
import { hostLoss } from "../src/train/host_loss.ts";
import { grpoObjective, PREFERENCE_STATS, preferenceObjective } from "../src/train/po_objective.ts";
import { grpoLoss } from "../src/train/grpo.ts";

// The plain references: the textbook formulas, written directly (no stable rewrites).
const sig = (z: number) => 1 / (1 + Math.exp(-z));
function plainLoss(
  cfg: PoLossConfig,
  c: number[],
  r: number[],
  nc: number[],
  nr: number[],
  c0: number[],
  r0: number[],
): number {
  const { beta: b, labelSmoothing: e, simpoGamma: g } = cfg;
  const B = c.length;
  let total = 0;
  for (let i = 0; i < B; i++) {
    const d = (c[i] - c0[i]) - (r[i] - r0[i]);
    switch (cfg.type) {
      case "sigmoid":
        total += -(1 - e) * Math.log(sig(b * d)) - e * Math.log(sig(-b * d));
        break;
      case "hinge":
        total += Math.max(0, 1 - b * d);
        break;
      case "ipo":
        total += ((c[i] - c0[i]) / nc[i] - (r[i] - r0[i]) / nr[i] - 1 / (2 * b)) ** 2;
        break;
      case "simpo": {
        const z = b * (c[i] / nc[i] - r[i] / nr[i]) - g;
        total += -(1 - e) * Math.log(sig(z)) - e * Math.log(sig(-z));
        break;
      }
      case "orpo": {
        const pc = Math.exp(c[i] / nc[i]), pr = Math.exp(r[i] / nr[i]);
        const odds = Math.log((pc / (1 - pc)) / (pr / (1 - pr)));
        total += -b * Math.log(sig(odds));
        break;
      }
    }
  }
  let loss = total / B;
  if (cfg.type === "orpo") {
    loss += -c.reduce((a, x) => a + x, 0) / nc.reduce((a, x) => a + x, 0);
  }
  return loss;
}

function randomPairs(B: number, seed: number) {
  const r = rng(seed);
  const nc = Array.from({ length: B }, () => 1 + Math.floor(r() * 12));
  const nr = Array.from({ length: B }, () => 1 + Math.floor(r() * 12));
  // summed log-probs: −(0.05 .. 3) per token
  const c = nc.map((n) => -n * (0.05 + 3 * r()));
  const rr = nr.map((n) => -n * (0.05 + 3 * r()));
  const c0 = c.map((x) => x + (r() - 0.5) * 4);
  const r0 = rr.map((x) => x + (r() - 0.5) * 4);
  return { c, r: rr, nc, nr, c0, r0 };
}

const CONFIGS: PoLossConfig[] = [
  ...PO_LOSSES.map((type: PoLossType) => ({ ...PO_DEFAULTS, type })),
  { ...PO_DEFAULTS, type: "sigmoid", labelSmoothing: 0.2, beta: 0.5 },
  { ...PO_DEFAULTS, type: "simpo", labelSmoothing: 0.1, beta: 2, simpoGamma: 1 },
  { ...PO_DEFAULTS, type: "ipo", beta: 0.3 },
  { ...PO_DEFAULTS, type: "hinge", beta: 0.4 },
];

Deno.test("po_loss: every loss matches its plain reference, values and gradients", () => {
  for (const cfg of CONFIGS) {
    for (let seed = 1; seed <= 5; seed++) {
      const p = randomPairs(6, seed * 17 + cfg.type.length);
      const res = preferenceLoss(cfg, {
        chosen: p.c,
        rejected: p.r,
        chosenTokens: p.nc,
        rejectedTokens: p.nr,
        refChosen: p.c0,
        refRejected: p.r0,
      });
      const what = `${JSON.stringify(cfg)} seed ${seed}`;
      const want = plainLoss(cfg, p.c, p.r, p.nc, p.nr, p.c0, p.r0);
      if (!(Math.abs(res.loss - want) <= 1e-10 * Math.max(1, Math.abs(want)))) {
        throw new Error(`${what}: loss ${res.loss} vs ${want}`);
      }
      const h = 1e-6;
      for (
        const [arr, grad, name] of [[p.c, res.dChosen, "chosen"], [
          p.r,
          res.dRejected,
          "rej",
        ]] as const
      ) {
        for (let i = 0; i < arr.length; i++) {
          const keep = arr[i];
          arr[i] = keep + h;
          const a = plainLoss(cfg, p.c, p.r, p.nc, p.nr, p.c0, p.r0);
          arr[i] = keep - h;
          const b = plainLoss(cfg, p.c, p.r, p.nc, p.nr, p.c0, p.r0);
          arr[i] = keep;
          const fd = (a - b) / (2 * h);
          if (!(Math.abs(fd - grad[i]) <= 1e-6 * Math.max(1e-2, Math.abs(fd)))) {
            throw new Error(`${what}: d/d${name}[${i}] = ${grad[i]}, finite difference ${fd}`);
          }
        }
      }
      const wins = preferenceWins(cfg.type, {
        chosen: p.c,
        rejected: p.r,
        chosenTokens: p.nc,
        rejectedTokens: p.nr,
        refChosen: p.c0,
        refRejected: p.r0,
      });
      const acc = wins.filter((x) => x).length / wins.length;
      if (Math.abs(acc - res.metrics["rewards/accuracies"]) > 1e-12) {
        throw new Error(`${what}: accuracy ${res.metrics["rewards/accuracies"]} vs wins ${acc}`);
      }
    }
  }
});

Deno.test("po_loss: metrics follow TRL's definitions; bad input names the field", () => {
  const cfg = { ...PO_DEFAULTS, type: "sigmoid" as const };
  const res = preferenceLoss(cfg, {
    chosen: [-2, -5],
    rejected: [-4, -3],
    chosenTokens: [2, 5],
    rejectedTokens: [4, 3],
    refChosen: [-3, -5],
    refRejected: [-3, -4],
  });
  const m = res.metrics;
  assertClose([m["rewards/chosen"], m["rewards/rejected"]], [0.05, 0], 1e-12, "rewards");
  assertClose([m["rewards/margins"], m["rewards/accuracies"]], [0.05, 0.5], 1e-12, "margins/acc");
  assertClose([m["logps/chosen"], m["logps/rejected"]], [-3.5, -3.5], 1e-12, "logps");
  const bad = (f: () => unknown, msg: string) => {
    try {
      f();
    } catch (e) {
      if (!String(e).includes(msg)) throw new Error(`expected "${msg}", got ${e}`);
      return;
    }
    throw new Error(`no error, expected "${msg}"`);
  };
  bad(
    () =>
      preferenceLoss(cfg, { chosen: [1], rejected: [1], chosenTokens: [1], rejectedTokens: [1] }),
    "refChosen is required",
  );
  bad(
    () =>
      preferenceLoss({ ...cfg, type: "simpo" }, {
        chosen: [1],
        rejected: [1],
        chosenTokens: [0],
        rejectedTokens: [1],
      }),
    "pair 0 has an empty",
  );
  bad(() =>
    preferenceLoss({ ...cfg, beta: 0 }, {
      chosen: [1],
      rejected: [1],
      chosenTokens: [1],
      rejectedTokens: [1],
    }), "--beta");
});

Deno.test("po_loss: hostLoss pushes the CPU gradient onto the tape", GPU_TEST, async () => {
  const g = await gpu();
  const x = Tensor.from(g, [1, 2, 3], [3]);
  x.requiresGrad = true;
  const l = hostLoss(x, 7, [0.5, -1, 2]);
  if ((await l.item()) !== 7) throw new Error("value");
  l.backward();
  assertClose(await x.grad!.read(), [0.5, -1, 2], 0, "grad");
  x.dispose();
  l.dispose();
});

Deno.test(
  "po_loss: DPO on identical chosen and rejected gives zero gradient",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const T = 7, H = 8, V = 31;
    const hRow = rand(T * H, 5);
    // rows 0..T−1 = chosen, T..2T−1 = rejected: the same completion
    const hv = new Float32Array(2 * T * H);
    hv.set(hRow, 0);
    hv.set(hRow, T * H);
    const r = rng(9);
    const tgt = Array.from({ length: T }, () => Math.floor(r() * V));
    const targets = [...tgt, ...tgt];
    const seg = [...tgt.map(() => 0), ...tgt.map(() => 1)];
    const w = Tensor.from(g, rand(V * H, 6), [V, H]);
    w.requiresGrad = true;
    const h = Tensor.from(g, hv, [2 * T, H]);
    const run = async (chosenOnly: boolean) => {
      const lp = sequenceLogProbs(h, w, targets, seg, 2);
      const v = await lp.read();
      const res = preferenceLoss({ ...PO_DEFAULTS, type: "sigmoid", beta: 1e-3 }, {
        chosen: [v[0]],
        rejected: [v[1]],
        chosenTokens: [T],
        rejectedTokens: [T],
        refChosen: [v[0] + 0.3],
        refRejected: [v[1] + 0.3],
      });
      const grad = chosenOnly ? [res.dChosen[0], 0] : [res.dChosen[0], res.dRejected[0]];
      const loss = tidy(() => hostLoss(lp, res.loss, grad));
      loss.backward();
      const dW = await w.grad!.readF32();
      w.grad!.dispose();
      w.grad = null;
      lp.dispose();
      loss.dispose();
      return dW.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    };
    const pair = await run(false);
    const oneSide = await run(true);
    if (!(oneSide > 1e-5)) throw new Error(`one-sided gradient should be non-zero: ${oneSide}`);
    if (!(pair <= 1e-3 * oneSide)) {
      throw new Error(`identical pair: |dW| ${pair} vs one-sided ${oneSide}, expected ~0`);
    }
    h.dispose();
    w.dispose();
  },
);

Deno.test(
  "po_loss: the GPU objective matches the f64 losses (values, stats, gradients)",
  GPU_TEST,
  async () => {
    const g = await gpu();
    for (const cfg of CONFIGS) {
      const p = randomPairs(5, 77 + cfg.type.length);
      const want = preferenceLoss(cfg, {
        chosen: p.c,
        rejected: p.r,
        chosenTokens: p.nc,
        rejectedTokens: p.nr,
        refChosen: p.c0,
        refRejected: p.r0,
      });
      const lp = Tensor.from(g, [...p.c, ...p.r], [10]);
      lp.requiresGrad = true;
      const ref = Tensor.from(g, [...p.c0, ...p.r0], [10]);
      const { loss, stats } = preferenceObjective(lp, ref, [...p.nc, ...p.nr], cfg);
      const what = JSON.stringify(cfg);
      assertClose([await loss.item()], [want.loss], 1e-5, `${what} loss`);
      const names = PREFERENCE_STATS.slice(0, 6);
      const got = await Promise.all(stats.slice(0, 6).map((s) => s.item()));
      assertClose(got, names.map((n) => want.metrics[n]), 1e-5, `${what} stats`);
      loss.backward();
      assertClose(
        await lp.grad!.read(),
        [...want.dChosen, ...want.dRejected],
        1e-4,
        `${what} grad`,
      );
      for (const t of [lp, ref, loss, ...stats]) t.dispose();
    }
    // GRPO, on-policy with a reference
    const adv = [0.7, -0.4, 1.1], seq = [0, 0, 1, 2, 2, 2];
    const logp = [-1.2, -0.3, -2.2, -0.7, -0.1, -1.9], ref = logp.map((x, i) => x + 0.1 * (i - 2));
    const cfg = {
      epsilon: 0.2,
      epsilonHigh: 0.2,
      beta: 0.05,
      lossType: "dapo" as const,
      maxCompletionLength: 8,
    };
    const want = grpoLoss(cfg, { logp, refLogp: ref, seq, advantages: adv });
    const lp = Tensor.from(g, logp, [6]);
    lp.requiresGrad = true;
    const refT = Tensor.from(g, ref, [6]);
    const { loss, stats } = grpoObjective(
      lp,
      refT,
      Float32Array.from(seq, (s) => adv[s]),
      new Float32Array(6).fill(1 / 6),
      cfg,
    );
    assertClose([await loss.item()], [want.loss], 1e-5, "grpo loss");
    assertClose(
      [await stats[0].item(), await stats[1].item()],
      [want.metrics.kl!, 0],
      1e-5,
      "grpo stats",
    );
    loss.backward();
    assertClose(await lp.grad!.read(), want.dLogp, 1e-5, "grpo grad");
    for (const t of [lp, refT, loss, ...stats]) t.dispose();
  },
);
