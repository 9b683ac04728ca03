// matmul_pack.wgsl — stage one matmul operand into a texture for the tiled GEMM (matmul.wgsl).
//
// The GEMM computes X[p, q] = Σ_r L[p, r] · R[q, r]: both operands are read as "rows" along the
// contraction dimension r. A pack dispatch copies a rectangle of such an operand — rows
// [0, rows) × texels [0, nt) — out of any strided tensor into a 2-D array texture:
//   source element (row, r) sits at element
//     src_base + (row / rb) * bs + (row % rb) * rs + (r - r0) * ks
//   of the source binding (f32 words, or u16 halves packed two per u32 word, element e in the
//   low half of word e / 2 when e is even);
//   row `row` lands in texture row tr = dst_row + row, i.e. layer tr >> 13, y = tr & 8191;
//   texel t holds r = r0 + G*t .. r0 + G*t + G-1 (values at r >= k are written as 0).
// pack_f32:  G = 4, rgba32float texel; the source is widened to f32 (override MODE: 0 f32,
//            1 f16, 2 bf16).
// pack_half: G = 8, rgba32uint texel of eight raw 16-bit values (f16 or bf16 source), element
//            r0 + 8t + 2c in the low half of component c.
// Workgroup 64. Grid, for row-major sources (flip = 0): (ceil(nt / 64), rows ≤ 65,535 from row0),
//   t = wid.x * 64 + lid, row = row0 + wid.y — neighbouring lanes read along the contraction;
// for column-major sources (flip = 1): (ceil(rows / 64) ≤ 65,535 from row0, nt),
//   row = row0 + wid.x * 64 + lid, t = wid.y — neighbouring lanes read neighbouring rows.

struct P {
  rows: u32,      // rows of the rectangle
  nt: u32,        // texels per row in this dispatch
  k: u32,         // contraction length (elements with r >= k are zero padding)
  r0: u32,        // first contraction index of texel 0
  t0: u32,        // texture column of texel 0 (= r0 / G)
  src_base: u32,  // element offset of (row 0, r0) in the source binding
  rs: u32,        // element stride between rows inside a batch group
  ks: u32,        // element stride along the contraction
  rb: u32,        // rows per batch group
  bs: u32,        // element stride between batch groups
  dst_row: u32,   // texture row of row 0
  row0: u32,      // first row of this dispatch
  flip: u32,      // 1: lanes along rows (see Grid)
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var dst_f: texture_storage_2d_array<rgba32float, write>;
@group(0) @binding(3) var dst_h: texture_storage_2d_array<rgba32uint, write>;

override MODE: u32 = 0u;

const ROW_SHIFT: u32 = 13u;
const ROW_MASK: u32 = 8191u;

// The raw 16-bit pattern of half element e.
fn half_bits(e: u32) -> u32 {
  return (src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
}

// Element r of the row whose (row, r0) element is `base`, widened to f32; 0 beyond k.
fn value(base: u32, r: u32) -> f32 {
  if (r >= u.k) { return 0.0; }
  let e = base + (r - u.r0) * u.ks;
  if (MODE == 0u) { return bitcast<f32>(src[e]); }
  let h = half_bits(e);
  if (MODE == 2u) { return bitcast<f32>(h << 16u); }
  return unpack2x16float(h).x;
}

// Elements r, r + 1 of the row as two raw halves in one u32 (zeros beyond k).
fn pair(base: u32, r: u32) -> u32 {
  var lo = 0u;
  var hi = 0u;
  if (r < u.k) { lo = half_bits(base + (r - u.r0) * u.ks); }
  if (r + 1u < u.k) { hi = half_bits(base + (r + 1u - u.r0) * u.ks); }
  return lo | (hi << 16u);
}

// Source element of (row, r0).
fn row_base(row: u32) -> u32 {
  return u.src_base + (row / u.rb) * u.bs + (row % u.rb) * u.rs;
}

// (texel, row) of this invocation.
fn coords(wid: vec3u, lid: u32) -> vec2u {
  if (u.flip != 0u) { return vec2u(wid.y, u.row0 + wid.x * 64u + lid); }
  return vec2u(wid.x * 64u + lid, u.row0 + wid.y);
}

@compute @workgroup_size(64)
fn pack_f32(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = coords(wid, lid);
  let t = c.x;
  let row = c.y;
  if (t >= u.nt || row >= u.rows) { return; }
  let base = row_base(row);
  let r = u.r0 + 4u * t;
  let v = vec4f(value(base, r), value(base, r + 1u), value(base, r + 2u), value(base, r + 3u));
  let tr = u.dst_row + row;
  textureStore(dst_f, vec2u(u.t0 + t, tr & ROW_MASK), tr >> ROW_SHIFT, v);
}

@compute @workgroup_size(64)
fn pack_half(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = coords(wid, lid);
  let t = c.x;
  let row = c.y;
  if (t >= u.nt || row >= u.rows) { return; }
  let base = row_base(row);
  let r = u.r0 + 8u * t;
  let v = vec4u(pair(base, r), pair(base, r + 2u), pair(base, r + 4u), pair(base, r + 6u));
  let tr = u.dst_row + row;
  textureStore(dst_h, vec2u(u.t0 + t, tr & ROW_MASK), tr >> ROW_SHIFT, v);
}
