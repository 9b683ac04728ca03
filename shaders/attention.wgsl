// attention.wgsl — fused scaled-dot-product attention: online-softmax forward that keeps only the
// logsumexp, and a backward that recomputes the probabilities block by block.
//
// Shapes (row-major f32; the natural layout of a Linear output reshaped, no transposes):
//   q, out, dout [B, T, Hq, D]      k, v [B, S, Hkv, D]      keyMask i32 [B, S] (1 = attend)
//   lse [B, Hq, T]                  stats vec2 [B, Hq, T] = (lse, Σ_d dout·out) per query row
//   dq [B, T, Hq, D]                dk, dv [B, S, Hkv, D] (summed over the Hq / Hkv query heads
//                                   that share a kv head)
// D is a multiple of 4, at most 4 * MAXD4 = 128; rows are read as vec4 chunks (D4 = D / 4).
// GQA: query head h reads kv head h / G, G = Hq / Hkv. Query row i sits at position qoff + i; when
// causal, key j is visible to it iff j <= qoff + i. Scores are scale * q·k.
//
// The "rows" of a kv group (b, g) are its G·T query rows, ordered ρ = i·G + hh (head h = g·G + hh),
// so the query heads sharing one kv head are processed together and a block of rows spans few
// positions (little causal waste).
//
// Workgroups of 8 invocations (one SIMD row on lavapipe), no workgroup memory, no barriers. Each
// invocation owns a register block (8 query rows x 8 keys, or 8 keys x 8 query rows) so every
// loaded chunk of k/v (or q/dout) feeds many FMAs. Its per-row state lives in arrays indexed by
// the head-dim chunk c; lavapipe turns such dynamic indexing into if-ladders, so the arrays hold
// 4x4 blocks (mat4x4f = 4 rows x 4 head-dim values): one ladder moves 16 floats.
//   fwd     grid (ceil(G·T / 64), B·Hkv): invocation = 8 query rows (ρ0 + lid + 8r, r = 0..7, as
//           row groups A = r 0..3 and B = r 4..7); loops over keys 8 at a time (two groups of 4).
//   fwd_split + fwd_combine  decode (G·T <= 8 rows per kv group): the keys are split over
//           invocations and workgroups, then the partial softmax sums are merged.
//   prep    grid ceil(B·Hq·T / 64) (1-D, folded to 2-D), workgroup 64: one query row each.
//   bwd_dq  grid like fwd: recomputes P and dP for its 8 rows and accumulates dq.
//   bwd_dkdv grid (ceil(S / 64), B·Hkv): invocation = 8 keys of kv head g; loops over the query
//           rows of all G heads 8 at a time and accumulates dk and dv.

const MAXD4: u32 = 32u;
// Stand-in for -inf: keeps max/exp/subtraction free of inf - inf.
const NEG: f32 = -3.0e38;

