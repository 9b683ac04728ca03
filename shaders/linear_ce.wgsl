// linear_ce.wgsl — fused linear + cross-entropy over a large vocabulary (ops/linear_ce.ts).
//
// loss = mean over counted tokens i of  logsumexp_v(h_i · w_v) − h_i · w_{t_i}
//
// Shapes and layout (row-major; "vec4 units" = 4 consecutive f32):
//   h      [N, H] f32 (array<vec4f>, H % 4 == 0)
//   W      one row window [rows, H] of the head [V, H] (rows v0 .. v0+rows−1), dtype by override
//          WT: 0 = f32, 1 = f16, 2 = bf16. The window is bound twice, as wbuf4 array<vec4u>
//          (read when WT = 0) and wbuf array<vec2u> (four packed halves, WT = 1, 2); ldw(i)
//          returns elements 4i .. 4i+3 widened to f32.
//   tgt    [N] i32, −100 = ignore
//   part   [n, nslot] vec2f: (running max, Σ exp(z − max)) of one invocation's vocabulary subset
//   zt     [N] f32: the target logit h_i · w_{t_i}
//   tile   [n, Vp] f32 (Vp = V rounded up to 4): the chunk's logits, then in place
//          G = (softmax − onehot) / count (0 on ignored rows)
//   dh     [N, H] f32;  dw: one row window [rows, H] of dW [V, H] f32
//   stats  [2] f32: (count, 1 / count or 0);  lossrow [N] f32;  out [1] f32
// Tokens are processed in chunks of n rows starting at token t0 (uniforms); every index into
// h / tgt / zt / lossrow / dh is t0 + chunk-local row.
//
// Entry points and workgroup shapes (grids are linear ids folded to 2-D by the host; the padding
// workgroups of a folded grid return at once):
//   count       1 × 64      stats from tgt
//   logits      8 lanes     an invocation = R = 8 tokens × C = 8 vocabulary rows per step, u.steps
//                           steps; the 8 lanes of a workgroup take consecutive 8-row blocks (one
//                           workgroup = 64·steps rows). Online max/sum per token → part; the target
//                           logit → zt; with u.flag = 1 the logits are also stored in the tile.
//   finish      64 per token  combine part → logsumexp; lossrow; with u.flag = 1 the tile row
//                           becomes the gradient row G.
//   loss_total  1 × 64      out = Σ lossrow · stats[1]
//   dh_window   8 lanes     an invocation = 8 tokens × 8 hidden columns; lanes take consecutive
//                           8-column blocks; K loop over the window's rows: dh (+)= G · W.
//   dw_window   8 lanes     an invocation = 8 vocabulary rows × 8 hidden columns; K loop over the
//                           chunk's tokens: dW (+)= Gᵀ · h.
//   scale       64          dw[i] *= out[0] (vec4 units; a gradient times the upstream scalar)
// lavapipe runs a workgroup as one SIMD row: a load whose address does not depend on the lane is
// one scalar load, a per-lane address is a gather. The blocks above keep 64 accumulators per
// invocation and one gathered vec4 per 32 FMAs.

override WT: u32 = 0u;

