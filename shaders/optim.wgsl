// optim.wgsl — AdamW update (torch.optim.AdamW semantics) and the global-norm clip coefficient.
//
// adamw: p, g, m, v: one window of n f32 elements each (bound as array<vec4f>; the host rounds
//   the binding up to 16 bytes and lanes ≥ n keep their old values). coef: [2] f32 =
//   (clip scale c, finite flag). When coef[1] == 0 nothing is written. Otherwise, per element:
//     g' = c·g;  m = β1·m + (1 − β1)·g';  v = β2·v + (1 − β2)·g'²
//     p = p·(1 − lr·wd) − (lr / (1 − β1^t))·m / (sqrt(v) / sqrt(1 − β2^t) + eps)
//   (bias corrections and lr products are computed on the host in f64 and passed as uniforms,
//   so the learning rate can change every step without recompiling.)
//   Grid: 1-D, workgroup 256, each workgroup updating PER·256 consecutive vec4s (invocation lid
//   takes vec4s base + k·256 + lid, k < PER); folded to 2-D above 65,535 workgroups.
// clip: sumsq: [1] f32 = Σ g² over all gradients → out: [2] f32 =
//   (min(1, max_norm / (sqrt(sumsq) + 1e-6)), 1) when sumsq is finite, (1, 0) otherwise.
//   One invocation; the finiteness test uses the exponent bits (no reliance on NaN compares).

struct P {
  n: u32,          // elements in the window
  decay: f32,      // 1 − lr·wd
  step_size: f32,  // lr / (1 − β1^t)
  b1: f32,         // β1
  omb1: f32,       // 1 − β1
  b2: f32,         // β2
  omb2: f32,       // 1 − β2
  bc2_sqrt: f32,   // sqrt(1 − β2^t)
  eps: f32,        // eps
  max_norm: f32,   // clip threshold (clip)
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read_write> p: array<vec4f>;
@group(0) @binding(2) var<storage, read> g: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> m: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> v: array<vec4f>;
@group(0) @binding(5) var<storage, read> coef: array<f32>;
@group(0) @binding(6) var<storage, read> sumsq: array<f32>;
@group(0) @binding(7) var<storage, read_write> cout: array<f32>;

// vec4s per invocation: a workgroup updates PER × 256 consecutive vec4s, lanes stay contiguous.
const PER: u32 = 8u;

fn update(i: u32, c: f32) {
  let gc = g[i] * c;
  let p0 = p[i];
  let m0 = m[i];
  let v0 = v[i];
  let m1 = u.b1 * m0 + u.omb1 * gc;
  let v1 = u.b2 * v0 + u.omb2 * gc * gc;
  let p1 = p0 * u.decay - u.step_size * m1 / (sqrt(v1) / u.bc2_sqrt + u.eps);
  if (4u * i + 4u <= u.n) {
    p[i] = p1;
    m[i] = m1;
    v[i] = v1;
  } else {
    let beyond = vec4u(4u * i) + vec4u(0u, 1u, 2u, 3u) >= vec4u(u.n);
    p[i] = select(p1, p0, beyond);
    m[i] = select(m1, m0, beyond);
    v[i] = select(v1, v0, beyond);
  }
}

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  if (coef[1] == 0.0) { return; }
  let c = coef[0];
  let n4 = (u.n + 3u) / 4u;
  let base = (wid.y * nwg.x + wid.x) * (PER * 256u) + lid;
  for (var k = 0u; k < PER; k++) {
    let i = base + k * 256u;
    if (i >= n4) { return; }
    update(i, c);
  }
}

@compute @workgroup_size(1)
fn clip() {
  let s = sumsq[0];
  let finite = (bitcast<u32>(s) & 0x7f800000u) != 0x7f800000u;
  var c = 1.0;
  if (finite) { c = min(1.0, u.max_norm / (sqrt(s) + 1e-6)); }
  cout[0] = c;
  cout[1] = select(0.0, 1.0, finite);
}
