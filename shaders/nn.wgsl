// nn.wgsl — row normalisations (LayerNorm, RMSNorm) and gated / smooth activations, forward and
// backward. All tensors are flat row-major f32 arrays.
//
// Norms: x [rows, H] (H = u.h), w / bias [H], stats [rows, 2] = (mean, rstd) per row.
//   mode 0 (LayerNorm): mean = Σx/H, var = Σ(x − mean)²/H, y = (x − mean)·rstd·w + bias
//   mode 1 (RMSNorm):   mean = 0,    var = Σx²/H,         y = x·rstd·w
//   with rstd = 1/sqrt(var + eps). Backward, per row, with x̂ = (x − mean)·rstd and gw = dy·w:
//   dx = rstd·(gw − [mode 0] Σgw/H − x̂·Σ(gw·x̂)/H);  dw = Σ_rows dy·x̂;  dbias = Σ_rows dy.
//   norm_fwd / norm_bwd_x: one workgroup of 64 per row (strided loop over H, tree reduction in
//   workgroup memory); rows beyond 65,535 fold into a 2-D grid (row = wid.y · nwg.x + wid.x).
//   norm_bwd_w: grid (⌈H/64⌉, chunks); invocation (j, c) sums rows [c·chunk, (c+1)·chunk) of
//   column j into part[c, 0, j] (dy·x̂) and part[c, 1, j] (dy).
//   col_reduce: out[k] = Σ_c part[c, k] over u.rows chunks, k < u.n (one invocation per k).
//
// Activations (1-D grid over n elements, workgroup 256, folded to 2-D above 65,535 groups):
//   silu_mul_fwd: y = silu(gate)·up, silu(g) = g·σ(g)
//   silu_mul_bwd: dgate = dy·up·σ(g)·(1 + g·(1 − σ(g))), dup = dy·silu(g)
//   gelu_fwd:     y = 0.5·x·(1 + tanh(k·(x + 0.044715·x³))), k = √(2/π)
//   gelu_bwd:     dx = dy·(0.5·(1 + t) + 0.5·x·(1 − t²)·k·(1 + 3·0.044715·x²)), t = tanh(…)
//   tanh's argument is clamped to ±10 (tanh(10) rounds to 1 in f32) so it never overflows.

struct P {
  n: u32,      // elements (activations) / outputs (col_reduce)
  rows: u32,   // rows (norms) / chunks (col_reduce)
  h: u32,      // row length H
  mode: u32,   // 0 = LayerNorm, 1 = RMSNorm
  eps: f32,    // variance epsilon
  chunk: u32,  // rows per chunk (norm_bwd_w)
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // x / gate / part
@group(0) @binding(2) var<storage, read> b: array<f32>;        // w / up
@group(0) @binding(3) var<storage, read> c: array<f32>;        // bias
@group(0) @binding(4) var<storage, read> dy: array<f32>;       // upstream gradient
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;  // [rows, 2] mean, rstd
@group(0) @binding(6) var<storage, read_write> o1: array<f32>; // y / dx / dgate / part / out
@group(0) @binding(7) var<storage, read_write> o2: array<f32>; // dup

const RWG: u32 = 64u;
const WG: u32 = 256u;

var<workgroup> red: array<f32, 64>;

// Sum of v over the 64 invocations of a workgroup (call from uniform control flow).
fn wg_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  for (var s = RWG / 2u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if (lid < s) { red[lid] += red[lid + s]; }
  }
  workgroupBarrier();
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(64)
fn norm_fwd(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= u.rows) { return; }
  let h = u.h;
  let base = row * h;
  var mean = 0.0;
  if (u.mode == 0u) {
    var s = 0.0;
    for (var j = lid; j < h; j += RWG) { s += a[base + j]; }
    mean = wg_sum(lid, s) / f32(h);
  }
  var q = 0.0;
  for (var j = lid; j < h; j += RWG) { let d = a[base + j] - mean; q += d * d; }
  let rstd = 1.0 / sqrt(wg_sum(lid, q) / f32(h) + u.eps);
  for (var j = lid; j < h; j += RWG) {
    var y = (a[base + j] - mean) * rstd * b[j];
    if (u.mode == 0u) { y += c[j]; }
    o1[base + j] = y;
  }
  if (lid == 0u) {
    stats[2u * row] = mean;
    stats[2u * row + 1u] = rstd;
  }
}

@compute @workgroup_size(64)
fn norm_bwd_x(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= u.rows) { return; }
  let h = u.h;
  let base = row * h;
  let mean = stats[2u * row];
  let rstd = stats[2u * row + 1u];
  var s1 = 0.0;
  var s2 = 0.0;
  for (var j = lid; j < h; j += RWG) {
    let gw = dy[base + j] * b[j];
    s1 += gw;
    s2 += gw * (a[base + j] - mean) * rstd;
  }
  var m1 = wg_sum(lid, s1) / f32(h);
  let m2 = wg_sum(lid, s2) / f32(h);
  if (u.mode != 0u) { m1 = 0.0; }
  for (var j = lid; j < h; j += RWG) {
    let xh = (a[base + j] - mean) * rstd;
    o1[base + j] = rstd * (dy[base + j] * b[j] - m1 - xh * m2);
  }
}

@compute @workgroup_size(64)
fn norm_bwd_w(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  let ch = gid.y;
  let h = u.h;
  if (j >= h) { return; }
  let r0 = ch * u.chunk;
  let r1 = min(r0 + u.chunk, u.rows);
  var sw = 0.0;
  var sb = 0.0;
  for (var r = r0; r < r1; r++) {
    let g = dy[r * h + j];
    sw += g * (a[r * h + j] - stats[2u * r]) * stats[2u * r + 1u];
    sb += g;
  }
  o1[ch * 2u * h + j] = sw;
  o1[ch * 2u * h + h + j] = sb;
}

@compute @workgroup_size(64)
fn col_reduce(@builtin(global_invocation_id) gid: vec3u) {
  let k = gid.x;
  if (k >= u.n) { return; }
  var s = 0.0;
  for (var ch = 0u; ch < u.rows; ch++) { s += a[ch * u.n + k]; }
  o1[k] = s;
}

fn flat(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(256)
fn silu_mul_fwd(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= u.n) { return; }
  let g = a[i];
  o1[i] = g * sigmoid(g) * b[i];
}

@compute @workgroup_size(256)
fn silu_mul_bwd(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= u.n) { return; }
  let g = a[i];
  let s = sigmoid(g);
  let d = dy[i];
  o1[i] = d * b[i] * s * (1.0 + g * (1.0 - s));
  o2[i] = d * g * s;
}

const K_GELU: f32 = 0.7978845608028654;  // sqrt(2 / pi)
const C_GELU: f32 = 0.044715;

fn gelu_t(x: f32) -> f32 {
  return tanh(clamp(K_GELU * (x + C_GELU * x * x * x), -10.0, 10.0));
}

@compute @workgroup_size(256)
fn gelu_fwd(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= u.n) { return; }
  let x = a[i];
  o1[i] = 0.5 * x * (1.0 + gelu_t(x));
}

@compute @workgroup_size(256)
fn gelu_bwd(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= u.n) { return; }
  let x = a[i];
  let t = gelu_t(x);
  let dt = (1.0 - t * t) * K_GELU * (1.0 + 3.0 * C_GELU * x * x);
  o1[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * x * dt);
}
