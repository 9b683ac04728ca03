// Image decoding, Pillow-style resampling and normalisation, and the worker pool.
//
// Expected values come from three independent places: a case derived by hand, a plain float64
// separable resampler written here, and Pillow's own output (tests/fixtures/data/images/
// pillow_expected.json, written by make_images.py with Debian's python3-pil 9.4).

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  decodeImage,
  ImageDecodeError,
  rgbaOverWhite,
  type RgbImage,
  sniffImageFormat,
} from "../src/data/image.ts";
import { ImagePool } from "../src/data/image_pool.ts";
import {
  defaultImageProcessorConfig,
  parsePreprocessorConfig,
  preprocessBytes,
  preprocessRgb,
} from "../src/data/image_processor.ts";
import {
  axisWeights,
  BICUBIC,
  BILINEAR,
  filterFromPilCode,
  resizeRgb,
} from "../src/data/resize.ts";

const IMAGES = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "data", "images");
const readImage = (name: string) => Deno.readFileSync(join(IMAGES, name));
const pillow = JSON.parse(Deno.readTextFileSync(join(IMAGES, "pillow_expected.json")));

/** The pattern make_images.py draws. */
function pattern(w: number, h: number, salt = 0): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        data[(y * w + x) * 3 + c] = ((x * 37 + y * 91 + c * 53 + salt * 17) ^ (x * y + c)) & 255;
      }
    }
  }
  return { width: w, height: h, data };
}

/** Seeded random RGB image. */
function randomImage(w: number, h: number, seed: number): RgbImage {
  let s = seed >>> 0;
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s >>> 24;
  }
  return { width: w, height: h, data };
}

/**
 * Float64 separable reference: a horizontal then a vertical pass, each output pixel a
 * normalised sum of the antialiased kernel (stretched by the shrink factor) over every input
 * pixel, values kept in float64 and only clamped to [0, 255] between passes (as an 8-bit
 * intermediate image is); no fixed point, no rounding.
 */
function referenceResize(
  img: RgbImage,
  outW: number,
  outH: number,
  kernel: (x: number) => number,
): Float64Array {
  const weights = (inSize: number, outSize: number, i: number): [number, number][] => {
    if (inSize === outSize) return [[i, 1]];
    const scale = inSize / outSize;
    const fs = Math.max(1, scale);
    const centre = (i + 0.5) * scale;
    const list: [number, number][] = [];
    for (let j = 0; j < inSize; j++) {
      const w = kernel((j + 0.5 - centre) / fs); // input pixel j has its centre at j + 0.5
      if (w !== 0) list.push([j, w]);
    }
    const sum = list.reduce((a, [, w]) => a + w, 0);
    return list.map(([j, w]) => [j, w / sum]);
  };
  const clamp = (v: number) => Math.min(255, Math.max(0, v));
  const W = img.width, H = img.height;
  const mid = new Float64Array(outW * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < outW; x++) {
      const ws = weights(W, outW, x);
      for (let c = 0; c < 3; c++) {
        let acc = 0;
        for (const [j, w] of ws) acc += w * img.data[(y * W + j) * 3 + c];
        mid[(y * outW + x) * 3 + c] = clamp(acc);
      }
    }
  }
  const out = new Float64Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    const ws = weights(H, outH, y);
    for (let x = 0; x < outW; x++) {
      for (let c = 0; c < 3; c++) {
        let acc = 0;
        for (const [j, w] of ws) acc += w * mid[(j * outW + x) * 3 + c];
        out[(y * outW + x) * 3 + c] = clamp(acc);
      }
    }
  }
  return out;
}

const triangle = (x: number) => Math.max(0, 1 - Math.abs(x));
const keys = (x: number) => {
  x = Math.abs(x);
  if (x < 1) return 1.5 * x ** 3 - 2.5 * x ** 2 + 1;
  if (x < 2) return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2;
  return 0;
};

Deno.test("resize: hand-derived bilinear 4→2 and 3→1 shrink", () => {
  // 4 → 2: scale 2, support widens to 2. Output 0 is centred at 1.0 and reads inputs 0..2 with
  // triangle((j + 0.5 − 1) / 2) = 0.75, 0.75, 0.25 → weights 3/7, 3/7, 1/7.
  const w = axisWeights(4, 2, BILINEAR);
  assert.deepEqual([w.start[0], w.count[0]], [0, 3]);
  const got = Array.from(w.weights.slice(0, 3));
  [3 / 7, 3 / 7, 1 / 7].forEach((v, i) => assert.ok(Math.abs(got[i] - v) < 1e-12, `w${i}`));
  // Row [0, 70, 140, 210] → out0 = (3·0 + 3·70 + 140) / 7 = 50, out1 by symmetry = 160.
  const row: RgbImage = { width: 4, height: 1, data: new Uint8Array(12) };
  [0, 70, 140, 210].forEach((v, i) => row.data.fill(v, i * 3, i * 3 + 3));
  const out = resizeRgb(row, 2, 1, BILINEAR);
  assert.deepEqual(Array.from(out.data), [50, 50, 50, 160, 160, 160]);
  // 3 → 1 bicubic: centre 1.5, support 6, taps at distance 1/3 and 0 and 1/3 (scaled by 3):
  // keys(1/3) = 0.7037…, keys(0) = 1 → weights (k, 1, k) / (1 + 2k).
  const k = keys(1 / 3);
  const b = axisWeights(3, 1, BICUBIC);
  const want = [k / (1 + 2 * k), 1 / (1 + 2 * k), k / (1 + 2 * k)];
  want.forEach((v, i) => assert.ok(Math.abs(b.weights[i] - v) < 1e-12));
});

