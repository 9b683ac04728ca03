//f16 enable f16;
// gemm_tiled.wgsl — the GEMM for discrete GPUs: workgroup-shared tiles on storage buffers, read
// straight from the operands' own layouts (no texture staging), with the matmul.wgsl epilogue.
//
// For each batch z (grid z) and output element (m, n), m < M, n < N:
//   o[o_base + z*o_bstride + m*ldo + n]  (=, or += when flags bit 1)
//     = Σ_{r < K} L[a_off + z*a_bs + m*a_rs + r*a_ks] · R[b_off + z*b_bs + n*b_rs + r*b_ks]
//       (+ bias[n] when flags bit 0)
// L is f32; R is f32 (tiled_f32) or raw f16/bf16 halves packed two per u32 (tiled_half, override
// BF16). The strides express every layout the training step needs without a copy: forward x·Wᵀ
// (both operands contiguous along r), input gradient g·W (R contiguous along n) and weight
// gradient gᵀ·x (both contiguous along their rows).
//
// Tiling: a workgroup of 256 invocations owns a 64 × 64 output tile; invocation (ty, tx) =
// (lid / 16, lid % 16) owns the 4 × 4 register block rows 4ty..4ty+3, columns 4tx..4tx+3. The
// contraction runs in tiles of 16: both operand tiles (64 rows × 16) are staged in workgroup
// memory, each element loaded from global memory once per workgroup and then read by 16
// invocations — 64·64·16 FMAs for 2·64·16 global loads, 32 FMAs per load where a naive kernel does
// 1. 256 invocations keep 8 warps (NVIDIA) / 4 wave64s (AMD) per workgroup to hide latency while
// 16 accumulators + 8 operands per invocation stay well under the register budget that would cut
// occupancy; the tile memory (2 · 16 · 68 floats = 8.5 KiB) leaves room for several resident
// workgroups per SM and is under Chromium/Tint's 16 KiB limit.
//
// Global loads (per operand, chosen by the uniform mode, bit 0): the 256 invocations fetch the
// tile 4 consecutive elements each along whichever dimension is contiguous in memory — along r
// (mode bit 0 clear: 4 invocations per row, 64 bytes per row) or along the rows (bit 0 set: 16
// invocations cover 64 consecutive rows, 256 contiguous bytes) — so a warp's loads coalesce into
// few memory transactions. With mode bit 1 (f32: offsets and strides multiples of 4 elements;
// halves: of 2), those 4 elements are one 16-byte vector load (two 4-byte words of packed halves);
// otherwise 4 scalar loads at the same addresses. Elements past M/N/K read as 0. Both R bindings
// are in every entry's layout (one code path): the unused one is bound to a 16-byte dummy.
//
// Workgroup layout: tiles are stored r-major, a row of 64 tile rows padded to 68 floats (17 vec4).
// The inner loop reads vec4 As[r][ty] (broadcast: 2 distinct addresses per warp) and Bs[r][tx]
// (16 consecutive vec4: conflict-free); the padding shifts the scattered stores of the
// r-contiguous loads to different banks (a 4-way conflict without it, 2-way with it).
//
// Grid: (ceil(N / 64), ceil(M / 64), batches).
//
// The shader-f16 variant (gemm_tiled_f16, derived by src/gpu/shaders.ts from this file with its
// `//f16 ` lines switched on, so it is compiled only where the device has shader-f16): tiled_f16
// reads an f16 R as array<vec4<f16>> — 4 halves in one 8-byte load, widened to f32 on the way
// into workgroup memory (accumulation stays f32) — vector mode needing offsets and strides
// multiples of 4 halves.

