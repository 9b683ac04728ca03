// GRPO math vs plain references (advantages; clipped objective values and finite-difference
// gradients for each aggregation), and the verifiable rewards incl. a user reward module.

import { assertClose, rng } from "./util.ts";
import { groupAdvantages, GRPO_LOSS_TYPES, grpoLoss } from "../src/train/grpo.ts";
import {
  choiceLetter,
  lastNumber,
  loadRewardFunctions,
  normalizeAnswer,
  scoreCompletions,
} from "../src/train/rewards.ts";

Deno.test("grpo: group advantages (unbiased std + 1e-4), batch and no scaling", () => {
  const r = [1, 0, 0, 1, 1, 1, 0, 0.5];
  const a = groupAdvantages(r, 4);
  // group 1: mean 0.5, std sqrt(1/3); group 2: mean 0.625, std sqrt(((.375²)*2+.625²+.125²)/3)
  const s1 = Math.sqrt(1 / 3);
  const s2 = Math.sqrt((2 * 0.375 ** 2 + 0.625 ** 2 + 0.125 ** 2) / 3);
  const want = [
    ...[0.5, -0.5, -0.5, 0.5].map((x) => x / (s1 + 1e-4)),
    ...[0.375, 0.375, -0.625, -0.125].map((x) => x / (s2 + 1e-4)),
  ];
  assertClose(a.advantages, want, 1e-12, "group");
  assertClose([a.rewardStd, a.fracZeroStd], [(s1 + s2) / 2, 0], 1e-12, "stats");
  const none = groupAdvantages([1, 1, 0, 0], 2, "none");
  assertClose(none.advantages, [0, 0, 0, 0], 0, "equal groups");
  if (none.fracZeroStd !== 1) throw new Error("fracZeroStd");
  assertClose(groupAdvantages([2, 0], 2, "none").advantages, [1, -1], 0, "none");
  let threw = false;
  try {
    groupAdvantages([1, 2, 3], 2);
  } catch (e) {
    threw = String(e).includes("--num_generations 2");
  }
  if (!threw) throw new Error("groups that do not divide must be refused");
});

// The plain reference: the formula token by token with the aggregation written out.
function plain(
  lossType: string,
  eps: number,
  epsHigh: number,
  beta: number,
  maxLen: number,
  logp: number[],
  old: number[],
  ref: number[],
  seq: number[],
  adv: number[],
): number {
  const S = adv.length;
  const per: number[][] = Array.from({ length: S }, () => []);
  logp.forEach((lp, t) => {
    const ratio = Math.exp(lp - old[t]);
    const clipped = Math.min(Math.max(ratio, 1 - eps), 1 + epsHigh);
    const a = adv[seq[t]];
    const kl = Math.exp(ref[t] - lp) - (ref[t] - lp) - 1;
    per[seq[t]].push(-Math.min(ratio * a, clipped * a) + beta * kl);
  });
  const all = per.flat();
  const sum = (x: number[]) => x.reduce((p, q) => p + q, 0);
  if (lossType === "dapo") return sum(all) / all.length;
  if (lossType === "grpo") return sum(per.map((p) => sum(p) / p.length)) / S;
  return sum(all) / (S * maxLen);
}

Deno.test("grpo: clipped objective and its gradient vs a plain reference", () => {
  for (const lossType of GRPO_LOSS_TYPES) {
    for (let seed = 1; seed <= 4; seed++) {
      const r = rng(seed * 7 + lossType.length);
      const S = 5;
      const seq: number[] = [];
      for (let s = 0; s < S; s++) for (let k = 0; k < 1 + Math.floor(r() * 6); k++) seq.push(s);
      const n = seq.length;
      const logp = seq.map(() => -0.1 - 3 * r());
      const old = logp.map((x) => x + (r() - 0.5) * 0.8); // ratios well outside 1 ± ε too
      const ref = logp.map((x) => x + (r() - 0.5));
      const adv = Array.from({ length: S }, () => (r() - 0.5) * 3);
      const cfg = { epsilon: 0.2, epsilonHigh: 0.28, beta: 0.04, lossType, maxCompletionLength: 9 };
      const res = grpoLoss(cfg, { logp, oldLogp: old, refLogp: ref, seq, advantages: adv });
      const f = () => plain(lossType, 0.2, 0.28, 0.04, 9, logp, old, ref, seq, adv);
      const want = f();
      if (Math.abs(res.loss - want) > 1e-12) throw new Error(`${lossType}: ${res.loss} vs ${want}`);
      const h = 1e-7;
      for (let t = 0; t < n; t++) {
        const keep = logp[t];
        logp[t] = keep + h;
        const a = f();
        logp[t] = keep - h;
        const b = f();
        logp[t] = keep;
        const fd = (a - b) / (2 * h);
        if (Math.abs(fd - res.dLogp[t]) > 1e-6) {
          throw new Error(`${lossType} seed ${seed}: d/dlogp[${t}] ${res.dLogp[t]} vs ${fd}`);
        }
      }
      if (!(res.metrics.clip_ratio >= 0 && res.metrics.clip_ratio <= 1)) throw new Error("clip");
      if (!(res.metrics.kl! >= 0)) throw new Error("k3 KL must be ≥ 0");
    }
  }
});