Deno.test("resize: identity when the size does not change", () => {
  const img = randomImage(5, 4, 9);
  const out = resizeRgb(img, 5, 4);
  assert.deepEqual(out.data, img.data);
  assert.notEqual(out.data, img.data, "a copy, not the same buffer");
});

Deno.test("resize: matches a float64 separable reference within 1.5 levels", () => {
  const cases: [number, number, number, number][] = [
    [37, 29, 11, 7],
    [16, 16, 40, 24],
    [50, 8, 17, 8],
    [8, 50, 8, 3],
    [640, 480, 32, 32],
  ];
  let seed = 1;
  for (const [w, h, ow, oh] of cases) {
    for (const [f, kernel] of [[BICUBIC, keys], [BILINEAR, triangle]] as const) {
      const img = randomImage(w, h, seed++);
      const got = resizeRgb(img, ow, oh, f);
      const want = referenceResize(img, ow, oh, kernel);
      let worst = 0;
      for (let i = 0; i < want.length; i++) {
        worst = Math.max(worst, Math.abs(got.data[i] - want[i]));
      }
      // Pillow rounds each pass to 8 bits (≤ 0.5 level each) and its 22-bit fixed-point
      // weights add a little more; two passes stay under 1.5 levels.
      assert.ok(worst <= 1.5, `${f.name} ${w}x${h}→${ow}x${oh}: worst ${worst}`);
    }
  }
});

Deno.test("resize: bit-exact with Pillow's Image.resize", () => {
  for (const r of pillow.resize) {
    const img = pattern(r.in[0], r.in[1], r.salt);
    const out = resizeRgb(img, r.out[0], r.out[1], filterFromPilCode(r.resample));
    assert.deepEqual(Array.from(out.data), r.rgb, `${r.in}→${r.out} resample ${r.resample}`);
  }
});

Deno.test("resize: unsupported resample codes are named", () => {
  assert.throws(() => filterFromPilCode(1), /unsupported resample 1 \(LANCZOS\)/);
  assert.throws(() => filterFromPilCode(0), /NEAREST/);
  assert.equal(filterFromPilCode(2), BILINEAR);
  assert.equal(filterFromPilCode(3), BICUBIC);
});

Deno.test("decode: every mode matches Pillow's RGB (PNG/GIF exact, JPEG within 2 levels)", async () => {
  for (
    const [name, e] of Object.entries<{ width: number; height: number; rgb: number[] }>(
      pillow.decode,
    )
  ) {
    const img = await decodeImage(readImage(name));
    assert.equal(img.width, e.width, name);
    assert.equal(img.height, e.height, name);
    let worst = 0;
    for (let i = 0; i < e.rgb.length; i++) {
      worst = Math.max(worst, Math.abs(img.data[i] - e.rgb[i]));
    }
    // Different IDCT/upsampling implementations may differ by a level or two on JPEG.
    const tol = name.endsWith(".jpg") ? 2 : 0;
    assert.ok(worst <= tol, `${name}: worst difference ${worst} > ${tol}`);
  }
});

Deno.test("decode: RGBA is composited over white", () => {
  const rgba = new Uint8Array([255, 0, 0, 255, 255, 0, 0, 0, 0, 0, 255, 128, 10, 20, 30, 51]);
  const out = rgbaOverWhite(rgba, 4, 1);
  // a=128: 255·127/255 = 127 added to c·128/255 → blue: 255, others round(127·255/255) = 127.
  assert.deepEqual(Array.from(out.data), [
    255,
    0,
    0,
    255,
    255,
    255,
    127,
    127,
    255,
    Math.round((10 * 51 + 255 * 204) / 255),
    Math.round((20 * 51 + 255 * 204) / 255),
    Math.round((30 * 51 + 255 * 204) / 255),
  ]);
});