struct P {
  n: u32,      // tokens in this chunk
  h4: u32,     // H / 4
  rows: u32,   // rows of this W (or dW) window
  v0: u32,     // vocabulary index of the window's first row (a multiple of 4)
  t0: u32,     // first token of the chunk
  vp4: u32,    // tile row stride in vec4 units (Vp / 4)
  nslot: u32,  // partial slots per token
  slot0: u32,  // first slot of this window
  steps: u32,  // 8-row blocks per lane (logits)
  flag: u32,   // logits/finish: 1 = gradient mode; dh/dw: 1 = accumulate
  vocab: u32,  // V
  ngx: u32,    // workgroups along the fast axis of the linear grid
  ntot: u32,   // all tokens N (count, loss_total) / vec4 count (scale)
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> hbuf: array<vec4f>;
@group(0) @binding(2) var<storage, read> wbuf: array<vec2u>;   // same window as wbuf4
@group(0) @binding(3) var<storage, read> tgt: array<i32>;
@group(0) @binding(4) var<storage, read_write> part: array<vec2f>;
@group(0) @binding(5) var<storage, read_write> zt: array<f32>;
@group(0) @binding(6) var<storage, read_write> tile: array<vec4f>;
@group(0) @binding(7) var<storage, read_write> dh: array<vec4f>;
@group(0) @binding(8) var<storage, read_write> dw: array<vec4f>;
@group(0) @binding(9) var<storage, read_write> stats: array<f32>;
@group(0) @binding(10) var<storage, read_write> lossrow: array<f32>;
@group(0) @binding(11) var<storage, read_write> out: array<f32>;
@group(0) @binding(12) var<storage, read> wbuf4: array<vec4u>;

const R: u32 = 8u;       // tokens per invocation (logits, dh)
const C: u32 = 8u;       // vocabulary rows per invocation and step (logits, dw)
const LANES: u32 = 8u;   // invocations per workgroup (logits, dh, dw)
const RED: u32 = 64u;    // workgroup size of the reductions
const NEG: f32 = -3.0e38;
const IGNORE: i32 = -100;

fn linear_id(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.y * nwg.x + wid.x;
}

// Elements 4i .. 4i+3 of the W window, widened to f32.
fn ldw(i: u32) -> vec4f {
  if (WT == 0u) {
    return bitcast<vec4f>(wbuf4[i]);
  }
  let q = wbuf[i];
  if (WT == 1u) {
    return vec4f(unpack2x16float(q.x), unpack2x16float(q.y));
  }
  return bitcast<vec4f>(vec4u(q.x << 16u, q.x & 0xffff0000u, q.y << 16u, q.y & 0xffff0000u));
}

fn nan() -> f32 {
  var bits = 0x7fc00000u; // a var, not a constant: Tint refuses a NaN const-expression
  return bitcast<f32>(bits);
}

// ---- count: stats = (number of targets != −100, 1 / that or 0) over all N tokens ----

var<workgroup> red_a: array<f32, RED>;
var<workgroup> red_b: array<f32, RED>;

@compute @workgroup_size(64)
fn count(@builtin(local_invocation_index) lid: u32) {
  var c = 0.0;
  for (var i = lid; i < u.ntot; i += RED) {
    if (tgt[i] != IGNORE) { c += 1.0; }
  }
  red_a[lid] = c;
  for (var s = RED / 2u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if (lid < s) { red_a[lid] += red_a[lid + s]; }
  }
  if (lid == 0u) {
    let total = red_a[0];
    stats[0] = total;
    stats[1] = select(0.0, 1.0 / total, total > 0.0);
  }
}

// ---- logits: z = h · Wᵀ for a chunk of tokens against one W window, online max / sum ----

// Fold one 8-column block (a: columns 0..3, b: 4..7, masks 1 = valid) into (max, sum).
fn lse_step(ms: vec2f, a: vec4f, b: vec4f, ma: vec4f, mb: vec4f) -> vec2f {
  let vm = max(a, b);
  let m = max(ms.x, max(max(vm.x, vm.y), max(vm.z, vm.w)));
  let e = dot(exp(a - vec4f(m)), ma) + dot(exp(b - vec4f(m)), mb);
  return vec2f(m, ms.y * exp(ms.x - m) + e);
}

// Per-token epilogue of one 8-column block: the target logit and (gradient mode) the tile store.
fn emit(r: u32, tb: u32, t: i32, vb: u32, a: vec4f, b: vec4f) {
  let i = tb * R + r;
  if (i >= u.n) { return; }
  let rel = t - i32(u.v0 + vb);
  if (rel >= 0 && rel < 8 && u32(rel) + vb < u.rows) {
    let k = u32(rel);
    zt[u.t0 + i] = select(b[k & 3u], a[k & 3u], k < 4u);
  }
  if (u.flag == 1u) {
    // vec4s wholly past the window end are skipped (a partial one only occurs in the last
    // window, where its extra columns land in the padding V .. Vp)
    let base = i * u.vp4 + (u.v0 + vb) / 4u;
    if (vb < u.rows) { tile[base] = a; }
    if (vb + 4u < u.rows) { tile[base + 1u] = b; }
  }
}

@compute @workgroup_size(8)
fn logits(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lane: u32) {
  let lin = linear_id(wid, nwg);
  let tb = lin % u.ngx;         // token block (fast axis: neighbours share the W rows)
  let grp = lin / u.ngx;        // vocabulary group within the window
  let first = tb * R;
  if (first >= u.n || grp * LANES * C * u.steps >= u.rows) { return; }  // grid padding
  let h4 = u.h4;
  // h rows of the 8 tokens (clamped duplicates past the chunk end, never written back)
  let x0 = (u.t0 + min(first + 0u, u.n - 1u)) * h4;
  let x1 = (u.t0 + min(first + 1u, u.n - 1u)) * h4;
  let x2 = (u.t0 + min(first + 2u, u.n - 1u)) * h4;
  let x3 = (u.t0 + min(first + 3u, u.n - 1u)) * h4;
  let x4 = (u.t0 + min(first + 4u, u.n - 1u)) * h4;
  let x5 = (u.t0 + min(first + 5u, u.n - 1u)) * h4;
  let x6 = (u.t0 + min(first + 6u, u.n - 1u)) * h4;
  let x7 = (u.t0 + min(first + 7u, u.n - 1u)) * h4;
  let t0 = tgt[u.t0 + min(first + 0u, u.n - 1u)];
  let t1 = tgt[u.t0 + min(first + 1u, u.n - 1u)];
  let t2 = tgt[u.t0 + min(first + 2u, u.n - 1u)];
  let t3 = tgt[u.t0 + min(first + 3u, u.n - 1u)];
  let t4 = tgt[u.t0 + min(first + 4u, u.n - 1u)];
  let t5 = tgt[u.t0 + min(first + 5u, u.n - 1u)];
  let t6 = tgt[u.t0 + min(first + 6u, u.n - 1u)];
  let t7 = tgt[u.t0 + min(first + 7u, u.n - 1u)];
  var s0 = vec2f(NEG, 0.0);
  var s1 = vec2f(NEG, 0.0);
  var s2 = vec2f(NEG, 0.0);
  var s3 = vec2f(NEG, 0.0);
  var s4 = vec2f(NEG, 0.0);
  var s5 = vec2f(NEG, 0.0);
  var s6 = vec2f(NEG, 0.0);
  var s7 = vec2f(NEG, 0.0);
  for (var st = 0u; st < u.steps; st++) {
    let vb = ((grp * u.steps + st) * LANES + lane) * C;  // first window row of this block
    let last = u.rows - 1u;
    let w0 = min(vb + 0u, last) * h4;
    let w1 = min(vb + 1u, last) * h4;
    let w2 = min(vb + 2u, last) * h4;
    let w3 = min(vb + 3u, last) * h4;
    let w4 = min(vb + 4u, last) * h4;
    let w5 = min(vb + 5u, last) * h4;
    let w6 = min(vb + 6u, last) * h4;
    let w7 = min(vb + 7u, last) * h4;
    var a0 = vec4f(0.0); var b0 = vec4f(0.0);
    var a1 = vec4f(0.0); var b1 = vec4f(0.0);
    var a2 = vec4f(0.0); var b2 = vec4f(0.0);
    var a3 = vec4f(0.0); var b3 = vec4f(0.0);
    var a4 = vec4f(0.0); var b4 = vec4f(0.0);
    var a5 = vec4f(0.0); var b5 = vec4f(0.0);
    var a6 = vec4f(0.0); var b6 = vec4f(0.0);
    var a7 = vec4f(0.0); var b7 = vec4f(0.0);
    for (var k = 0u; k < h4; k++) {
      // columns of ma / mb = 4 vocabulary rows; row-vector × matrix = 4 dot products
      let ma = mat4x4f(ldw(w0 + k), ldw(w1 + k), ldw(w2 + k), ldw(w3 + k));
      let mb = mat4x4f(ldw(w4 + k), ldw(w5 + k), ldw(w6 + k), ldw(w7 + k));
      let h0 = hbuf[x0 + k]; a0 += h0 * ma; b0 += h0 * mb;
      let h1 = hbuf[x1 + k]; a1 += h1 * ma; b1 += h1 * mb;
      let h2 = hbuf[x2 + k]; a2 += h2 * ma; b2 += h2 * mb;
      let h3 = hbuf[x3 + k]; a3 += h3 * ma; b3 += h3 * mb;
      let h4v = hbuf[x4 + k]; a4 += h4v * ma; b4 += h4v * mb;
      let h5 = hbuf[x5 + k]; a5 += h5 * ma; b5 += h5 * mb;
      let h6 = hbuf[x6 + k]; a6 += h6 * ma; b6 += h6 * mb;
      let h7 = hbuf[x7 + k]; a7 += h7 * ma; b7 += h7 * mb;
    }
    // rows past the window end were clamped duplicates: they count in the max, not in the sum
    let col = vec4u(vb) + vec4u(0u, 1u, 2u, 3u);
    let mka = select(vec4f(0.0), vec4f(1.0), col < vec4u(u.rows));
    let mkb = select(vec4f(0.0), vec4f(1.0), col + vec4u(4u) < vec4u(u.rows));
    s0 = lse_step(s0, a0, b0, mka, mkb); emit(0u, tb, t0, vb, a0, b0);
    s1 = lse_step(s1, a1, b1, mka, mkb); emit(1u, tb, t1, vb, a1, b1);
    s2 = lse_step(s2, a2, b2, mka, mkb); emit(2u, tb, t2, vb, a2, b2);
    s3 = lse_step(s3, a3, b3, mka, mkb); emit(3u, tb, t3, vb, a3, b3);
    s4 = lse_step(s4, a4, b4, mka, mkb); emit(4u, tb, t4, vb, a4, b4);
    s5 = lse_step(s5, a5, b5, mka, mkb); emit(5u, tb, t5, vb, a5, b5);
    s6 = lse_step(s6, a6, b6, mka, mkb); emit(6u, tb, t6, vb, a6, b6);
    s7 = lse_step(s7, a7, b7, mka, mkb); emit(7u, tb, t7, vb, a7, b7);
  }
  let slot = u.slot0 + grp * LANES + lane;
  let ns = u.nslot;
  part[(first + 0u) * ns + slot] = s0;
  if (first + 1u < u.n) { part[(first + 1u) * ns + slot] = s1; }
  if (first + 2u < u.n) { part[(first + 2u) * ns + slot] = s2; }
  if (first + 3u < u.n) { part[(first + 3u) * ns + slot] = s3; }
  if (first + 4u < u.n) { part[(first + 4u) * ns + slot] = s4; }
  if (first + 5u < u.n) { part[(first + 5u) * ns + slot] = s5; }
  if (first + 6u < u.n) { part[(first + 6u) * ns + slot] = s6; }
  if (first + 7u < u.n) { part[(first + 7u) * ns + slot] = s7; }
}

// ---- finish: logsumexp per token, the row's loss term, and (flag) the gradient row ----

@compute @workgroup_size(64)
fn finish(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let i = linear_id(wid, nwg);  // chunk-local token, uniform over the workgroup
  if (i >= u.n) { return; }
  var m = NEG;
  var s = 0.0;
  for (var j = lid; j < u.nslot; j += RED) {
    let p = part[i * u.nslot + j];
    let mm = max(m, p.x);
    s = s * exp(m - mm) + p.y * exp(p.x - mm);
    m = mm;
  }
  red_a[lid] = m;
  red_b[lid] = s;
  for (var k = RED / 2u; k > 0u; k = k >> 1u) {
    workgroupBarrier();
    if (lid < k) {
      let ma = red_a[lid];
      let mb = red_a[lid + k];
      let mm = max(ma, mb);
      red_b[lid] = red_b[lid] * exp(ma - mm) + red_b[lid + k] * exp(mb - mm);
      red_a[lid] = mm;
    }
  }
  workgroupBarrier();
  let lse = red_a[0] + log(red_b[0]);
  let row = u.t0 + i;
  let t = tgt[row];
  let counted = t != IGNORE;
  let inrange = t >= 0 && u32(t) < u.vocab;
  if (lid == 0u) {
    var l = 0.0;
    if (counted) { l = select(nan(), lse - zt[row], inrange); }
    lossrow[row] = l;
  }
  if (u.flag == 1u) {
    let sc = select(0.0, stats[1], counted);
    let base = i * u.vp4;
    for (var q = lid; q < u.vp4; q += RED) {
      let col = vec4u(4u * q) + vec4u(0u, 1u, 2u, 3u);
      var g = exp(tile[base + q] - vec4f(lse)) * sc;
      g -= select(vec4f(0.0), vec4f(sc), (col == vec4u(u32(t))) & vec4<bool>(inrange));
      tile[base + q] = select(vec4f(0.0), g, col < vec4u(u.vocab));
    }
  }
}

// ---- loss_total: out = Σ lossrow · (1 / count) ----

@compute @workgroup_size(64)
fn loss_total(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < u.ntot; i += RED) { acc += lossrow[i]; }
  red_a[lid] = acc;
  for (var s = RED / 2u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if (lid < s) { red_a[lid] += red_a[lid + s]; }
  }
  if (lid == 0u) { out[0] = red_a[0] * stats[1]; }
}