Deno.test("grpo: on-policy (ratio 1, β 0) gradient is −A / tokens, nothing clipped", () => {
  const res = grpoLoss(
    { epsilon: 0.2, epsilonHigh: 0.2, beta: 0, lossType: "dapo", maxCompletionLength: 4 },
    { logp: [-1, -2, -0.5], seq: [0, 0, 1], advantages: [0.6, -1.2] },
  );
  assertClose(res.dLogp, [-0.2, -0.2, 0.4], 1e-12, "gradient");
  assertClose([res.loss], [(-0.6 - 0.6 + 1.2) / 3], 1e-12, "loss");
  if (res.metrics.clip_ratio !== 0 || res.metrics.kl !== undefined) throw new Error("metrics");
});

Deno.test("rewards: answer normalisation, numbers, letters, format", async () => {
  if (normalizeAnswer("The  Red circle.") !== "red circle") throw new Error("normalize");
  if (lastNumber("there are three red shapes, so 3.5") !== 3.5) throw new Error("number");
  if (lastNumber("I count four") !== 4 || lastNumber("none") !== null) throw new Error("word");
  if (lastNumber("1,024 items") !== 1024) throw new Error("commas");
  for (const [s, l] of [["B", "B"], ["(c) blue", "C"], ["The answer is D.", "D"], ["blue", null]]) {
    if (choiceLetter(s!) !== l) throw new Error(`letter of ${s}: ${choiceLetter(s!)}`);
  }
  const rs = await loadRewardFunctions(["exact", "numeric", "mc", "format"]);
  const completions = [
    "<think>two red, one blue</think>\nThree",
    "<think>count</think>\n3",
    "no tags: 3",
    "<think>unfinished",
  ];
  const ctx = {
    answers: ["three", "3", "3", "3"],
    questions: ["q", "q", "q", "q"],
    format: "think" as const,
  };
  const s = await scoreCompletions(rs, completions, ctx);
  assertClose(s[0], [1, 1, 0, 0], 0, "exact");
  assertClose(s[1], [1, 1, 1, 0], 0, "numeric");
  assertClose(s[3], [1, 1, 0, 0], 0, "format");
  const mc = await scoreCompletions([rs[2]], ["<think>x</think>\n(B)", "<think>x</think>\nA"], {
    answers: ["B", "B"],
    questions: ["q", "q"],
    format: "think",
  });
  assertClose(mc[0], [1, 0], 0, "mc");
});

Deno.test("rewards: a user TypeScript module, and clear errors", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/short.ts`;
  await Deno.writeTextFile(
    path,
    "export function reward(c: string[]): number[] { return c.map((x) => x.length < 5 ? 1 : 0); }\n",
  );
  await Deno.writeTextFile(`${dir}/bad.ts`, "export const x = 1;\n");
  const [r] = await loadRewardFunctions([path]);
  if (r.name !== "short") throw new Error(`name ${r.name}`);
  const s = await scoreCompletions([r], ["abc", "abcdefg"], {
    answers: ["", ""],
    questions: ["", ""],
    format: "none",
  });
  assertClose(s[0], [1, 0], 0, "user reward");
  const fails = async (names: string[], msg: string) => {
    try {
      await loadRewardFunctions(names, dir);
    } catch (e) {
      if (!String(e).includes(msg)) throw new Error(`expected "${msg}", got ${e}`);
      return;
    }
    throw new Error(`expected an error "${msg}"`);
  };
  await fails(["exactt"], "not a built-in reward");
  await fails(["./bad.ts"], "exports no function");
  await fails(["./missing.ts"], "cannot import");
  await Deno.remove(dir, { recursive: true });
});