struct G {
  M: u32,          // output rows of this dispatch
  N: u32,          // output columns
  K: u32,          // contraction length
  a_off: u32,      // L element of (z 0, m 0, r 0) in its binding
  a_rs: u32,       // L stride along m (elements)
  a_ks: u32,       // L stride along r
  a_bs: u32,       // L stride along z (0: shared)
  b_off: u32,      // R element of (z 0, n 0, r 0) in its binding (halves for tiled_half)
  b_rs: u32,       // R stride along n
  b_ks: u32,       // R stride along r
  b_bs: u32,       // R stride along z (0: shared)
  o_base: u32,     // output element of (z 0, m 0, n 0) in its binding
  o_bstride: u32,  // output elements per batch
  ldo: u32,        // output row stride
  flags: u32,      // bit 0: add bias[n]; bit 1: accumulate into o
  amode: u32,      // L: bit 0 contiguous along rows (else along r); bit 1 vector loads
  bmode: u32,      // R: the same
}

@group(0) @binding(0) var<uniform> u: G;
@group(0) @binding(1) var<storage, read> a: array<vec4f>;
@group(0) @binding(2) var<storage, read> b: array<vec4f>;
@group(0) @binding(3) var<storage, read> bh: array<vec4u>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
//f16 @group(0) @binding(6) var<storage, read> bf: array<vec4<f16>>;

override BF16: bool = true;

const TILE: u32 = 64u;
const TK: u32 = 16u;
const PITCH: u32 = 17u;  // vec4 per staged r (16 + 1 padding)

var<workgroup> As: array<vec4f, 272>;  // TK * PITCH
var<workgroup> Bs: array<vec4f, 272>;

// ---- element loads ----