// ---- dh: dh[t0 + i] (+)= Σ_v G[i, v0 + v] · W[v]  over the window's rows ----

@compute @workgroup_size(8)
fn dh_window(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lane: u32) {
  let lin = linear_id(wid, nwg);
  let hg = lin % u.ngx;          // hidden group (fast axis)
  let tb = lin / u.ngx;          // token block
  let first = tb * R;
  if (first >= u.n) { return; }
  let h4 = u.h4;
  let qa = (hg * LANES + lane) * 2u;  // this lane's two vec4 columns
  let qb = qa + 1u;
  let la = min(qa, h4 - 1u);
  let lb = min(qb, h4 - 1u);
  let off = u.v0 / 4u;
  let g0 = min(first + 0u, u.n - 1u) * u.vp4 + off;
  let g1 = min(first + 1u, u.n - 1u) * u.vp4 + off;
  let g2 = min(first + 2u, u.n - 1u) * u.vp4 + off;
  let g3 = min(first + 3u, u.n - 1u) * u.vp4 + off;
  let g4 = min(first + 4u, u.n - 1u) * u.vp4 + off;
  let g5 = min(first + 5u, u.n - 1u) * u.vp4 + off;
  let g6 = min(first + 6u, u.n - 1u) * u.vp4 + off;
  let g7 = min(first + 7u, u.n - 1u) * u.vp4 + off;
  var a0 = vec4f(0.0); var b0 = vec4f(0.0);
  var a1 = vec4f(0.0); var b1 = vec4f(0.0);
  var a2 = vec4f(0.0); var b2 = vec4f(0.0);
  var a3 = vec4f(0.0); var b3 = vec4f(0.0);
  var a4 = vec4f(0.0); var b4 = vec4f(0.0);
  var a5 = vec4f(0.0); var b5 = vec4f(0.0);
  var a6 = vec4f(0.0); var b6 = vec4f(0.0);
  var a7 = vec4f(0.0); var b7 = vec4f(0.0);
  let quads = u.rows / 4u;
  for (var k = 0u; k < quads; k++) {
    // columns of ma / mb = 4 consecutive W rows restricted to this lane's hidden columns
    let r0 = (4u * k) * h4;
    let ma = mat4x4f(ldw(r0 + la), ldw(r0 + h4 + la), ldw(r0 + 2u * h4 + la),
                     ldw(r0 + 3u * h4 + la));
    let mb = mat4x4f(ldw(r0 + lb), ldw(r0 + h4 + lb), ldw(r0 + 2u * h4 + lb),
                     ldw(r0 + 3u * h4 + lb));
    let e0 = tile[g0 + k]; a0 += ma * e0; b0 += mb * e0;
    let e1 = tile[g1 + k]; a1 += ma * e1; b1 += mb * e1;
    let e2 = tile[g2 + k]; a2 += ma * e2; b2 += mb * e2;
    let e3 = tile[g3 + k]; a3 += ma * e3; b3 += mb * e3;
    let e4 = tile[g4 + k]; a4 += ma * e4; b4 += mb * e4;
    let e5 = tile[g5 + k]; a5 += ma * e5; b5 += mb * e5;
    let e6 = tile[g6 + k]; a6 += ma * e6; b6 += mb * e6;
    let e7 = tile[g7 + k]; a7 += ma * e7; b7 += mb * e7;
  }
  // the last rows % 4 rows (one at a time)
  for (var v = 4u * quads; v < u.rows; v++) {
    let wa = ldw(v * h4 + la);
    let wb = ldw(v * h4 + lb);
    let k = v / 4u;
    let c = v & 3u;
    let e0 = tile[g0 + k][c]; a0 += wa * e0; b0 += wb * e0;
    let e1 = tile[g1 + k][c]; a1 += wa * e1; b1 += wb * e1;
    let e2 = tile[g2 + k][c]; a2 += wa * e2; b2 += wb * e2;
    let e3 = tile[g3 + k][c]; a3 += wa * e3; b3 += wb * e3;
    let e4 = tile[g4 + k][c]; a4 += wa * e4; b4 += wb * e4;
    let e5 = tile[g5 + k][c]; a5 += wa * e5; b5 += wb * e5;
    let e6 = tile[g6 + k][c]; a6 += wa * e6; b6 += wb * e6;
    let e7 = tile[g7 + k][c]; a7 += wa * e7; b7 += wb * e7;
  }
  store_dh(first + 0u, qa, qb, a0, b0);
  store_dh(first + 1u, qa, qb, a1, b1);
  store_dh(first + 2u, qa, qb, a2, b2);
  store_dh(first + 3u, qa, qb, a3, b3);
  store_dh(first + 4u, qa, qb, a4, b4);
  store_dh(first + 5u, qa, qb, a5, b5);
  store_dh(first + 6u, qa, qb, a6, b6);
  store_dh(first + 7u, qa, qb, a7, b7);
}

