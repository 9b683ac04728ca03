// matmul.wgsl — tiled, register-blocked GEMM on texture-staged operands, with a fused epilogue.
//
// Computes, for each batch z (grid z) and output element (m, n):
//   o[o_base + z*o_bstride + m*ldo + n]  (=, or += when flags bit 1)
//     = Σ_r L[a_row + z*a_bstride + m, r] · R[b_row + z*b_bstride + n, r]
//       (+ bias[n] when flags bit 0)
// for m < M, n < N, where L and R are "row" textures written by matmul_pack.wgsl: texture row t is
// (layer t >> 13, y t & 8191) and texel x of a row holds the contraction elements of that texel.
//   gemm_f32:  ta rgba32float (4 elements per texel), tb rgba32float; kt = texels per row.
//   gemm_half: ta rgba32float, tbh rgba32uint holding 8 raw f16/bf16 values per texel (element
//              8x + 2c in the low half of component c); kt = texels of tbh per row (ta has 2*kt).
//              override BF16 selects bf16 (widened as bits << 16) or f16 (unpack2x16float).
// Padding elements of both textures are zero, so the contraction runs over whole texels.
//
// Register blocking: one invocation owns a ROWS × 16 output block — rows m0 .. m0+ROWS-1 and
// columns n0 + j*WG, j < 16 (strided, so neighbouring invocations write neighbouring columns).
// Per contraction texel it fetches ROWS L texels and 16 R texels (16 bytes each) and does
// 64·ROWS vec4 FMAs; the accumulators are ROWS `Row` values of 4 vec4 (columns 4J .. 4J+3 in
// Row.cJ). Rows/columns past M/N are clamped on load and skipped on store.
// Overrides (the tile shape): WG invocations per workgroup along n and ROWS ≤ 16. On llvmpipe
// (lavapipe) WG = 8 is one 256-bit SIMD vector and ROWS = 16 amortises the fetches — a texture
// fetch there is a vectorised call while a storage-buffer load is a per-lane scalar loop, hence
// the texture staging. GPUs want fewer registers per invocation and more invocations (e.g.
// ROWS = 4, WG = 64); single-row products (decoding) use ROWS = 1.
// A workgroup covers ROWS rows × 16*WG columns.
// Grid: (ceil(M / ROWS), ceil(N / (16*WG)), batches).
//
// gemm_nn_f32 / gemm_nn_half: the same product with R given the other way round — texture row
// b_row + r holds contraction index r, its texels the output columns (4 f32 or 8 halves each):
//   o[m, n] = Σ_{r < kr} L[a_row + m, r] · R[b_row + r, n]
// so an operand stored [K, N] row-major (a Linear weight [out, in] read as [N = in] columns in
// the input-gradient g·W) is staged by a plain copy — the same texture as the forward's — instead
// of a strided gather. An invocation owns ROWS rows × 16 consecutive columns.

struct G {
  M: u32,          // output rows of this dispatch
  N: u32,          // output columns
  kt: u32,         // contraction texels per row (of ta for gemm_f32, of tbh for gemm_half)
  a_row: u32,      // L texture row of (z = 0, m = 0)
  a_bstride: u32,  // L texture rows per batch
  b_row: u32,      // R texture row of (z = 0, n = 0)
  b_bstride: u32,  // R texture rows per batch (0: R shared by all batches)
  o_base: u32,     // element of (z = 0, m = 0, n = 0) in the output binding
  o_bstride: u32,  // output elements per batch
  ldo: u32,        // output row stride (elements)
  flags: u32,      // bit 0: add bias[n]; bit 1: accumulate into o
  kr: u32,         // gemm_nn_*: contraction rows of the R texture (K)
}

@group(0) @binding(0) var<uniform> u: G;
@group(0) @binding(1) var ta: texture_2d_array<f32>;
@group(0) @binding(2) var tb: texture_2d_array<f32>;
@group(0) @binding(3) var tbh: texture_2d_array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;

override WG: u32 = 8u;
override BF16: bool = true;
override ROWS: u32 = 16u;

const ROW_SHIFT: u32 = 13u;
const ROW_MASK: u32 = 8191u;

