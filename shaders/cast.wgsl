// cast.wgsl — dtype conversion between f32 and the packed half types.
//
// f16 / bf16 tensors are stored two elements per u32 word (element 2k in the low 16 bits).
// to_half: one invocation per output word (elements 2w, 2w+1), f32 -> f16 (MODE 0) or
//          bf16 (MODE 1), round to nearest even. The odd tail element pairs with 0.
// to_f32:  one invocation per element, widening f16 (MODE 0) or bf16 (MODE 1) to f32.
// Grid: 1-D, workgroup 256, folded to 2-D above 65,535 workgroups.

struct P { n: u32, mode: u32 }

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read_write> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn bf16_bits(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return ((b >> 16u) | 0x40u) & 0xffffu; }
  return ((b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u) & 0xffffu;
}

fn half_bits(x: f32) -> u32 {
  if (u.mode == 1u) { return bf16_bits(x); }
  return pack2x16float(vec2f(x, 0.0)) & 0xffffu;
}

@compute @workgroup_size(256)
fn to_half(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_index) lid: u32) {
  let w = (wid.y * nwg.x + wid.x) * 256u + lid;
  let i = 2u * w;
  if (i >= u.n) { return; }
  let lo = half_bits(bitcast<f32>(src[i]));
  var hi = 0u;
  if (i + 1u < u.n) { hi = half_bits(bitcast<f32>(src[i + 1u])); }
  dst[w] = lo | (hi << 16u);
}

@compute @workgroup_size(256)
fn to_f32(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= u.n) { return; }
  let word = src[i >> 1u];
  let h = (word >> ((i & 1u) * 16u)) & 0xffffu;
  var v: f32;
  if (u.mode == 1u) { v = bitcast<f32>(h << 16u); } else { v = unpack2x16float(h).x; }
  dst[i] = bitcast<u32>(v);
}
