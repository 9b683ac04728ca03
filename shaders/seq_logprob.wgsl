// seq_logprob.wgsl — per-token target log-probabilities of a logits tile, their per-sequence
// reduction, and the gradient rows (ops/seq_logprob.ts).
//
// Layout (row-major):
//   tile  [n, V] f32: logits of n selected tokens (chunk starting at selected token t0);
//         grad_rows overwrites it in place with w_i · (onehot(t_i) − softmax(z_i)).
//   tgt   [Ns] i32 target id of each selected token (in [0, V); anything else gives NaN)
//   lse   [Ns] f32 logsumexp of each selected token's logits
//   logp  [Ns] f32 z_t − lse
//   seg   [Ns] i32 sequence of each selected token (tokens sorted by sequence)
//   offs  [S + 1] i32: tokens of sequence s are offs[s] .. offs[s+1]−1
//   wts   [Ns] f32 per-token weight of the backward (from the per-sequence upstream gradient)
//   sv    [S] f32: per-sequence result (seq_reduce) or upstream gradient (token_weights)
// `avg` = 1: the per-sequence value is the mean over its tokens (0 for an empty sequence),
// otherwise the sum.

struct P {
  n: u32,    // rows of the tile
  v: u32,    // vocabulary size
  t0: u32,   // first selected token of the tile
  s: u32,    // sequences
  avg: u32,  // 1 = mean, 0 = sum
  ns: u32,   // selected tokens
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read_write> tile: array<f32>;
@group(0) @binding(2) var<storage, read> tgt: array<i32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> logp: array<f32>;
@group(0) @binding(5) var<storage, read> seg: array<i32>;
@group(0) @binding(6) var<storage, read> offs: array<i32>;
@group(0) @binding(7) var<storage, read_write> wts: array<f32>;
@group(0) @binding(8) var<storage, read_write> sv: array<f32>;

const WG: u32 = 64u;
const NEG: f32 = -3.0e38;

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;

fn row_of(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.y * nwg.x + wid.x;
}

fn nan() -> f32 {
  var bits = 0x7fc00000u; // a var, not a constant: Tint refuses a NaN const-expression
  return bitcast<f32>(bits);
}

// ---- row_stats: one workgroup per tile row: lse and z_t − lse ----

@compute @workgroup_size(64)
fn row_stats(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let i = row_of(wid, nwg);
  if (i >= u.n) { return; }
  let base = i * u.v;
  var m = NEG;
  var s = 0.0;
  for (var j = lid; j < u.v; j += WG) {
    let x = tile[base + j];
    let mm = max(m, x);
    s = s * exp(m - mm) + exp(x - mm);
    m = mm;
  }
  red_m[lid] = m;
  red_s[lid] = s;
  for (var k = WG / 2u; k > 0u; k = k >> 1u) {
    workgroupBarrier();
    if (lid < k) {
      let ma = red_m[lid];
      let mb = red_m[lid + k];
      let mm = max(ma, mb);
      red_s[lid] = red_s[lid] * exp(ma - mm) + red_s[lid + k] * exp(mb - mm);
      red_m[lid] = mm;
    }
  }
  workgroupBarrier();
  if (lid == 0u) {
    let l = red_m[0] + log(red_s[0]);
    let row = u.t0 + i;
    let t = tgt[row];
    lse[row] = l;
    logp[row] = select(nan(), tile[base + u32(max(t, 0))] - l, t >= 0 && u32(t) < u.v);
  }
}

// ---- grad_rows: tile[i, ·] ← wts[row] · (onehot(t) − exp(z − lse)) ----

@compute @workgroup_size(64)
fn grad_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let i = row_of(wid, nwg);
  if (i >= u.n) { return; }
  let base = i * u.v;
  let row = u.t0 + i;
  let t = tgt[row];
  let l = lse[row];
  let w = wts[row];
  for (var j = lid; j < u.v; j += WG) {
    let hot = select(0.0, 1.0, i32(j) == t);
    tile[base + j] = w * (hot - exp(tile[base + j] - l));
  }
}

// ---- seq_reduce: one workgroup per sequence: sv[s] = Σ (or mean) of its tokens' logp ----

@compute @workgroup_size(64)
fn seq_reduce(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let s = row_of(wid, nwg);
  if (s >= u.s) { return; }
  let a = u32(offs[s]);
  let b = u32(offs[s + 1u]);
  var acc = 0.0;
  for (var j = a + lid; j < b; j += WG) { acc += logp[j]; }
  red_s[lid] = acc;
  for (var k = WG / 2u; k > 0u; k = k >> 1u) {
    workgroupBarrier();
    if (lid < k) { red_s[lid] += red_s[lid + k]; }
  }
  if (lid == 0u) {
    let cnt = f32(b - a);
    var r = red_s[0];
    if (u.avg == 1u) { r = select(0.0, r / cnt, b > a); }
    sv[s] = r;
  }
}

// ---- token_weights: wts[j] = sv[seg[j]] (/ count of that sequence when avg) ----

@compute @workgroup_size(64)
fn token_weights(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let j = row_of(wid, nwg) * WG + lid;
  if (j >= u.ns) { return; }
  let s = u32(seg[j]);
  var w = sv[s];
  if (u.avg == 1u) { w = w / f32(offs[s + 1u] - offs[s]); }
  wts[j] = w;
}