Deno.test("decode: unsupported, corrupt and empty inputs give specific errors", async () => {
  const webp = readImage("photo.webp");
  assert.equal(sniffImageFormat(webp), "webp");
  await assert.rejects(decodeImage(webp), (e: unknown) => {
    assert.ok(e instanceof ImageDecodeError);
    assert.equal(e.reason, "unsupported-format");
    assert.match(e.message, /unsupported image format: webp/);
    return true;
  });
  const bmp = new Uint8Array([0x42, 0x4d, 0, 0, 0, 0]);
  await assert.rejects(decodeImage(bmp), /unsupported image format: bmp/);
  await assert.rejects(decodeImage(new Uint8Array([1, 2, 3, 4])), /unrecognised bytes/);
  await assert.rejects(decodeImage(new Uint8Array()), (e: unknown) => {
    assert.ok(e instanceof ImageDecodeError && e.reason === "empty");
    return true;
  });
  const truncated = readImage("rgb.jpg").slice(0, 200);
  await assert.rejects(decodeImage(truncated), (e: unknown) => {
    assert.ok(e instanceof ImageDecodeError, String(e));
    assert.equal(e.reason, "corrupt");
    assert.match(e.message, /corrupt JPEG image/);
    return true;
  });
  const badPng = readImage("rgb.png").slice(0, 60);
  await assert.rejects(decodeImage(badPng), /corrupt PNG image/);
});

Deno.test("preprocess: CHW layout, rescale and normalisation", () => {
  const img: RgbImage = { width: 2, height: 1, data: new Uint8Array([0, 128, 255, 51, 102, 204]) };
  const cfg = defaultImageProcessorConfig(2);
  cfg.doResize = false;
  assert.throws(() => preprocessRgb(img, cfg), /do_resize is false/);
  const square: RgbImage = { width: 1, height: 1, data: new Uint8Array([0, 128, 255]) };
  const one = preprocessRgb(square, defaultImageProcessorConfig(1));
  const f = (v: number) => (v / 255 - 0.5) / 0.5;
  [f(0), f(128), f(255)].forEach((v, i) => assert.ok(Math.abs(one[i] - v) < 1e-6));
  // Channel-major: all R values, then G, then B.
  const cfg2 = parsePreprocessorConfig({
    size: { height: 2, width: 2 },
    image_mean: [0.1, 0.2, 0.3],
    image_std: [0.5, 0.25, 2],
    rescale_factor: 1 / 255,
    resample: 2,
  });
  const px: RgbImage = { width: 2, height: 2, data: new Uint8Array(12) };
  for (let i = 0; i < 4; i++) px.data.set([10 * i, 100 + i, 200 + i], i * 3);
  const out = preprocessRgb(px, cfg2);
  for (let i = 0; i < 4; i++) {
    const want = [
      (10 * i / 255 - 0.1) / 0.5,
      ((100 + i) / 255 - 0.2) / 0.25,
      ((200 + i) / 255 - 0.3) / 2,
    ];
    for (let c = 0; c < 3; c++) assert.ok(Math.abs(out[c * 4 + i] - want[c]) < 1e-6);
  }
});

Deno.test("preprocess: preprocessor_config.json parsing and errors", () => {
  const siglip = parsePreprocessorConfig({
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [0.5, 0.5, 0.5],
    image_processor_type: "SiglipImageProcessor",
    image_std: [0.5, 0.5, 0.5],
    resample: 3,
    rescale_factor: 0.00392156862745098,
    size: { height: 384, width: 384 },
  });
  assert.equal(siglip.size, 384);
  assert.equal(siglip.resample, 3);
  assert.equal(parsePreprocessorConfig({}, 224).size, 224);
  assert.equal(parsePreprocessorConfig({}, 224).resample, 3);
  assert.throws(() => parsePreprocessorConfig({}), /no usable image size/);
  assert.throws(
    () => parsePreprocessorConfig({ size: { height: 10, width: 20 } }),
    /non-square size 20x10/,
  );
  assert.throws(() => parsePreprocessorConfig({ size: 8, resample: 1 }), /LANCZOS/);
  assert.throws(() => parsePreprocessorConfig({ size: 8, image_std: [1, 0, 1] }), /image_std/);
});

Deno.test("image pool: workers give the in-process result, errors keep their reason", async () => {
  const pool = new ImagePool({ workers: 2 });
  try {
    const cfg = defaultImageProcessorConfig(16);
    const names = ["rgb.jpg", "rgba.png", "still.gif", "gray.jpg", "palette.png"];
    const got = await Promise.all(names.map((n) => pool.process(readImage(n), cfg)));
    for (let i = 0; i < names.length; i++) {
      const want = await preprocessBytes(readImage(names[i]), cfg);
      assert.deepEqual(got[i], want, names[i]);
    }
    const drawn = randomImage(20, 12, 3);
    assert.deepEqual(await pool.process(drawn, cfg), preprocessRgb(drawn, cfg));
    await assert.rejects(pool.process(readImage("photo.webp"), cfg), (e: unknown) => {
      assert.ok(e instanceof ImageDecodeError);
      assert.equal(e.reason, "unsupported-format");
      return true;
    });
    await assert.rejects(pool.process(readImage("rgb.jpg").slice(0, 100), cfg), /corrupt/);
    // Still healthy after failures.
    const again = await pool.process(readImage("rgb.png"), cfg);
    assert.equal(again.length, 3 * 16 * 16);
    assert.equal(pool.inFlight, 0);
  } finally {
    pool.close();
  }
  await assert.rejects(
    pool.process(readImage("rgb.png"), defaultImageProcessorConfig(4)),
    /closed/,
  );
});
