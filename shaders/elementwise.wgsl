// elementwise.wgsl — pointwise ops and reductions on flat f32 arrays.
//
// Layout: every tensor is a flat row-major f32 array. Broadcasting: b has m elements and is
// repeated over the n elements of a (m divides n; m = n means no broadcast) — a bias [N] added to
// x [M, N] is m = N.
// Grid: 1-D over n with workgroup 256, folded into 2-D above 65,535 workgroups:
//   i = (wid.y * nwg.x + wid.x) * 256 + lid.x.
// Reductions: *_partial entries reduce a chunk of 256*ELEMS elements per workgroup into
// o[off + workgroup]; reduce_final sums n partials from a into o[off].

struct P {
  n: u32,    // elements of a / o
  m: u32,    // elements of b (broadcast period) or columns (sum_rows)
  s: f32,    // scalar
  t: f32,    // scalar
  off: u32,  // output offset (reductions)
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

const WG: u32 = 256u;
const ELEMS: u32 = 16u;

fn idx(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

// o = a + b (b broadcast with period m)
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
       @builtin(local_invocation_index) lid: u32) {
  let i = idx(wid, nwg, lid);
  if (i >= u.n) { return; }
  o[i] = a[i] + b[i % u.m];
}

// o = a * b (b broadcast with period m)
@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
       @builtin(local_invocation_index) lid: u32) {
  let i = idx(wid, nwg, lid);
  if (i >= u.n) { return; }
  o[i] = a[i] * b[i % u.m];
}

// o = s * a + t * b  (same shapes)
@compute @workgroup_size(256)
fn axpby(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let i = idx(wid, nwg, lid);
  if (i >= u.n) { return; }
  o[i] = u.s * a[i] + u.t * b[i];
}

// a = a + s * b  (in place; b same shape)
@compute @workgroup_size(256)
fn add_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let i = idx(wid, nwg, lid);
  if (i >= u.n) { return; }
  a[i] = a[i] + u.s * b[i];
}

// a = s * a  (in place)
@compute @workgroup_size(256)
fn scale_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let i = idx(wid, nwg, lid);
  if (i >= u.n) { return; }
  a[i] = u.s * a[i];
}

// o = s * a
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let i = idx(wid, nwg, lid);
  if (i >= u.n) { return; }
  o[i] = u.s * a[i];
}

// o = s
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = idx(wid, nwg, lid);
  if (i >= u.n) { return; }
  o[i] = u.s;
}

// o[j] = sum over rows r of a[r * m + j]   (n = rows * m; one invocation per column)
@compute @workgroup_size(256)
fn sum_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let j = idx(wid, nwg, lid);
  if (j >= u.m) { return; }
  let rows = u.n / u.m;
  var acc = 0.0;
  for (var r = 0u; r < rows; r++) { acc += a[r * u.m + j]; }
  o[j] = acc;
}

var<workgroup> red: array<f32, 256>;

fn reduce_tree(lid: u32) {
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if (lid < s) { red[lid] += red[lid + s]; }
  }
}

// o[off + w] = sum of a over chunk w (256 * ELEMS elements)
@compute @workgroup_size(256)
fn sum_partial(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let w = wid.y * nwg.x + wid.x;
  let base = w * WG * ELEMS;
  var acc = 0.0;
  for (var k = 0u; k < ELEMS; k++) {
    let i = base + k * WG + lid;
    if (i < u.n) { acc += a[i]; }
  }
  red[lid] = acc;
  reduce_tree(lid);
  if (lid == 0u) { o[u.off + w] = red[0]; }
}

// o[off + w] = sum of a^2 over chunk w
@compute @workgroup_size(256)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let w = wid.y * nwg.x + wid.x;
  let base = w * WG * ELEMS;
  var acc = 0.0;
  for (var k = 0u; k < ELEMS; k++) {
    let i = base + k * WG + lid;
    if (i < u.n) { let v = a[i]; acc += v * v; }
  }
  red[lid] = acc;
  reduce_tree(lid);
  if (lid == 0u) { o[u.off + w] = red[0]; }
}

// o[off] = sum of a[0..n)  (one workgroup)
@compute @workgroup_size(256)
fn reduce_final(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < u.n; i += WG) { acc += a[i]; }
  red[lid] = acc;
  reduce_tree(lid);
  if (lid == 0u) { o[u.off] = red[0]; }
}
