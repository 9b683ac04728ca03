// rope.wgsl — rotary position embedding, non-interleaved ("rotate half") as in HF Qwen2.
//
// Shapes: x, o [B, T, H, D] f32 row-major; positions i32 [B, T]; inv_freq f32 [D / 2] (computed
// on the host the way HF does in f32: 1 / theta^((2i) / D)).
// For the pair (i, i + D/2) of one (b, t, h) row, with angle = f32(position) · inv_freq[i] (an f32
// product) and sgn = +1 (forward) or -1 (backward: the inverse rotation, applied to a gradient):
//   o[i]       = x[i] · cos(angle) - x[i + D/2] · sgn·sin(angle)
//   o[i + D/2] = x[i + D/2] · cos(angle) + x[i] · sgn·sin(angle)
// i.e. o = x·cos + rotate_half(x)·sin with rotate_half(x) = cat(-x[D/2:], x[:D/2]).
// Grid: one invocation per pair, 1-D, workgroup 64, folded to 2-D above 65,535 workgroups.

struct P {
  pairs: u32,  // B·T·H·D/2
  heads: u32,  // H
  half: u32,   // D / 2
  sgn: f32,    // +1 forward, -1 backward
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<i32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(64)
fn rope(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let p = (wid.y * nwg.x + wid.x) * 64u + lid;
  if (p >= u.pairs) { return; }
  let i = p % u.half;
  let row = p / u.half;  // (b·T + t)·H + h
  let angle = f32(pos[row / u.heads]) * inv_freq[i];
  let c = cos(angle);
  let s = sin(angle) * u.sgn;
  let lo = row * 2u * u.half + i;
  let hi = lo + u.half;
  let a = x[lo];
  let b = x[hi];
  o[lo] = a * c - b * s;
  o[hi] = b * c + a * s;
}
