// patchify.wgsl — im2col for a stride = kernel convolution (the SigLIP patch embedding).
//
// x:   [B, C, H, W] f32 images (NCHW, row-major)
// out: [B, gh·gw, C·P·P] f32, gh = ⌊H/P⌋, gw = ⌊W/P⌋ (pixels past the last whole patch are
//      dropped, as a stride-P convolution without padding does)
//   out[b, row·gw + col, (c·P + ky)·P + kx] = x[b, c, row·P + ky, col·P + kx]
// so that out · weight.view([O, C·P·P])ᵀ equals Conv2d(C → O, kernel P, stride P).
// Grid: 1-D over the output elements, workgroup 256, folded into 2-D above 65,535 workgroups.

struct P {
  n: u32,      // output elements = B · gh · gw · C · P · P
  c: u32,      // channels
  h: u32,      // image height
  w: u32,      // image width
  p: u32,      // patch size
  gw: u32,     // patches per row
  np: u32,     // patches per image = gh · gw
}

@group(0) @binding(0) var<uniform> u: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(256)
fn patchify(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= u.n) { return; }
  let k = u.c * u.p * u.p;
  let e = i % k;            // channel of the patch vector: (c·P + ky)·P + kx
  let t = i / k;            // b · np + patch
  let pi = t % u.np;
  let b = t / u.np;
  let kx = e % u.p;
  let ky = (e / u.p) % u.p;
  let c = e / (u.p * u.p);
  let y = (pi / u.gw) * u.p + ky;
  let xx = (pi % u.gw) * u.p + kx;
  o[i] = x[((b * u.c + c) * u.h + y) * u.w + xx];
}
