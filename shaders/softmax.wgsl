// softmax.wgsl — softmax over the last dim and its backward.
//
// Layout: x, y, dy, dx are flat row-major f32 [rows, n] (n = the last dim, any size).
//   y = exp(x - max) / Σ exp(x - max)              (forward)
//   dx = y ⊙ (dy - Σ_j dy_j y_j)                    (backward, from the saved y)
// Two variants of each:
//   fwd_rows / bwd_rows  one invocation per row, workgroup 64, 1-D grid over rows (folded to 2-D
//                        above 65,535 workgroups): no barriers, for many short rows.
//   fwd_wide / bwd_wide  one workgroup of 64 per row (grid = rows, folded): lanes stride the row
//                        and combine through workgroup memory, for long rows (n > 1024).
// Rows whose entries are all -inf give NaN (as in PyTorch).

struct P {
  rows: u32,
  n: u32,
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;   // x (fwd) or y (bwd)
@group(0) @binding(2) var<storage, read> b: array<f32>;   // dy (bwd)
@group(0) @binding(3) var<storage, read_write> o: array<f32>;  // y (fwd) or dx (bwd)

const WG: u32 = 64u;
const NEG: f32 = -3.0e38;

// Running (max, Σ exp(x - max)) after one more value, with a single exp.
fn push(s: vec2f, x: f32) -> vec2f {
  let e = exp(-abs(x - s.x));
  return select(vec2f(s.x, s.y + e), vec2f(x, s.y * e + 1.0), x > s.x);
}

// Merge two running (max, sum) pairs.
fn merge(s: vec2f, t: vec2f) -> vec2f {
  let m = max(s.x, t.x);
  return vec2f(m, s.y * exp(s.x - m) + t.y * exp(t.x - m));
}

@compute @workgroup_size(64)
fn fwd_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * WG + lid;
  if (r >= u.rows) { return; }
  let base = r * u.n;
  var s = vec2f(NEG, 0.0);
  for (var j = 0u; j < u.n; j++) { s = push(s, a[base + j]); }
  let inv = 1.0 / s.y;
  for (var j = 0u; j < u.n; j++) { o[base + j] = exp(a[base + j] - s.x) * inv; }
}

@compute @workgroup_size(64)
fn bwd_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * WG + lid;
  if (r >= u.rows) { return; }
  let base = r * u.n;
  var d = 0.0;
  for (var j = 0u; j < u.n; j++) { d += a[base + j] * b[base + j]; }
  for (var j = 0u; j < u.n; j++) { o[base + j] = a[base + j] * (b[base + j] - d); }
}

var<workgroup> red: array<vec2f, 64>;

@compute @workgroup_size(64)
fn fwd_wide(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;  // uniform across the workgroup
  let base = min(r, u.rows - 1u) * u.n;
  var s = vec2f(NEG, 0.0);
  for (var j = lid; j < u.n; j += WG) { s = push(s, a[base + j]); }
  red[lid] = s;
  for (var w = WG / 2u; w > 0u; w = w >> 1u) {
    workgroupBarrier();
    if (lid < w) { red[lid] = merge(red[lid], red[lid + w]); }
  }
  workgroupBarrier();
  let t = red[0];
  if (r >= u.rows) { return; }
  let inv = 1.0 / t.y;
  for (var j = lid; j < u.n; j += WG) { o[base + j] = exp(a[base + j] - t.x) * inv; }
}

@compute @workgroup_size(64)
fn bwd_wide(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  let base = min(r, u.rows - 1u) * u.n;
  var d = 0.0;
  for (var j = lid; j < u.n; j += WG) { d += a[base + j] * b[base + j]; }
  red[lid] = vec2f(d, 0.0);
  for (var w = WG / 2u; w > 0u; w = w >> 1u) {
    workgroupBarrier();
    if (lid < w) { red[lid].x += red[lid + w].x; }
  }
  workgroupBarrier();
  let t = red[0].x;
  if (r >= u.rows) { return; }
  for (var j = lid; j < u.n; j += WG) { o[base + j] = a[base + j] * (b[base + j] - t); }
}