fn store_dh(i: u32, qa: u32, qb: u32, a: vec4f, b: vec4f) {
  if (i >= u.n) { return; }
  let base = (u.t0 + i) * u.h4;
  if (qa < u.h4) {
    if (u.flag == 1u) { dh[base + qa] += a; } else { dh[base + qa] = a; }
  }
  if (qb < u.h4) {
    if (u.flag == 1u) { dh[base + qb] += b; } else { dh[base + qb] = b; }
  }
}

// ---- dw: dW[v] (+)= Σ_i G[i, v0 + v] · h[t0 + i]  for the window's rows ----

@compute @workgroup_size(8)
fn dw_window(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lane: u32) {
  let lin = linear_id(wid, nwg);
  let hg = lin % u.ngx;          // hidden group (fast axis: neighbours share the G columns)
  let vb = (lin / u.ngx) * C;    // first window row of this block
  if (vb >= u.rows) { return; }
  let h4 = u.h4;
  let qa = (hg * LANES + lane) * 2u;
  let qb = qa + 1u;
  let la = min(qa, h4 - 1u);
  let lb = min(qb, h4 - 1u);
  let ca = (u.v0 + vb) / 4u;                // tile vec4 column of rows vb .. vb+3
  let cb = min(ca + 1u, u.vp4 - 1u);        // rows vb+4 .. vb+7 (clamped past the end)
  var a0 = vec4f(0.0); var b0 = vec4f(0.0);
  var a1 = vec4f(0.0); var b1 = vec4f(0.0);
  var a2 = vec4f(0.0); var b2 = vec4f(0.0);
  var a3 = vec4f(0.0); var b3 = vec4f(0.0);
  var a4 = vec4f(0.0); var b4 = vec4f(0.0);
  var a5 = vec4f(0.0); var b5 = vec4f(0.0);
  var a6 = vec4f(0.0); var b6 = vec4f(0.0);
  var a7 = vec4f(0.0); var b7 = vec4f(0.0);
  for (var i = 0u; i < u.n; i++) {
    let ga = tile[i * u.vp4 + ca];
    let gb = tile[i * u.vp4 + cb];
    let xr = (u.t0 + i) * h4;
    let xa = hbuf[xr + la];
    let xb = hbuf[xr + lb];
    a0 += xa * ga.x; b0 += xb * ga.x;
    a1 += xa * ga.y; b1 += xb * ga.y;
    a2 += xa * ga.z; b2 += xb * ga.z;
    a3 += xa * ga.w; b3 += xb * ga.w;
    a4 += xa * gb.x; b4 += xb * gb.x;
    a5 += xa * gb.y; b5 += xb * gb.y;
    a6 += xa * gb.z; b6 += xb * gb.z;
    a7 += xa * gb.w; b7 += xb * gb.w;
  }
  store_dw(vb + 0u, qa, qb, a0, b0);
  store_dw(vb + 1u, qa, qb, a1, b1);
  store_dw(vb + 2u, qa, qb, a2, b2);
  store_dw(vb + 3u, qa, qb, a3, b3);
  store_dw(vb + 4u, qa, qb, a4, b4);
  store_dw(vb + 5u, qa, qb, a5, b5);
  store_dw(vb + 6u, qa, qb, a6, b6);
  store_dw(vb + 7u, qa, qb, a7, b7);
}

fn store_dw(v: u32, qa: u32, qb: u32, a: vec4f, b: vec4f) {
  if (v >= u.rows) { return; }
  let base = v * u.h4;
  if (qa < u.h4) {
    if (u.flag == 1u) { dw[base + qa] += a; } else { dw[base + qa] = a; }
  }
  if (qb < u.h4) {
    if (u.flag == 1u) { dw[base + qb] += b; } else { dw[base + qb] = b; }
  }
}

// ---- scale: dw[q] *= out[0] for q < ntot (vec4 units) ----

@compute @workgroup_size(64)
fn scale(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let q = linear_id(wid, nwg) * RED + lid;
  if (q >= u.ntot) { return; }
  dw[q] = dw[q] * out[0];
}
