// pixel_shuffle.wgsl — space-to-depth of a square patch grid (SiQ-VL / nanoVLM projector input).
//
// x: [B, s·s, D] f32, patch p = row·s + col. With r the factor, s' = ⌊s/r⌋·r (top-left crop) and
// G = s'/r, the output y: [B, G², r²·D] is
//   y[b, i·G + j, (dy·r + dx)·D + d] = x[b, (i·r + dy)·s + (j·r + dx), d]
// i.e. each output token concatenates its r×r block in row-major order, D channels per patch.
// fwd: one invocation per output element (gather). bwd: one invocation per input element,
// gathering its gradient from gy (patches outside the crop get 0) — no scatter, no atomics.
// Grid: 1-D over elements, workgroup 256, folded to 2-D above 65,535 workgroups.

struct P {
  n: u32,  // elements of the array written (fwd: B·G²·r²·D, bwd: B·s²·D)
  s: u32,  // grid side
  r: u32,  // shuffle factor
  d: u32,  // channels per patch
  g: u32,  // output grid side G = ⌊s/r⌋
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn flat(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn fwd(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
       @builtin(local_invocation_index) lid: u32) {
  let o = flat(wid, nwg, lid);
  if (o >= u.n) { return; }
  let cw = u.r * u.r * u.d;     // output channels
  let tokens = u.g * u.g;       // output tokens per image
  let ch = o % cw;
  let t = (o / cw) % tokens;
  let b = o / (cw * tokens);
  let q = ch / u.d;
  let d = ch % u.d;
  let row = (t / u.g) * u.r + q / u.r;
  let col = (t % u.g) * u.r + q % u.r;
  dst[o] = src[(b * u.s * u.s + row * u.s + col) * u.d + d];
}

@compute @workgroup_size(256)
fn bwd(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
       @builtin(local_invocation_index) lid: u32) {
  let e = flat(wid, nwg, lid);
  if (e >= u.n) { return; }
  let d = e % u.d;
  let p = (e / u.d) % (u.s * u.s);
  let b = e / (u.d * u.s * u.s);
  let row = p / u.s;
  let col = p % u.s;
  let crop = u.g * u.r;
  if (row >= crop || col >= crop) {
    dst[e] = 0.0;
    return;
  }
  let t = (row / u.r) * u.g + col / u.r;
  let ch = ((row % u.r) * u.r + col % u.r) * u.d + d;
  let cw = u.r * u.r * u.d;
  dst[e] = src[(b * u.g * u.g + t) * cw + ch];
}
