// embedding.wgsl — row gather from (possibly huge) tables and the deterministic scatter-add that
// is its backward, plus row overwrite (image-token fusion) and zero-filling of big buffers.
//
// Tables [V, H] are bound one row window at a time: rows [row0, row0 + rows) at a byte offset
// that is a multiple of minStorageBufferOffsetAlignment (the host loops over windows, so tables
// larger than one storage binding work). In a window, element e = (row − row0)·H + j.
// Table dtype (mode): 0 = f32, 1 = f16, 2 = bf16; half types are packed two per u32 word (element
// 2k in the low 16 bits) and widened to f32. Window starts are whole words (even element index).
//
// gather:      out[t, j] = table[ids[t], j] for t < ntok, j < H (n = ntok·H invocations). Ids
//              outside [0, vocab) give a zero row. Each window's dispatch writes the rows it holds.
// links:       per token t: links[t] = (first, next): first = 1 when no earlier token has the same
//              id, next = the next token with the same id or −1 (O(ntok²) total, ntok invocations).
// scatter_add: for the first token t of each distinct id held by the window:
//              dst[id, j] = Σ over t's chain of g[m, j] (summed in token order — deterministic,
//              no float atomics). Rows of dst not touched are left as they are (zero-filled first).
// scatter_set: dst[idx[k], j] = rows[k, j] (mode 0) or 0 (mode 1), for ids held by the window.
// fill_zero:   dst4[i] = 0 for i < n vec4s (one 16-byte-padded window of a buffer); a workgroup
//              clears 16 × 256 consecutive vec4s (per-workgroup overhead dominates on lavapipe).
// Grid: 1-D, workgroup 256, folded to 2-D above 65,535 workgroups.

struct P {
  n: u32,      // invocations that do work
  h: u32,      // row length H (elements)
  row0: u32,   // first table row of the bound window
  rows: u32,   // rows in the window
  vocab: u32,  // rows of the whole table
  mode: u32,   // table dtype (gather) / 0 = copy, 1 = zero (scatter_set)
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> links: array<i32>;
@group(0) @binding(5) var<storage, read> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;
@group(0) @binding(7) var<storage, read_write> dst4: array<vec4f>;

fn flat(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * 256u + lid;
}

fn load_table(e: u32) -> f32 {
  if (u.mode == 0u) { return bitcast<f32>(table[e]); }
  let bits = (table[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
  if (u.mode == 2u) { return bitcast<f32>(bits << 16u); }
  return unpack2x16float(bits).x;
}

// Row of an id inside the bound window, or −1 when the window does not hold it.
fn window_row(id: i32) -> i32 {
  if (id < 0) { return -1; }
  let r = u32(id);
  if (r >= u.vocab || r < u.row0 || r >= u.row0 + u.rows) { return -1; }
  return i32(r - u.row0);
}

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= u.n) { return; }
  let t = i / u.h;
  let j = i % u.h;
  let id = ids[t];
  if (id < 0 || u32(id) >= u.vocab) {
    out[i] = 0.0;
    return;
  }
  let r = window_row(id);
  if (r < 0) { return; }
  out[i] = load_table(u32(r) * u.h + j);
}

@compute @workgroup_size(256)
fn build_links(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let t = flat(wid, nwg, lid);
  if (t >= u.n) { return; }
  let id = ids[t];
  var first = 1;
  for (var m = 0u; m < t; m++) {
    if (ids[m] == id) {
      first = 0;
      break;
    }
  }
  var next = -1;
  for (var m = t + 1u; m < u.n; m++) {
    if (ids[m] == id) {
      next = i32(m);
      break;
    }
  }
  links[2u * t] = first;
  links[2u * t + 1u] = next;
}

@compute @workgroup_size(256)
fn scatter_add(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= u.n) { return; }
  let t = i / u.h;
  let j = i % u.h;
  if (links[2u * t] == 0) { return; }
  let r = window_row(ids[t]);
  if (r < 0) { return; }
  var acc = 0.0;
  var m = i32(t);
  loop {
    acc += g[u32(m) * u.h + j];
    let next = links[2u * u32(m) + 1u];
    if (next <= m) { break; }  // −1 ends the chain (and a chain only ever moves forward)
    m = next;
  }
  dst[u32(r) * u.h + j] = acc;
}

@compute @workgroup_size(256)
fn scatter_set(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= u.n) { return; }
  let k = i / u.h;
  let j = i % u.h;
  let r = window_row(ids[k]);
  if (r < 0) { return; }
  var v = 0.0;
  if (u.mode == 0u) { v = g[i]; }
  dst[u32(r) * u.h + j] = v;
}

@compute @workgroup_size(256)
fn fill_zero(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let base = (wid.y * nwg.x + wid.x) * 4096u + lid;
  for (var k = 0u; k < 16u; k++) {
    let i = base + k * 256u;
    if (i >= u.n) { return; }
    dst4[i] = vec4f(0.0);
  }
}
