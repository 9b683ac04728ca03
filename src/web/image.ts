/// <reference lib="dom" />
// Image decoding in a browser: the browser's own decoder (createImageBitmap) instead of
// imagescript, giving the same RgbImage (transparent pixels over white, the same pixel limit)
// that the shared preprocessing (Pillow-exact resize, normalisation) takes. For an opaque PNG
// the pixels equal decodeImage()'s exactly (tests/browser checks this in Chromium).

import { checkImageSize, rgbaOverWhite, type RgbImage } from "../data/image.ts";

/** Decode an encoded image (a File, a Blob, or bytes) with createImageBitmap. */
export async function decodeInBrowser(input: Blob | Uint8Array): Promise<RgbImage> {
  const blob = input instanceof Blob ? input : new Blob([input as BlobPart]);
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
  } catch (e) {
    throw new Error(`the browser cannot decode this image: ${(e as Error).message}`);
  }
  try {
    const { width, height } = bitmap;
    checkImageSize(width, height, "image");
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext("2d", { colorSpace: "srgb", willReadFrequently: true });
    if (!ctx) throw new Error("no 2D canvas context to read the image's pixels");
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, width, height, { colorSpace: "srgb" }).data;
    return rgbaOverWhite(rgba, width, height);
  } finally {
    bitmap.close();
  }
}