struct P {
  T: u32,       // query positions
  S: u32,       // key positions
  Hq: u32,      // query heads
  Hkv: u32,     // key/value heads
  D4: u32,      // head dim / 4
  G: u32,       // Hq / Hkv
  qoff: u32,    // position of query row 0
  causal: u32,  // 1 = causal
  masked: u32,  // 1 = keyMask is bound and applies
  scale: f32,   // score scale
  nstat: u32,   // B·Hq·T (prep, fwd_combine)
  nsplit: u32,  // key splits per kv group (fwd_split, fwd_combine)
  slen: u32,    // keys per split, a multiple of 8
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> q: array<vec4f>;
@group(0) @binding(2) var<storage, read> k: array<vec4f>;
@group(0) @binding(3) var<storage, read> v: array<vec4f>;
@group(0) @binding(4) var<storage, read> kmask: array<i32>;
@group(0) @binding(5) var<storage, read> dout: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> o: array<vec4f>;
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;
@group(0) @binding(8) var<storage, read_write> stats: array<vec2f>;
@group(0) @binding(9) var<storage, read_write> dq: array<vec4f>;
@group(0) @binding(10) var<storage, read_write> dk: array<vec4f>;
@group(0) @binding(11) var<storage, read_write> dv: array<vec4f>;
@group(0) @binding(12) var<storage, read_write> part_ml: array<vec2f>;
@group(0) @binding(13) var<storage, read_write> part_acc: array<vec4f>;

// Four query rows ρ = first + 8m (m = 0..3) of kv group (b, g), clamped to the last row.
struct Rows {
  base: vec4u,     // vec4 index of the row in q / out / dout / dq
  pos: vec4u,      // causal position (0xffffffff when not causal: sees every key)
  stat: vec4u,     // index into lse / stats
  valid: vec4<bool>,
}

fn rows4(b: u32, g: u32, first: u32) -> Rows {
  let n = u.G * u.T;
  let rho = vec4u(first) + vec4u(0u, 8u, 16u, 24u);
  let rc = min(rho, vec4u(n - 1u));
  let i = rc / u.G;
  let h = vec4u(g * u.G) + rc % u.G;
  let pos = select(vec4u(0xffffffffu), vec4u(u.qoff) + i, u.causal != 0u);
  return Rows(((b * u.T + i) * u.Hq + h) * u.D4, pos, (b * u.Hq + h) * u.T + i, rho < vec4u(n));
}

// Four consecutive query rows first..first+3 (the query side of bwd_dkdv), clamped.
fn rows_seq(b: u32, g: u32, first: u32) -> Rows {
  let n = u.G * u.T;
  let rho = vec4u(first) + vec4u(0u, 1u, 2u, 3u);
  let rc = min(rho, vec4u(n - 1u));
  let i = rc / u.G;
  let h = vec4u(g * u.G) + rc % u.G;
  let pos = select(vec4u(0xffffffffu), vec4u(u.qoff) + i, u.causal != 0u);
  return Rows(((b * u.T + i) * u.Hq + h) * u.D4, pos, (b * u.Hq + h) * u.T + i, rho < vec4u(n));
}

// Four keys j = first + step·m (m = 0..3) of kv group (b, g), clamped to S - 1; ok = j < jend and
// not masked out.
struct Keys {
  base: vec4u,  // vec4 index of the key row in k / v / dk / dv
  j: vec4u,
  ok: vec4<bool>,
}

fn keys4(b: u32, g: u32, first: u32, step: u32, jend: u32) -> Keys {
  let j = vec4u(first) + vec4u(0u, 1u, 2u, 3u) * step;
  let jc = min(j, vec4u(u.S - 1u));
  var ok = j < vec4u(jend);
  if (u.masked != 0u) {
    let m = vec4u(b * u.S) + jc;
    ok = ok & (vec4i(kmask[m.x], kmask[m.y], kmask[m.z], kmask[m.w]) != vec4i(0));
  }
  return Keys(((vec4u(b * u.S) + jc) * u.Hkv + g) * u.D4, j, ok);
}

// Chunk c of four rows of q (or dout, k, v) as the columns of a matrix.
fn ld_q(r: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(q[r.x + c], q[r.y + c], q[r.z + c], q[r.w + c]);
}
fn ld_do(r: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(dout[r.x + c], dout[r.y + c], dout[r.z + c], dout[r.w + c]);
}
fn ld_k(r: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(k[r.x + c], k[r.y + c], k[r.z + c], k[r.w + c]);
}
fn ld_v(r: vec4u, c: u32) -> mat4x4f {
  return mat4x4f(v[r.x + c], v[r.y + c], v[r.z + c], v[r.w + c]);
}

// Column m of a scaled by s[m].
fn scale_cols(a: mat4x4f, s: vec4f) -> mat4x4f {
  return mat4x4f(a[0] * s.x, a[1] * s.y, a[2] * s.z, a[3] * s.w);
}
fn col_max(a: mat4x4f) -> vec4f {
  return max(max(a[0], a[1]), max(a[2], a[3]));
}
fn col_sum(a: mat4x4f) -> vec4f {
  return (a[0] + a[1]) + (a[2] + a[3]);
}

// Visibility of 4 keys (columns) to 4 query rows (components).
fn vis(kk: Keys, pos: vec4u, valid: vec4<bool>) -> array<vec4<bool>, 4> {
  return array<vec4<bool>, 4>(
    valid & vec4<bool>(kk.ok.x) & (vec4u(kk.j.x) <= pos),
    valid & vec4<bool>(kk.ok.y) & (vec4u(kk.j.y) <= pos),
    valid & vec4<bool>(kk.ok.z) & (vec4u(kk.j.z) <= pos),
    valid & vec4<bool>(kk.ok.w) & (vec4u(kk.j.w) <= pos),
  );
}

// s with invisible entries replaced by NEG.
fn mask_scores(s: mat4x4f, m: array<vec4<bool>, 4>) -> mat4x4f {
  let ng = vec4f(NEG);
  return mat4x4f(select(ng, s[0], m[0]), select(ng, s[1], m[1]), select(ng, s[2], m[2]),
                 select(ng, s[3], m[3]));
}

// exp(s - sub) where visible, else 0 (column = key, component = row).
fn probs(s: mat4x4f, sub: vec4f, m: array<vec4<bool>, 4>) -> mat4x4f {
  let z = vec4f(0.0);
  return mat4x4f(select(z, exp(s[0] - sub), m[0]), select(z, exp(s[1] - sub), m[1]),
                 select(z, exp(s[2] - sub), m[2]), select(z, exp(s[3] - sub), m[3]));
}

// One past the last key that any of the 64 query rows ρ = first..first+63 can see.
fn key_end(first: u32) -> u32 {
  if (u.causal == 0u) { return u.S; }
  let last = min(u.G * u.T - 1u, first + 63u);
  return min(u.S, u.qoff + last / u.G + 1u);
}

// ---- forward: out = softmax(scale·q·kᵀ, masked) · v, lse = logsumexp of the masked scores ----

// Running max and sum of exp of one invocation's rows (groups A and B).
struct Online {
  ma: vec4f,
  mb: vec4f,
  la: vec4f,
  lb: vec4f,
}

// Online softmax of rows ra, rb (kv group b, g) over keys [j_begin, j_end), 8 keys at a time:
// fills oa / ob with Σ_j exp(s_j - max) v_j (unnormalised; oa[c] column m = row m of group A, head
// dims 4c..4c+3) and returns the running max and sum.
fn attend(b: u32, g: u32, ra: Rows, rb: Rows, j_begin: u32, j_end: u32,
          oa: ptr<function, array<mat4x4f, MAXD4>>,
          ob: ptr<function, array<mat4x4f, MAXD4>>) -> Online {
  // qa[c]: rows of group A (as matrix rows) × head dims 4c..4c+3, pre-scaled.
  var qa: array<mat4x4f, MAXD4>;
  var qb: array<mat4x4f, MAXD4>;
  for (var c = 0u; c < u.D4; c++) {
    qa[c] = transpose(ld_q(ra.base, c)) * u.scale;
    qb[c] = transpose(ld_q(rb.base, c)) * u.scale;
  }
  var st = Online(vec4f(NEG), vec4f(NEG), vec4f(0.0), vec4f(0.0));
  for (var j0 = j_begin; j0 < j_end; j0 += 8u) {
    let k0 = keys4(b, g, j0, 1u, j_end);
    let k1 = keys4(b, g, j0 + 4u, 1u, j_end);
    // s{group}{key group}[key] = scores of that key for the 4 rows of the group.
    var sa0 = mat4x4f();
    var sa1 = mat4x4f();
    var sb0 = mat4x4f();
    var sb1 = mat4x4f();
    for (var c = 0u; c < u.D4; c++) {
      let x0 = ld_k(k0.base, c);
      let x1 = ld_k(k1.base, c);
      let ya = qa[c];
      let yb = qb[c];
      sa0 += ya * x0;
      sa1 += ya * x1;
      sb0 += yb * x0;
      sb1 += yb * x1;
    }
    let va0 = vis(k0, ra.pos, ra.valid);
    let va1 = vis(k1, ra.pos, ra.valid);
    let vb0 = vis(k0, rb.pos, rb.valid);
    let vb1 = vis(k1, rb.pos, rb.valid);
    sa0 = mask_scores(sa0, va0);
    sa1 = mask_scores(sa1, va1);
    sb0 = mask_scores(sb0, vb0);
    sb1 = mask_scores(sb1, vb1);
    let na = max(st.ma, max(col_max(sa0), col_max(sa1)));
    let nb = max(st.mb, max(col_max(sb0), col_max(sb1)));
    let aa = exp(st.ma - na);
    let ab = exp(st.mb - nb);
    // p{..} transposed: column = row, component = key.
    let pa0 = transpose(probs(sa0, na, va0));
    let pa1 = transpose(probs(sa1, na, va1));
    let pb0 = transpose(probs(sb0, nb, vb0));
    let pb1 = transpose(probs(sb1, nb, vb1));
    st.la = st.la * aa + col_sum(transpose(pa0)) + col_sum(transpose(pa1));
    st.lb = st.lb * ab + col_sum(transpose(pb0)) + col_sum(transpose(pb1));
    st.ma = na;
    st.mb = nb;
    for (var c = 0u; c < u.D4; c++) {
      let x0 = ld_v(k0.base, c);
      let x1 = ld_v(k1.base, c);
      (*oa)[c] = scale_cols((*oa)[c], aa) + x0 * pa0 + x1 * pa1;
      (*ob)[c] = scale_cols((*ob)[c], ab) + x0 * pb0 + x1 * pb1;
    }
  }
  return st;
}

@compute @workgroup_size(8)
fn fwd(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / u.Hkv;
  let g = wid.y % u.Hkv;
  let r0 = wid.x * 64u;
  let ra = rows4(b, g, r0 + lid);
  let rb = rows4(b, g, r0 + lid + 32u);
  var oa: array<mat4x4f, MAXD4>;
  var ob: array<mat4x4f, MAXD4>;
  let st = attend(b, g, ra, rb, 0u, key_end(r0), &oa, &ob);
  let ia = select(vec4f(0.0), 1.0 / st.la, st.la > vec4f(0.0));
  let ib = select(vec4f(0.0), 1.0 / st.lb, st.lb > vec4f(0.0));
  for (var c = 0u; c < u.D4; c++) {
    let xa = scale_cols(oa[c], ia);
    let xb = scale_cols(ob[c], ib);
    if (ra.valid.x) { o[ra.base.x + c] = xa[0]; }
    if (ra.valid.y) { o[ra.base.y + c] = xa[1]; }
    if (ra.valid.z) { o[ra.base.z + c] = xa[2]; }
    if (ra.valid.w) { o[ra.base.w + c] = xa[3]; }
    if (rb.valid.x) { o[rb.base.x + c] = xb[0]; }
    if (rb.valid.y) { o[rb.base.y + c] = xb[1]; }
    if (rb.valid.z) { o[rb.base.z + c] = xb[2]; }
    if (rb.valid.w) { o[rb.base.w + c] = xb[3]; }
  }
  // Rows that saw no key keep lse = NEG (their probabilities are all 0 in backward too).
  let lsa = select(vec4f(NEG), st.ma + log(st.la), st.la > vec4f(0.0));
  let lsb = select(vec4f(NEG), st.mb + log(st.lb), st.lb > vec4f(0.0));
  for (var m = 0u; m < 4u; m++) {
    if (ra.valid[m]) { lse[ra.stat[m]] = lsa[m]; }
    if (rb.valid[m]) { lse[rb.stat[m]] = lsb[m]; }
  }
}

// ---- forward with the keys split (decode: at most 8 query rows per kv group) ----
// fwd_split: grid (nsplit / 8, B·Hkv); invocation s = split s of kv group (b, g), keys
// [s·slen, (s+1)·slen) for all G·T <= 8 rows; writes its unnormalised partial result to
// part_ml[slot] = (max, sum), part_acc[slot·D4 + c] = Σ exp(s - max) v, slot = (group·nsplit +
// s)·8 + row. fwd_combine: one invocation per (group, row), workgroup 64, 1-D grid (folded):
// merges the nsplit partials into out and lse.
@compute @workgroup_size(8)
fn fwd_split(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / u.Hkv;
  let g = wid.y % u.Hkv;
  let s = wid.x * 8u + lid;
  let ra = rows_seq(b, g, 0u);
  let rb = rows_seq(b, g, 4u);
  let jend = key_end(0u);
  let js = min(jend, s * u.slen);
  var oa: array<mat4x4f, MAXD4>;
  var ob: array<mat4x4f, MAXD4>;
  let st = attend(b, g, ra, rb, js, min(jend, js + u.slen), &oa, &ob);
  let slot = (wid.y * u.nsplit + s) * 8u;
  for (var m = 0u; m < 4u; m++) {
    part_ml[slot + m] = vec2f(st.ma[m], st.la[m]);
    part_ml[slot + 4u + m] = vec2f(st.mb[m], st.lb[m]);
  }
  for (var c = 0u; c < u.D4; c++) {
    let xa = oa[c];
    let xb = ob[c];
    part_acc[slot * u.D4 + c] = xa[0];
    part_acc[(slot + 1u) * u.D4 + c] = xa[1];
    part_acc[(slot + 2u) * u.D4 + c] = xa[2];
    part_acc[(slot + 3u) * u.D4 + c] = xa[3];
    part_acc[(slot + 4u) * u.D4 + c] = xb[0];
    part_acc[(slot + 5u) * u.D4 + c] = xb[1];
    part_acc[(slot + 6u) * u.D4 + c] = xb[2];
    part_acc[(slot + 7u) * u.D4 + c] = xb[3];
  }
}

@compute @workgroup_size(64)
fn fwd_combine(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let id = (wid.y * nwg.x + wid.x) * 64u + lid;
  let grp = id / 8u;  // b·Hkv + g
  let row = id % 8u;
  let n = u.G * u.T;
  if (grp >= u.nstat / n || row >= n) { return; }
  let b = grp / u.Hkv;
  let i = row / u.G;
  let h = (grp % u.Hkv) * u.G + row % u.G;
  let first = grp * u.nsplit * 8u + row;
  var mx = NEG;
  for (var s = 0u; s < u.nsplit; s++) { mx = max(mx, part_ml[first + s * 8u].x); }
  var l = 0.0;
  for (var s = 0u; s < u.nsplit; s++) {
    let p = part_ml[first + s * 8u];
    l += p.y * exp(p.x - mx);
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  let base = ((b * u.T + i) * u.Hq + h) * u.D4;
  for (var c = 0u; c < u.D4; c++) {
    var acc = vec4f(0.0);
    for (var s = 0u; s < u.nsplit; s++) {
      let slot = first + s * 8u;
      acc += part_acc[slot * u.D4 + c] * exp(part_ml[slot].x - mx);
    }
    o[base + c] = acc * inv;
  }
  lse[(b * u.Hq + h) * u.T + i] = select(NEG, mx + log(l), l > 0.0);
}

// ---- backward, step 1: stats[row] = (lse, Σ_d dout·out) ----
@compute @workgroup_size(64)
fn prep(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let idx = (wid.y * nwg.x + wid.x) * 64u + lid;
  if (idx >= u.nstat) { return; }
  let i = idx % u.T;
  let h = (idx / u.T) % u.Hq;
  let b = idx / (u.T * u.Hq);
  let base = ((b * u.T + i) * u.Hq + h) * u.D4;
  var acc = 0.0;
  for (var c = 0u; c < u.D4; c++) { acc += dot(o[base + c], dout[base + c]); }
  stats[idx] = vec2f(lse[idx], acc);
}

// ---- backward, step 2: dq = scale · Σ_j dS_ij k_j, dS = P ⊙ (dout·v - Σ dout·out) ----
@compute @workgroup_size(8)
fn bwd_dq(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / u.Hkv;
  let g = wid.y % u.Hkv;
  let r0 = wid.x * 64u;
  let ra = rows4(b, g, r0 + lid);
  let rb = rows4(b, g, r0 + lid + 32u);
  var qa: array<mat4x4f, MAXD4>;  // transposed, pre-scaled q chunks (as in fwd)
  var qb: array<mat4x4f, MAXD4>;
  var ga: array<mat4x4f, MAXD4>;  // transposed dout chunks
  var gb: array<mat4x4f, MAXD4>;
  var da: array<mat4x4f, MAXD4>;  // dq / scale accumulator, column = row
  var db: array<mat4x4f, MAXD4>;
  for (var c = 0u; c < u.D4; c++) {
    qa[c] = transpose(ld_q(ra.base, c)) * u.scale;
    qb[c] = transpose(ld_q(rb.base, c)) * u.scale;
    ga[c] = transpose(ld_do(ra.base, c));
    gb[c] = transpose(ld_do(rb.base, c));
  }
  let sta = array<vec2f, 4>(stats[ra.stat.x], stats[ra.stat.y], stats[ra.stat.z], stats[ra.stat.w]);
  let stb = array<vec2f, 4>(stats[rb.stat.x], stats[rb.stat.y], stats[rb.stat.z], stats[rb.stat.w]);
  let lsa = vec4f(sta[0].x, sta[1].x, sta[2].x, sta[3].x);
  let lsb = vec4f(stb[0].x, stb[1].x, stb[2].x, stb[3].x);
  let dsa = vec4f(sta[0].y, sta[1].y, sta[2].y, sta[3].y);
  let dsb = vec4f(stb[0].y, stb[1].y, stb[2].y, stb[3].y);
  let jend = key_end(r0);
  for (var j0 = 0u; j0 < jend; j0 += 8u) {
    let k0 = keys4(b, g, j0, 1u, jend);
    let k1 = keys4(b, g, j0 + 4u, 1u, jend);
    var sa0 = mat4x4f();  // scores, column = key, component = row
    var sa1 = mat4x4f();
    var sb0 = mat4x4f();
    var sb1 = mat4x4f();
    var ea0 = mat4x4f();  // dP = dout·v, same layout
    var ea1 = mat4x4f();
    var eb0 = mat4x4f();
    var eb1 = mat4x4f();
    for (var c = 0u; c < u.D4; c++) {
      let x0 = ld_k(k0.base, c);
      let x1 = ld_k(k1.base, c);
      let w0 = ld_v(k0.base, c);
      let w1 = ld_v(k1.base, c);
      let ya = qa[c];
      let yb = qb[c];
      let za = ga[c];
      let zb = gb[c];
      sa0 += ya * x0;
      sa1 += ya * x1;
      sb0 += yb * x0;
      sb1 += yb * x1;
      ea0 += za * w0;
      ea1 += za * w1;
      eb0 += zb * w0;
      eb1 += zb * w1;
    }
    // dS = P ⊙ (dP - Σ dout·out), transposed to column = row, component = key.
    let ta0 = transpose(dscore(sa0, ea0, lsa, dsa, vis(k0, ra.pos, ra.valid)));
    let ta1 = transpose(dscore(sa1, ea1, lsa, dsa, vis(k1, ra.pos, ra.valid)));
    let tb0 = transpose(dscore(sb0, eb0, lsb, dsb, vis(k0, rb.pos, rb.valid)));
    let tb1 = transpose(dscore(sb1, eb1, lsb, dsb, vis(k1, rb.pos, rb.valid)));
    for (var c = 0u; c < u.D4; c++) {
      let x0 = ld_k(k0.base, c);
      let x1 = ld_k(k1.base, c);
      da[c] += x0 * ta0 + x1 * ta1;
      db[c] += x0 * tb0 + x1 * tb1;
    }
  }
  for (var c = 0u; c < u.D4; c++) {
    let xa = da[c] * u.scale;
    let xb = db[c] * u.scale;
    if (ra.valid.x) { dq[ra.base.x + c] = xa[0]; }
    if (ra.valid.y) { dq[ra.base.y + c] = xa[1]; }
    if (ra.valid.z) { dq[ra.base.z + c] = xa[2]; }
    if (ra.valid.w) { dq[ra.base.w + c] = xa[3]; }
    if (rb.valid.x) { dq[rb.base.x + c] = xb[0]; }
    if (rb.valid.y) { dq[rb.base.y + c] = xb[1]; }
    if (rb.valid.z) { dq[rb.base.z + c] = xb[2]; }
    if (rb.valid.w) { dq[rb.base.w + c] = xb[3]; }
  }
}

// P ⊙ (dP - dsum) with P = exp(s - lse) where visible (column = key, component = row).
fn dscore(s: mat4x4f, e: mat4x4f, ls: vec4f, ds: vec4f, m: array<vec4<bool>, 4>) -> mat4x4f {
  let p = probs(s, ls, m);
  return mat4x4f(p[0] * (e[0] - ds), p[1] * (e[1] - ds), p[2] * (e[2] - ds), p[3] * (e[3] - ds));
}

// ---- backward, step 3: dv_j = Σ_i P_ij dout_i, dk_j = scale · Σ_i dS_ij q_i ----
@compute @workgroup_size(8)
fn bwd_dkdv(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / u.Hkv;
  let g = wid.y % u.Hkv;
  let j0 = wid.x * 64u;
  // This invocation's keys: group A = j0 + lid + 8m, group B = j0 + lid + 32 + 8m.
  let ka = keys4(b, g, j0 + lid, 8u, u.S);
  let kb = keys4(b, g, j0 + lid + 32u, 8u, u.S);
  var xa: array<mat4x4f, MAXD4>;  // transposed, pre-scaled k chunks: row = key
  var xb: array<mat4x4f, MAXD4>;
  var wa: array<mat4x4f, MAXD4>;  // transposed v chunks
  var wb: array<mat4x4f, MAXD4>;
  var ga: array<mat4x4f, MAXD4>;  // dk / scale accumulator, column = key
  var gb: array<mat4x4f, MAXD4>;
  var ha: array<mat4x4f, MAXD4>;  // dv accumulator, column = key
  var hb: array<mat4x4f, MAXD4>;
  for (var c = 0u; c < u.D4; c++) {
    xa[c] = transpose(ld_k(ka.base, c)) * u.scale;
    xb[c] = transpose(ld_k(kb.base, c)) * u.scale;
    wa[c] = transpose(ld_v(ka.base, c));
    wb[c] = transpose(ld_v(kb.base, c));
  }
  // Query rows before the one at position j0 (less qoff) see none of these keys when causal.
  let n = u.G * u.T;
  var first = 0u;
  if (u.causal != 0u && j0 > u.qoff) { first = min(n, (j0 - u.qoff) * u.G); }
  for (var r = first; r < n; r += 8u) {
    let q0 = rows_seq(b, g, r);
    let q1 = rows_seq(b, g, r + 4u);
    var sa0 = mat4x4f();  // scores, column = query row, component = key
    var sa1 = mat4x4f();
    var sb0 = mat4x4f();
    var sb1 = mat4x4f();
    var ea0 = mat4x4f();  // dP = v·dout, same layout
    var ea1 = mat4x4f();
    var eb0 = mat4x4f();
    var eb1 = mat4x4f();
    for (var c = 0u; c < u.D4; c++) {
      let y0 = ld_q(q0.base, c);
      let y1 = ld_q(q1.base, c);
      let z0 = ld_do(q0.base, c);
      let z1 = ld_do(q1.base, c);
      let ya = xa[c];
      let yb = xb[c];
      let za = wa[c];
      let zb = wb[c];
      sa0 += ya * y0;
      sa1 += ya * y1;
      sb0 += yb * y0;
      sb1 += yb * y1;
      ea0 += za * z0;
      ea1 += za * z1;
      eb0 += zb * z0;
      eb1 += zb * z1;
    }
    let st0 = array<vec2f, 4>(stats[q0.stat.x], stats[q0.stat.y], stats[q0.stat.z],
                              stats[q0.stat.w]);
    let st1 = array<vec2f, 4>(stats[q1.stat.x], stats[q1.stat.y], stats[q1.stat.z],
                              stats[q1.stat.w]);
    // Probabilities and dS, column = key, component = query row (then transposed).
    let pa0 = kv_probs(sa0, st0, ka, q0);
    let pa1 = kv_probs(sa1, st1, ka, q1);
    let pb0 = kv_probs(sb0, st0, kb, q0);
    let pb1 = kv_probs(sb1, st1, kb, q1);
    let tdv_a0 = transpose(pa0);
    let tdv_a1 = transpose(pa1);
    let tdv_b0 = transpose(pb0);
    let tdv_b1 = transpose(pb1);
    let tdk_a0 = transpose(kv_dscore(pa0, ea0, st0));
    let tdk_a1 = transpose(kv_dscore(pa1, ea1, st1));
    let tdk_b0 = transpose(kv_dscore(pb0, eb0, st0));
    let tdk_b1 = transpose(kv_dscore(pb1, eb1, st1));
    for (var c = 0u; c < u.D4; c++) {
      let y0 = ld_q(q0.base, c);
      let y1 = ld_q(q1.base, c);
      let z0 = ld_do(q0.base, c);
      let z1 = ld_do(q1.base, c);
      ga[c] += y0 * tdk_a0 + y1 * tdk_a1;
      gb[c] += y0 * tdk_b0 + y1 * tdk_b1;
      ha[c] += z0 * tdv_a0 + z1 * tdv_a1;
      hb[c] += z0 * tdv_b0 + z1 * tdv_b1;
    }
  }
  for (var c = 0u; c < u.D4; c++) {
    let xk = ga[c] * u.scale;
    let yk = gb[c] * u.scale;
    let xv = ha[c];
    let yv = hb[c];
    // Every key of the group gets a value (0 for masked keys); keys >= S are clamped copies.
    let va = ka.j < vec4u(u.S);
    let vb = kb.j < vec4u(u.S);
    if (va.x) { dk[ka.base.x + c] = xk[0]; dv[ka.base.x + c] = xv[0]; }
    if (va.y) { dk[ka.base.y + c] = xk[1]; dv[ka.base.y + c] = xv[1]; }
    if (va.z) { dk[ka.base.z + c] = xk[2]; dv[ka.base.z + c] = xv[2]; }
    if (va.w) { dk[ka.base.w + c] = xk[3]; dv[ka.base.w + c] = xv[3]; }
    if (vb.x) { dk[kb.base.x + c] = yk[0]; dv[kb.base.x + c] = yv[0]; }
    if (vb.y) { dk[kb.base.y + c] = yk[1]; dv[kb.base.y + c] = yv[1]; }
    if (vb.z) { dk[kb.base.z + c] = yk[2]; dv[kb.base.z + c] = yv[2]; }
    if (vb.w) { dk[kb.base.w + c] = yk[3]; dv[kb.base.w + c] = yv[3]; }
  }
}

// P for 4 keys (components) × 4 query rows (columns): exp(s - lse_row) where the key is visible.
fn kv_probs(s: mat4x4f, st: array<vec2f, 4>, keys: Keys, rows: Rows) -> mat4x4f {
  let z = vec4f(0.0);
  var p: mat4x4f;
  for (var m = 0u; m < 4u; m++) {
    let ok = keys.ok & vec4<bool>(rows.valid[m]) & (keys.j <= vec4u(rows.pos[m]));
    p[m] = select(z, exp(s[m] - vec4f(st[m].x)), ok);
  }
  return p;
}

// dS = P ⊙ (dP - Σ dout·out of the row), same layout as kv_probs.
fn kv_dscore(p: mat4x4f, e: mat4x4f, st: array<vec2f, 4>) -> mat4x4f {
  return mat4x4f(p[0] * (e[0] - st[0].y), p[1] * (e[1] - st[1].y), p[2] * (e[2] - st[2].y),
                 p[3] * (e[3] - st[3].y));
}
