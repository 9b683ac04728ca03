import { assertClose, gpu, GPU_TEST, rand, TOL } from "./util.ts";
import {
  add,
  addInPlace,
  cast,
  mul,
  noGrad,
  roundBf16,
  roundF16,
  scale,
  sub,
  sum,
  sumOfSquares,
  sumRows,
  Tensor,
  tidy,
} from "../src/tensor/mod.ts";

Deno.test("elementwise: add/mul with broadcast, forward and backward", GPU_TEST, async () => {
  const g = await gpu();
  const M = 37, N = 19;
  const av = rand(M * N, 1), bv = rand(N, 2), gv = rand(M * N, 3);
  const a = Tensor.from(g, av, [M, N]);
  const b = Tensor.from(g, bv, [N]);
  a.requiresGrad = true;
  b.requiresGrad = true;
  const up = Tensor.from(g, gv, [M, N]);
  const out = tidy(() => mul(add(a, b), b));
  out.backward(up);
  const want = new Float64Array(M * N), ga = new Float64Array(M * N), gb = new Float64Array(N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      const k = i * N + j;
      want[k] = (av[k] + bv[j]) * bv[j];
      ga[k] = gv[k] * bv[j];
      gb[j] += gv[k] * (av[k] + bv[j]) + gv[k] * bv[j];
    }
  }
  assertClose(await out.read(), want, TOL.f32, "forward");
  assertClose(await a.grad!.read(), ga, TOL.f32, "grad a");
  assertClose(await b.grad!.read(), gb, TOL.f32Reduce, "grad b");
  for (const t of [a, b, up, out]) t.dispose();
});

Deno.test(
  "elementwise: sub, scale, sum, sumRows, in-place and grid folding",
  GPU_TEST,
  async () => {
    const g = await gpu();
    // > 65,535 workgroups of 256: 17,000,000 elements.
    const n = 17_000_000;
    const av = rand(n, 4);
    const a = Tensor.from(g, av, [n]);
    a.requiresGrad = true;
    const b = Tensor.from(g, rand(n, 5), [n]);
    const s = tidy(() => sum(scale(sub(a, b), 0.5)));
    s.backward();
    const bv = await b.read();
    let want = 0;
    for (let i = 0; i < n; i++) want += 0.5 * (av[i] - bv[i]);
    assertClose([await s.item()], [want], TOL.f32Reduce, "sum");
    const ga = await a.grad!.read();
    assertClose([ga[0], ga[n - 1], ga[66_000 * 256]], [0.5, 0.5, 0.5], 0, "grad of sum");
    addInPlace(a.grad!, b, 2);
    const ga2 = await a.grad!.read();
    assertClose(ga2.subarray(n - 5), Array.from(bv.subarray(n - 5), (x) => 0.5 + 2 * x), TOL.f32);
    const sq = sumOfSquares([b, b]);
    let want2 = 0;
    for (let i = 0; i < n; i++) want2 += 2 * bv[i] * bv[i];
    assertClose([await sq.item()], [want2], TOL.f32Reduce, "sumOfSquares");
    const r = noGrad(() => sumRows(a.view([n / 1000, 1000]), 1000));
    const rv = await r.read();
    const wr = new Float64Array(1000);
    for (let i = 0; i < n; i++) wr[i % 1000] += av[i];
    assertClose(rv, wr, TOL.f32Reduce, "sumRows");
    for (const t of [a, b, s, sq, r]) t.dispose();
  },
);

Deno.test("cast: f32 <-> f16 / bf16 round to nearest even", GPU_TEST, async () => {
  const g = await gpu();
  const v = rand(1001, 6, 1e-3, 300);
  const a = Tensor.from(g, v, [1001]);
  for (const [dt, round] of [["bf16", roundBf16], ["f16", roundF16]] as const) {
    const h = cast(a, dt);
    const back = cast(h, "f32");
    const got = await back.read();
    const want = Array.from(v, round);
    assertClose(got, want, 0, `${dt} round trip`);
    assertClose(await h.read(), want, 0, `${dt} read`);
    h.dispose();
    back.dispose();
  }
  a.dispose();
});

Deno.test(
  "in-place ops and sumOfSquares run window by window past one binding",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const { setBindingLimitForTests } = await import("../src/tensor/windows.ts");
    const { fillInPlace, scaleInPlace } = await import("../src/tensor/ops/elementwise.ts");
    const n = 10_001;
    const av = rand(n, 7), bv = rand(n, 8);
    const a = Tensor.from(g, av, [n]);
    const b = Tensor.from(g, bv, [n]);
    setBindingLimitForTests(4096); // ~1000 floats per window: 11 windows
    try {
      addInPlace(a, b, -0.5);
      scaleInPlace(a, 3);
      const got = await a.read();
      assertClose(got, Array.from(av, (x, i) => 3 * (x - 0.5 * bv[i])), TOL.f32, "windowed a");
      const sq = sumOfSquares([a, b]);
      let want = 0;
      for (let i = 0; i < n; i++) want += got[i] * got[i] + bv[i] * bv[i];
      assertClose([await sq.item()], [want], TOL.f32Reduce, "windowed sumOfSquares");
      fillInPlace(b, 2.5);
      const bb = await b.read();
      assertClose([bb[0], bb[5000], bb[n - 1]], [2.5, 2.5, 2.5], 0, "windowed fill");
      sq.dispose();
    } finally {
      setBindingLimitForTests(null);
    }
    a.dispose();
    b.dispose();
  },
);

Deno.test("cast runs window by window past one binding", GPU_TEST, async () => {
  const g = await gpu();
  const { setBindingLimitForTests } = await import("../src/tensor/windows.ts");
  const n = 5_003;
  const v = rand(n, 9, 1e-2, 100);
  const a = Tensor.from(g, v, [n]);
  setBindingLimitForTests(2048);
  try {
    for (const [dt, round] of [["bf16", roundBf16], ["f16", roundF16]] as const) {
      const h = cast(a, dt);
      const back = cast(h, "f32");
      assertClose(await back.read(), Array.from(v, round), 0, `windowed ${dt} round trip`);
      h.dispose();
      back.dispose();
    }
  } finally {
    setBindingLimitForTests(null);
  }
  a.dispose();
});
