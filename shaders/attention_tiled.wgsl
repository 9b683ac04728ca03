// attention_tiled.wgsl — attention forward for discrete GPUs: flash-attention style, K/V tiles
// in workgroup memory, online softmax; writes the same out and lse as attention.wgsl's fwd, so
// its backward kernels (prep, bwd_dq, bwd_dkdv) run unchanged on the result.
//
// Shapes as in attention.wgsl: q, out [B, T, Hq, D]; k, v [B, S, Hkv, D]; kmask i32 [B, S];
// lse [B, Hq, T] (NEG for a row that sees no key, whose output is 0). GQA: query head h reads kv
// head h / G. The rows of kv group (b, g) are its G·T query rows ρ = i·G + hh (head g·G + hh), so
// the heads sharing a kv head share every staged K/V tile and a block of rows spans few positions.
//
// A workgroup of 64 invocations owns 64 consecutive rows ρ of one kv group, one row per
// invocation: its pre-scaled q row and its output accumulator live in registers (2·D floats;
// HD4 = D / 4 is an override constant, so the loops over the head dim have a fixed trip count the
// compiler unrolls and the arrays stay in registers instead of spilling to local memory). The keys
// run in tiles of TK = 16: the 64 invocations copy the tile's K and V rows into workgroup memory
// (consecutive invocations read consecutive 16-byte chunks of a key row: coalesced), then every
// invocation reads the same staged element at the same time — a broadcast, no bank conflicts —
// so each K/V element is fetched from global memory once per 64 query rows instead of once per
// row. Per tile the 16 scores are formed first and the running max / sum and the accumulator are
// rescaled once (not once per key). Tile memory: 2 · 16 keys · 128 floats = 16 KiB at the largest
// head dim, within Chromium/Tint's limit; 64 invocations keep the register budget per invocation
// large enough for 2·D = 256 floats at D = 128 (occupancy is register-bound here, not memory-bound).
// Causal: the workgroup stops at the last key its last row can see; per-key visibility masks the
// rest.
// Grid: (ceil(G·T / 64), B·Hkv).

const MAXD4: u32 = 32u;
const TK: u32 = 16u;
const NEG: f32 = -3.0e38;

struct P {
  T: u32,       // query positions
  S: u32,       // key positions
  Hq: u32,      // query heads
  Hkv: u32,     // key/value heads
  G: u32,       // Hq / Hkv
  qoff: u32,    // position of query row 0
  causal: u32,  // 1 = causal
  masked: u32,  // 1 = kmask applies
  scale: f32,   // score scale
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> q: array<vec4f>;
@group(0) @binding(2) var<storage, read> k: array<vec4f>;
@group(0) @binding(3) var<storage, read> v: array<vec4f>;
@group(0) @binding(4) var<storage, read> kmask: array<i32>;
@group(0) @binding(5) var<storage, read_write> o: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

override HD4: u32 = 16u;  // head dim / 4 (≤ MAXD4)

var<workgroup> Ks: array<vec4f, 512>;  // TK * MAXD4: key t, chunk c at t * HD4 + c
var<workgroup> Vs: array<vec4f, 512>;

@compute @workgroup_size(64)
fn fwd(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / u.Hkv;
  let g = wid.y % u.Hkv;
  let n = u.G * u.T;
  let first = wid.x * 64u;
  let rho = first + lid;
  let valid = rho < n;
  let rc = min(rho, n - 1u);
  let i = rc / u.G;
  let h = g * u.G + rc % u.G;
  let qbase = ((b * u.T + i) * u.Hq + h) * HD4;
  // Position this row may see up to (every key when not causal).
  let pos = select(0xffffffffu, u.qoff + i, u.causal != 0u);
  // One past the last key any row of the workgroup can see.
  var jend = u.S;
  if (u.causal != 0u) { jend = min(u.S, u.qoff + min(n - 1u, first + 63u) / u.G + 1u); }

  var qr: array<vec4f, MAXD4>;
  var acc: array<vec4f, MAXD4>;
  for (var c = 0u; c < HD4; c++) { qr[c] = q[qbase + c] * u.scale; }
  var m = NEG;
  var l = 0.0;
  for (var j0 = 0u; j0 < jend; j0 += TK) {
    // Stage keys j0 .. j0+15 (clamped to S - 1; the clamped ones are masked below).
    for (var e = lid; e < TK * HD4; e += 64u) {
      let j = min(j0 + e / HD4, u.S - 1u);
      let src = ((b * u.S + j) * u.Hkv + g) * HD4 + e % HD4;
      Ks[e] = k[src];
      Vs[e] = v[src];
    }
    workgroupBarrier();
    var s: array<f32, TK>;
    var mt = m;
    for (var t = 0u; t < TK; t++) {
      let j = j0 + t;
      var ok = j < jend && j <= pos;
      if (ok && u.masked != 0u) { ok = kmask[b * u.S + j] != 0; }
      var x = NEG;
      if (ok) {
        var d4 = vec4f(0.0);
        for (var c = 0u; c < HD4; c++) { d4 = fma(qr[c], Ks[t * HD4 + c], d4); }
        x = (d4.x + d4.y) + (d4.z + d4.w);
        mt = max(mt, x);
      }
      s[t] = x;
    }
    // Rescale once per tile, then add the tile's probabilities (invisible keys give 0).
    let corr = exp(m - mt);
    l *= corr;
    for (var c = 0u; c < HD4; c++) { acc[c] *= corr; }
    for (var t = 0u; t < TK; t++) {
      let p = select(0.0, exp(s[t] - mt), s[t] > NEG);
      l += p;
      for (var c = 0u; c < HD4; c++) { acc[c] = fma(vec4f(p), Vs[t * HD4 + c], acc[c]); }
    }
    m = mt;
    workgroupBarrier();
  }
  if (!valid) { return; }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var c = 0u; c < HD4; c++) { o[qbase + c] = acc[c] * inv; }
  lse[(b * u.Hq + h) * u.T + i] = select(NEG, m + log(l), l > 0.0);
}
