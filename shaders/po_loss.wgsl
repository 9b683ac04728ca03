// po_loss.wgsl — stage-4 objectives on per-sequence / per-token log-probs (train/po_objective.ts).
// The formulas are those of src/train/po_loss.ts and src/train/grpo.ts (f64 references there,
// TRL's definitions); here in f32, one workgroup, so a step needs no readback.
//
// preference (B pairs): lp [2B] policy sums (chosen 0..B−1, rejected B..2B−1), ref [2B]
//   reference sums (unused by simpo / orpo), cnt [2B] token counts;
//   out [8] = loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
//   logps/chosen, logps/rejected, nll (orpo; else 0); grad [2B] = dloss/dlp.
// grpo (N tokens): lp [N] per-token policy log-probs, ref [N] reference (β > 0 or kl wanted),
//   cnt [N] = advantage of the token's completion, wts [N] = the token's aggregation weight;
//   ratio = exp(lp − old) with old = lp (one update per rollout, as TRL's num_iterations = 1);
//   out [8] = loss, kl, clip_ratio; grad [N].

struct P {
  n: u32,        // pairs (preference) or tokens (grpo)
  kind: u32,     // preference: 0 sigmoid, 1 hinge, 2 ipo, 3 simpo, 4 orpo
  beta: f32,
  eps: f32,      // label smoothing (preference) / clip ε (grpo)
  gamma: f32,    // simpo γ / grpo ε_high
  has_ref: u32,
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> lp: array<f32>;
@group(0) @binding(2) var<storage, read> ref_lp: array<f32>;
@group(0) @binding(3) var<storage, read> cnt: array<f32>;
@group(0) @binding(4) var<storage, read> wts: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

fn log_sigmoid(z: f32) -> f32 {
  if (z >= 0.0) { return -log(1.0 + exp(-z)); }
  return z - log(1.0 + exp(z));
}

fn sigmoid(z: f32) -> f32 {
  if (z >= 0.0) { return 1.0 / (1.0 + exp(-z)); }
  let e = exp(z);
  return e / (1.0 + e);
}

// log(1 − eˣ), x < 0
fn log1mexp(x: f32) -> f32 {
  if (x > -0.6931472) { return log(-(exp(x) - 1.0)); }
  return log(1.0 - exp(x));
}

@compute @workgroup_size(1)
fn preference() {
  let B = u.n;
  let fb = f32(B);
  let beta = u.beta;
  let eps = u.eps;
  var loss = 0.0;
  var rc = 0.0; var rr = 0.0; var acc = 0.0; var lc_m = 0.0; var lr_m = 0.0;
  var ntok_c = 0.0; var sum_c = 0.0;
  for (var i = 0u; i < B; i++) {
    ntok_c += cnt[i];
    sum_c += lp[i];
  }
  var lo_sum = 0.0;
  for (var i = 0u; i < B; i++) {
    let lc = lp[i];
    let lr = lp[B + i];
    let nc = cnt[i];
    let nr = cnt[B + i];
    var rew_c = 0.0; var rew_r = 0.0;
    var dc = 0.0; var dr = 0.0;
    if (u.kind <= 2u) {
      let pc = lc - ref_lp[i];
      let pr = lr - ref_lp[B + i];
      let delta = pc - pr;
      rew_c = beta * pc;
      rew_r = beta * pr;
      if (u.kind == 0u) {
        let z = beta * delta;
        loss += -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
        let g = beta * (sigmoid(z) - (1.0 - eps));
        dc = g; dr = -g;
      } else if (u.kind == 1u) {
        let v = 1.0 - beta * delta;
        loss += max(0.0, v);
        if (v > 0.0) { dc = -beta; dr = beta; }
      } else {
        let v = pc / nc - pr / nr - 1.0 / (2.0 * beta);
        loss += v * v;
        dc = 2.0 * v / nc; dr = -2.0 * v / nr;
      }
    } else {
      let mc = lc / nc;
      let mr = lr / nr;
      rew_c = beta * mc;
      rew_r = beta * mr;
      if (u.kind == 3u) {
        let z = beta * (mc - mr) - u.gamma;
        loss += -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
        let g = beta * (sigmoid(z) - (1.0 - eps));
        dc = g / nc; dr = -g / nr;
      } else {
        let ac = min(mc, -1e-7);
        let ar = min(mr, -1e-7);
        let lo = ac - ar - (log1mexp(ac) - log1mexp(ar));
        loss += -beta * log_sigmoid(lo);
        lo_sum += log_sigmoid(lo);
        let dlo = -beta * (1.0 - sigmoid(lo));
        var gc = 0.0; var gr = 0.0;
        if (mc < -1e-7) { gc = -1.0 / (exp(ac) - 1.0); }
        if (mr < -1e-7) { gr = 1.0 / (exp(ar) - 1.0); }
        dc = dlo * gc / nc;
        dr = dlo * gr / nr;
      }
    }
    grad[i] = dc / fb;
    grad[B + i] = dr / fb;
    if (u.kind == 4u) { grad[i] -= 1.0 / ntok_c; }
    rc += rew_c / fb;
    rr += rew_r / fb;
    acc += select(0.0, 1.0, rew_c > rew_r) / fb;
    lc_m += lc / fb;
    lr_m += lr / fb;
  }
  loss = loss / fb;
  var nll = 0.0;
  if (u.kind == 4u) {
    nll = -sum_c / ntok_c;
    loss += nll;
  }
  out[0] = loss;
  out[1] = rc;
  out[2] = rr;
  out[3] = acc;
  out[4] = rc - rr;
  out[5] = lc_m;
  out[6] = lr_m;
  out[7] = nll;
}

@compute @workgroup_size(1)
fn grpo() {
  let N = u.n;
  var loss = 0.0;
  var kl = 0.0;
  var clipped = 0.0;
  let lo = 1.0 - u.eps;
  let hi = 1.0 + u.gamma;
  for (var t = 0u; t < N; t++) {
    let a = cnt[t];
    let w = wts[t];
    let ratio = 1.0; // exp(lp − old), old = lp
    let clip = clamp(ratio, lo, hi);
    let un = ratio * a;
    let cl = clip * a;
    var l = -min(un, cl);
    var g = select(0.0, -ratio * a, un <= cl);
    if ((ratio < lo && a < 0.0) || (ratio > hi && a > 0.0)) { clipped += 1.0; }
    if (u.has_ref == 1u) {
      let d = ref_lp[t] - lp[t];
      let k = exp(d) - d - 1.0;
      kl += k / f32(N);
      l += u.beta * k;
      g += u.beta * (1.0 - exp(d));
    }
    loss += w * l;
    grad[t] = w * g;
  }
  out[0] = loss;
  out[1] = kl;
  out[2] = clipped / max(1.0, f32(N));
  for (var k = 3u; k < 8u; k++) { out[k] = 0.0; }
}
