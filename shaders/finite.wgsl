// Finite check (src/tensor/ops/finite.ts): counts the non-finite elements (NaN, ±Inf: exponent
// bits all ones) of one f32 window into a running total count[0], so that any number of tensors
// are checked with a single readback at the end. Each invocation tests PER elements; a
// workgroup sums its hits in workgroup memory and adds them to the total once.

struct P { n: u32 }

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> count: array<atomic<u32>>;

const PER = 8u;
var<workgroup> hits: atomic<u32>;

@compute @workgroup_size(256)
fn count_nonfinite(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let base = (wid.y * nwg.x + wid.x) * (PER * 256u) + lid;
  var bad = 0u;
  for (var k = 0u; k < PER; k++) {
    let i = base + k * 256u;
    if (i < u.n && (x[i] & 0x7f800000u) == 0x7f800000u) { bad++; }
  }
  if (bad > 0u) { atomicAdd(&hits, bad); }
  workgroupBarrier();
  if (lid == 0u) {
    let h = atomicLoad(&hits);
    if (h > 0u) { atomicAdd(&count[0], h); }
  }
}