// Accumulators of one output row: columns 4J + c (c < 4) in cJ[c].
struct Row { c0: vec4f, c1: vec4f, c2: vec4f, c3: vec4f }
// R values of one contraction texel for the 16 columns: column 4J + c is tJ[c].
struct Tile { t0: mat4x4f, t1: mat4x4f, t2: mat4x4f, t3: mat4x4f }

fn fa(t: u32, x: u32) -> vec4f {
  return textureLoad(ta, vec2u(x, t & ROW_MASK), t >> ROW_SHIFT, 0);
}
fn fb(t: u32, x: u32) -> vec4f {
  return textureLoad(tb, vec2u(x, t & ROW_MASK), t >> ROW_SHIFT, 0);
}
fn fh(t: u32, x: u32) -> vec4u {
  return textureLoad(tbh, vec2u(x, t & ROW_MASK), t >> ROW_SHIFT, 0);
}

// Two packed halves of a word, widened.
fn widen(w: u32) -> vec2f {
  if (BF16) { return vec2f(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
  return unpack2x16float(w);
}
// Elements 0..3 (lo) and 4..7 (hi) of an 8-half texel.
fn lo(w: vec4u) -> vec4f { return vec4f(widen(w.x), widen(w.y)); }
fn hi(w: vec4u) -> vec4f { return vec4f(widen(w.z), widen(w.w)); }

// c[j] += dot(a, b[j]) for the 4 columns j, as broadcast FMAs over the 4 contraction elements.
fn f4(c: vec4f, a: vec4f, b: mat4x4f) -> vec4f {
  var r = fma(vec4f(a.x), vec4f(b[0].x, b[1].x, b[2].x, b[3].x), c);
  r = fma(vec4f(a.y), vec4f(b[0].y, b[1].y, b[2].y, b[3].y), r);
  r = fma(vec4f(a.z), vec4f(b[0].z, b[1].z, b[2].z, b[3].z), r);
  return fma(vec4f(a.w), vec4f(b[0].w, b[1].w, b[2].w, b[3].w), r);
}

// One contraction texel of one output row: row += a · tile.
fn step(r: Row, a: vec4f, t: Tile) -> Row {
  return Row(f4(r.c0, a, t.t0), f4(r.c1, a, t.t1), f4(r.c2, a, t.t2), f4(r.c3, a, t.t3));
}

// R tile of texel x for the columns q (16 clamped R texture rows).
fn tile_f32(q: array<u32, 16>, x: u32) -> Tile {
  return Tile(
    mat4x4f(fb(q[0], x), fb(q[1], x), fb(q[2], x), fb(q[3], x)),
    mat4x4f(fb(q[4], x), fb(q[5], x), fb(q[6], x), fb(q[7], x)),
    mat4x4f(fb(q[8], x), fb(q[9], x), fb(q[10], x), fb(q[11], x)),
    mat4x4f(fb(q[12], x), fb(q[13], x), fb(q[14], x), fb(q[15], x)));
}

// Epilogue for one output element (bias, accumulate, bounds).
fn put(ob: u32, m: u32, n: u32, v: f32) {
  if (m >= u.M || n >= u.N) { return; }
  var x = v;
  if ((u.flags & 1u) != 0u) { x += bias[n]; }
  let i = ob + m * u.ldo + n;
  if ((u.flags & 2u) != 0u) { x += o[i]; }
  o[i] = x;
}
fn put4(ob: u32, m: u32, n: u32, v: vec4f) {
  put(ob, m, n, v.x);
  put(ob, m, n + WG, v.y);
  put(ob, m, n + 2u * WG, v.z);
  put(ob, m, n + 3u * WG, v.w);
}
fn put_row(ob: u32, m: u32, n0: u32, r: Row) {
  put4(ob, m, n0, r.c0);
  put4(ob, m, n0 + 4u * WG, r.c1);
  put4(ob, m, n0 + 8u * WG, r.c2);
  put4(ob, m, n0 + 12u * WG, r.c3);
}

// Block origin, clamped L rows and R rows of this invocation.
struct Block { m0: u32, n0: u32, ob: u32, ra: array<u32, 16>, q: array<u32, 16> }

fn block(wid: vec3u, lid: u32) -> Block {
  var b: Block;
  b.m0 = wid.x * ROWS;
  b.n0 = wid.y * (16u * WG) + lid;
  b.ob = u.o_base + wid.z * u.o_bstride;
  let ar = u.a_row + wid.z * u.a_bstride;
  let br = u.b_row + wid.z * u.b_bstride;
  for (var i = 0u; i < 16u; i++) {
    b.ra[i] = ar + min(b.m0 + i, u.M - 1u);
    b.q[i] = br + min(b.n0 + i * WG, u.N - 1u);
  }
  return b;
}

fn store(b: Block, r: array<Row, 16>) {
  for (var i = 0u; i < ROWS; i++) { put_row(b.ob, b.m0 + i, b.n0, r[i]); }
}

@compute @workgroup_size(WG)
fn gemm_f32(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = block(wid, lid);
  let ra = b.ra;
  var r0: Row; var r1: Row; var r2: Row; var r3: Row;
  var r4: Row; var r5: Row; var r6: Row; var r7: Row;
  var r8: Row; var r9: Row; var r10: Row; var r11: Row;
  var r12: Row; var r13: Row; var r14: Row; var r15: Row;
  for (var x = 0u; x < u.kt; x++) {
    let t = tile_f32(b.q, x);
    r0 = step(r0, fa(ra[0], x), t);
    if (ROWS > 1u) { r1 = step(r1, fa(ra[1], x), t); }
    if (ROWS > 2u) { r2 = step(r2, fa(ra[2], x), t); }
    if (ROWS > 3u) { r3 = step(r3, fa(ra[3], x), t); }
    if (ROWS > 4u) { r4 = step(r4, fa(ra[4], x), t); }
    if (ROWS > 5u) { r5 = step(r5, fa(ra[5], x), t); }
    if (ROWS > 6u) { r6 = step(r6, fa(ra[6], x), t); }
    if (ROWS > 7u) { r7 = step(r7, fa(ra[7], x), t); }
    if (ROWS > 8u) { r8 = step(r8, fa(ra[8], x), t); }
    if (ROWS > 9u) { r9 = step(r9, fa(ra[9], x), t); }
    if (ROWS > 10u) { r10 = step(r10, fa(ra[10], x), t); }
    if (ROWS > 11u) { r11 = step(r11, fa(ra[11], x), t); }
    if (ROWS > 12u) { r12 = step(r12, fa(ra[12], x), t); }
    if (ROWS > 13u) { r13 = step(r13, fa(ra[13], x), t); }
    if (ROWS > 14u) { r14 = step(r14, fa(ra[14], x), t); }
    if (ROWS > 15u) { r15 = step(r15, fa(ra[15], x), t); }
  }
  store(b, array(r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15));
}

@compute @workgroup_size(WG)
fn gemm_half(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = block(wid, lid);
  let ra = b.ra;
  let q = b.q;
  var r0: Row; var r1: Row; var r2: Row; var r3: Row;
  var r4: Row; var r5: Row; var r6: Row; var r7: Row;
  var r8: Row; var r9: Row; var r10: Row; var r11: Row;
  var r12: Row; var r13: Row; var r14: Row; var r15: Row;
  for (var x = 0u; x < u.kt; x++) {
    let w0 = fh(q[0], x); let w1 = fh(q[1], x); let w2 = fh(q[2], x); let w3 = fh(q[3], x);
    let w4 = fh(q[4], x); let w5 = fh(q[5], x); let w6 = fh(q[6], x); let w7 = fh(q[7], x);
    let w8 = fh(q[8], x); let w9 = fh(q[9], x); let w10 = fh(q[10], x); let w11 = fh(q[11], x);
    let w12 = fh(q[12], x); let w13 = fh(q[13], x); let w14 = fh(q[14], x);
    let w15 = fh(q[15], x);
    // Elements 0..3 of the 8-element texel against L texel 2x, then 4..7 against 2x + 1: one
    // widened half-tile live at a time.
    for (var h = 0u; h < 2u; h++) {
      var t: Tile;
      if (h == 0u) {
        t = Tile(mat4x4f(lo(w0), lo(w1), lo(w2), lo(w3)), mat4x4f(lo(w4), lo(w5), lo(w6), lo(w7)),
          mat4x4f(lo(w8), lo(w9), lo(w10), lo(w11)), mat4x4f(lo(w12), lo(w13), lo(w14), lo(w15)));
      } else {
        t = Tile(mat4x4f(hi(w0), hi(w1), hi(w2), hi(w3)), mat4x4f(hi(w4), hi(w5), hi(w6), hi(w7)),
          mat4x4f(hi(w8), hi(w9), hi(w10), hi(w11)), mat4x4f(hi(w12), hi(w13), hi(w14), hi(w15)));
      }
      let xa = 2u * x + h;
      r0 = step(r0, fa(ra[0], xa), t);
      if (ROWS > 1u) { r1 = step(r1, fa(ra[1], xa), t); }
      if (ROWS > 2u) { r2 = step(r2, fa(ra[2], xa), t); }
      if (ROWS > 3u) { r3 = step(r3, fa(ra[3], xa), t); }
      if (ROWS > 4u) { r4 = step(r4, fa(ra[4], xa), t); }
      if (ROWS > 5u) { r5 = step(r5, fa(ra[5], xa), t); }
      if (ROWS > 6u) { r6 = step(r6, fa(ra[6], xa), t); }
      if (ROWS > 7u) { r7 = step(r7, fa(ra[7], xa), t); }
      if (ROWS > 8u) { r8 = step(r8, fa(ra[8], xa), t); }
      if (ROWS > 9u) { r9 = step(r9, fa(ra[9], xa), t); }
      if (ROWS > 10u) { r10 = step(r10, fa(ra[10], xa), t); }
      if (ROWS > 11u) { r11 = step(r11, fa(ra[11], xa), t); }
      if (ROWS > 12u) { r12 = step(r12, fa(ra[12], xa), t); }
      if (ROWS > 13u) { r13 = step(r13, fa(ra[13], xa), t); }
      if (ROWS > 14u) { r14 = step(r14, fa(ra[14], xa), t); }
      if (ROWS > 15u) { r15 = step(r15, fa(ra[15], xa), t); }
    }
  }
  store(b, array(r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15));
}

// ---- R along the output columns (gemm_nn_*) ----

// Row += a · s, for one contraction element a and its R row s (16 columns).
fn axpy(r: Row, a: f32, s: Row) -> Row {
  let v = vec4f(a);
  return Row(fma(v, s.c0, r.c0), fma(v, s.c1, r.c1), fma(v, s.c2, r.c2), fma(v, s.c3, r.c3));
}
// Row += Σ_c a[c] · s_c over the 4 contraction elements of one L texel.
fn axpy4(r: Row, a: vec4f, s0: Row, s1: Row, s2: Row, s3: Row) -> Row {
  return axpy(axpy(axpy(axpy(r, a.x, s0), a.y, s1), a.z, s2), a.w, s3);
}
// 16 columns from texel x0 of R row t: 4 f32 texels, or 2 texels of 8 halves.
fn srow_f32(t: u32, x0: u32) -> Row {
  return Row(fb(t, x0), fb(t, x0 + 1u), fb(t, x0 + 2u), fb(t, x0 + 3u));
}
fn srow_half(t: u32, x0: u32) -> Row {
  let w0 = fh(t, x0);
  let w1 = fh(t, x0 + 1u);
  return Row(lo(w0), hi(w0), lo(w1), hi(w1));
}
fn put_cols(ob: u32, m: u32, n0: u32, r: Row) {
  put(ob, m, n0, r.c0.x); put(ob, m, n0 + 1u, r.c0.y); put(ob, m, n0 + 2u, r.c0.z);
  put(ob, m, n0 + 3u, r.c0.w);
  put(ob, m, n0 + 4u, r.c1.x); put(ob, m, n0 + 5u, r.c1.y); put(ob, m, n0 + 6u, r.c1.z);
  put(ob, m, n0 + 7u, r.c1.w);
  put(ob, m, n0 + 8u, r.c2.x); put(ob, m, n0 + 9u, r.c2.y); put(ob, m, n0 + 10u, r.c2.z);
  put(ob, m, n0 + 11u, r.c2.w);
  put(ob, m, n0 + 12u, r.c3.x); put(ob, m, n0 + 13u, r.c3.y); put(ob, m, n0 + 14u, r.c3.z);
  put(ob, m, n0 + 15u, r.c3.w);
}

fn gemm_nn(wid: vec3u, lid: u32, half: bool) {
  let m0 = wid.x * ROWS;
  let n0 = (wid.y * WG + lid) * 16u;
  let ob = u.o_base + wid.z * u.o_bstride;
  let ar = u.a_row + wid.z * u.a_bstride;
  let br = u.b_row + wid.z * u.b_bstride;
  // R texel of column n0 (4 or 8 columns per texel).
  let x0 = select(n0 / 4u, n0 / 8u, half);
  var ra: array<u32, 16>;
  for (var i = 0u; i < 16u; i++) { ra[i] = ar + min(m0 + i, u.M - 1u); }
  var r0: Row; var r1: Row; var r2: Row; var r3: Row;
  var r4: Row; var r5: Row; var r6: Row; var r7: Row;
  var r8: Row; var r9: Row; var r10: Row; var r11: Row;
  var r12: Row; var r13: Row; var r14: Row; var r15: Row;
  let last = u.kr - 1u;
  for (var x = 0u; x < u.kt; x++) {
    // The 4 R rows of this L texel (rows past kr are clamped; their L elements are zero).
    let t = br + 4u * x;
    var s0: Row; var s1: Row; var s2: Row; var s3: Row;
    if (half) {
      s0 = srow_half(min(t, br + last), x0); s1 = srow_half(min(t + 1u, br + last), x0);
      s2 = srow_half(min(t + 2u, br + last), x0); s3 = srow_half(min(t + 3u, br + last), x0);
    } else {
      s0 = srow_f32(min(t, br + last), x0); s1 = srow_f32(min(t + 1u, br + last), x0);
      s2 = srow_f32(min(t + 2u, br + last), x0); s3 = srow_f32(min(t + 3u, br + last), x0);
    }
    r0 = axpy4(r0, fa(ra[0], x), s0, s1, s2, s3);
    if (ROWS > 1u) { r1 = axpy4(r1, fa(ra[1], x), s0, s1, s2, s3); }
    if (ROWS > 2u) { r2 = axpy4(r2, fa(ra[2], x), s0, s1, s2, s3); }
    if (ROWS > 3u) { r3 = axpy4(r3, fa(ra[3], x), s0, s1, s2, s3); }
    if (ROWS > 4u) { r4 = axpy4(r4, fa(ra[4], x), s0, s1, s2, s3); }
    if (ROWS > 5u) { r5 = axpy4(r5, fa(ra[5], x), s0, s1, s2, s3); }
    if (ROWS > 6u) { r6 = axpy4(r6, fa(ra[6], x), s0, s1, s2, s3); }
    if (ROWS > 7u) { r7 = axpy4(r7, fa(ra[7], x), s0, s1, s2, s3); }
    if (ROWS > 8u) { r8 = axpy4(r8, fa(ra[8], x), s0, s1, s2, s3); }
    if (ROWS > 9u) { r9 = axpy4(r9, fa(ra[9], x), s0, s1, s2, s3); }
    if (ROWS > 10u) { r10 = axpy4(r10, fa(ra[10], x), s0, s1, s2, s3); }
    if (ROWS > 11u) { r11 = axpy4(r11, fa(ra[11], x), s0, s1, s2, s3); }
    if (ROWS > 12u) { r12 = axpy4(r12, fa(ra[12], x), s0, s1, s2, s3); }
    if (ROWS > 13u) { r13 = axpy4(r13, fa(ra[13], x), s0, s1, s2, s3); }
    if (ROWS > 14u) { r14 = axpy4(r14, fa(ra[14], x), s0, s1, s2, s3); }
    if (ROWS > 15u) { r15 = axpy4(r15, fa(ra[15], x), s0, s1, s2, s3); }
  }
  let rs = array(r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15);
  for (var i = 0u; i < ROWS; i++) { put_cols(ob, m0 + i, n0, rs[i]); }
}

@compute @workgroup_size(WG)
fn gemm_nn_f32(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  gemm_nn(wid, lid, false);
}

@compute @workgroup_size(WG)
fn gemm_nn_half(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  gemm_nn(wid, lid, true);
}