fn a1(i: u32) -> f32 { return a[i >> 2u][i & 3u]; }
fn b1(i: u32) -> f32 { return b[i >> 2u][i & 3u]; }
fn widen(w: u32) -> vec2f {
  if (BF16) { return vec2f(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
  return unpack2x16float(w);
}
fn hword(w: u32) -> u32 { return bh[w >> 2u][w & 3u]; }
fn h1(i: u32) -> f32 { return widen(hword(i >> 1u))[i & 1u]; }

// Operand element sources, selected by `which` (0: L, 1: f32 R, 2: packed half R, 3: f16 R).
fn ld1(which: u32, i: u32) -> f32 {
  if (which == 0u) { return a1(i); }
  if (which == 1u) { return b1(i); }
  //f16 if (which == 3u) { return f32(bf[i >> 2u][i & 3u]); }
  return h1(i);
}
// 4 consecutive elements i..i+3 as one vector load (i a multiple of 4; of 2 for packed halves).
fn ld4(which: u32, i: u32) -> vec4f {
  if (which == 0u) { return a[i >> 2u]; }
  if (which == 1u) { return b[i >> 2u]; }
  //f16 if (which == 3u) { return vec4f(bf[i >> 2u]); }
  let w = i >> 1u;  // i even: two whole words
  return vec4f(widen(hword(w)), widen(hword(w + 1u)));
}

// 4 elements of an operand tile, consecutive along its contiguous dimension from (row, r); zero
// where row + c ≥ rows (along rows) or r + c ≥ K (along r), or for row ≥ rows / r ≥ K.
fn load4(which: u32, mode: u32, base: u32, rs: u32, ks: u32, rows: u32, row: u32, r: u32) -> vec4f {
  let along_rows = (mode & 1u) != 0u;
  let step = select(ks, rs, along_rows);
  let lim = select(vec4u(u.K), vec4u(rows), along_rows);
  let idx = select(vec4u(r), vec4u(row), along_rows) + vec4u(0u, 1u, 2u, 3u);
  let other_ok = select(row < rows, r < u.K, along_rows);
  let ok = (idx < lim) & vec4<bool>(other_ok);
  if (!any(ok)) { return vec4f(0.0); }
  let i0 = base + row * rs + r * ks;
  var x: vec4f;
  if ((mode & 2u) != 0u) {
    x = ld4(which, i0);
  } else {
    x = vec4f(ld1(which, i0), ld1(which, i0 + step), ld1(which, i0 + 2u * step),
              ld1(which, i0 + 3u * step));
  }
  return select(vec4f(0.0), x, ok);
}

// Stage the 64 × 16 tile of an operand (rows row0.., contraction r0..) into `dst` (r-major).
// Invocation lid loads 4 consecutive elements along the contiguous dimension (see the header).
fn stage_a(lid: u32, base: u32, row0: u32, r0: u32) {
  if ((u.amode & 1u) != 0u) {
    let r = lid / 16u;
    let q = lid % 16u;  // rows 4q..4q+3
    As[r * PITCH + q] = load4(0u, u.amode, base, u.a_rs, u.a_ks, u.M, row0 + 4u * q, r0 + r);
  } else {
    let row = lid / 4u;
    let r = 4u * (lid % 4u);
    let x = load4(0u, u.amode, base, u.a_rs, u.a_ks, u.M, row0 + row, r0 + r);
    for (var c = 0u; c < 4u; c++) { As[(r + c) * PITCH + row / 4u][row % 4u] = x[c]; }
  }
}
fn stage_b(lid: u32, which: u32, base: u32, col0: u32, r0: u32) {
  if ((u.bmode & 1u) != 0u) {
    let r = lid / 16u;
    let q = lid % 16u;
    Bs[r * PITCH + q] = load4(which, u.bmode, base, u.b_rs, u.b_ks, u.N, col0 + 4u * q, r0 + r);
  } else {
    let row = lid / 4u;
    let r = 4u * (lid % 4u);
    let x = load4(which, u.bmode, base, u.b_rs, u.b_ks, u.N, col0 + row, r0 + r);
    for (var c = 0u; c < 4u; c++) { Bs[(r + c) * PITCH + row / 4u][row % 4u] = x[c]; }
  }
}

// Epilogue for one output element (bias, accumulate, bounds), as in matmul.wgsl.
fn put(ob: u32, m: u32, n: u32, v: f32) {
  if (m >= u.M || n >= u.N) { return; }
  var x = v;
  if ((u.flags & 1u) != 0u) { x += bias[n]; }
  let i = ob + m * u.ldo + n;
  if ((u.flags & 2u) != 0u) { x += o[i]; }
  o[i] = x;
}

fn tiled(wid: vec3u, lid: u32, which: u32) {
  let tx = lid % 16u;
  let ty = lid / 16u;
  let col0 = wid.x * TILE;
  let row0 = wid.y * TILE;
  let abase = u.a_off + wid.z * u.a_bs;
  let bbase = u.b_off + wid.z * u.b_bs;
  var acc: array<vec4f, 4>;  // acc[i]: row 4ty + i, columns 4tx..4tx+3
  for (var r0 = 0u; r0 < u.K; r0 += TK) {
    stage_a(lid, abase, row0, r0);
    stage_b(lid, which, bbase, col0, r0);
    workgroupBarrier();
    for (var r = 0u; r < TK; r++) {
      let x = As[r * PITCH + ty];
      let y = Bs[r * PITCH + tx];
      acc[0] = fma(vec4f(x.x), y, acc[0]);
      acc[1] = fma(vec4f(x.y), y, acc[1]);
      acc[2] = fma(vec4f(x.z), y, acc[2]);
      acc[3] = fma(vec4f(x.w), y, acc[3]);
    }
    workgroupBarrier();
  }
  let ob = u.o_base + wid.z * u.o_bstride;
  for (var i = 0u; i < 4u; i++) {
    let m = row0 + 4u * ty + i;
    let n = col0 + 4u * tx;
    put(ob, m, n, acc[i].x);
    put(ob, m, n + 1u, acc[i].y);
    put(ob, m, n + 2u, acc[i].z);
    put(ob, m, n + 3u, acc[i].w);
  }
}

@compute @workgroup_size(256)
fn tiled_f32(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  tiled(wid, lid, 1u);
}

@compute @workgroup_size(256)
fn tiled_half(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  tiled(wid, lid, 2u);
}

//f16 @compute @workgroup_size(256)
//f16 fn tiled_f16(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
//f16   tiled(wid, lid, 3u);
//f16 }
