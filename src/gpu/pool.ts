// Buffer pool: GPU storage buffers grouped by size class, with live/peak byte accounting.
//
// A size class rounds a request up to a quarter-step between powers of two (≤ 25% waste) and
// never below 256 bytes. Released buffers go back to a free list of their class and are handed
// out again; WebGPU executes commands in submission order, so reusing a buffer for a later
// dispatch in the same command stream is safe (CPU uploads go through the stream too, see
// Gpu.upload).

/** Usage every pooled buffer gets: bound as storage, copied from and to. */
export const POOL_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** Round a byte size up to its pool size class. */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const p = 2 ** Math.floor(Math.log2(bytes));
  const step = Math.max(256, p / 4);
  return Math.ceil(bytes / step) * step;
}

/** Byte accounting of a pool. */
export interface PoolStats {
  /** Bytes handed out and not yet released. */
  live: number;
  /** Highest `live` since creation or the last `resetPeak()`. */
  peak: number;
  /** Bytes held in free lists, ready for reuse. */
  free: number;
  /** Buffers created so far. */
  created: number;
}

/** A pool of storage buffers keyed by size class. */
export class BufferPool {
  #device: GPUDevice;
  #maxBufferSize: number;
  #free = new Map<number, GPUBuffer[]>();
  #live = 0;
  #peak = 0;
  #freeBytes = 0;
  #created = 0;

  constructor(device: GPUDevice, maxBufferSize: number) {
    this.#device = device;
    this.#maxBufferSize = maxBufferSize;
  }

  /** A buffer of at least `bytes` bytes (contents undefined). */
  acquire(bytes: number, label = "pool"): GPUBuffer {
    if (!(bytes > 0)) bytes = 4;
    let size = sizeClass(bytes);
    if (size > this.#maxBufferSize) {
      if (bytes > this.#maxBufferSize) {
        throw new Error(
          `buffer of ${bytes} bytes (${label}) exceeds the adapter's maxBufferSize ` +
            `${this.#maxBufferSize}`,
        );
      }
      size = Math.ceil(bytes / 4) * 4;
    }
    const list = this.#free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.#freeBytes -= size;
    } else {
      buf = this.#device.createBuffer({ size, usage: POOL_USAGE, label });
      this.#created++;
    }
    this.#live += size;
    if (this.#live > this.#peak) this.#peak = this.#live;
    return buf;
  }

  /** Give a buffer back for reuse. */
  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.#live -= size;
    let list = this.#free.get(size);
    if (!list) this.#free.set(size, list = []);
    list.push(buf);
    this.#freeBytes += size;
  }

  /** Destroy every free buffer (returns the bytes given back to the driver). */
  trim(): number {
    let n = 0;
    for (const list of this.#free.values()) {
      for (const b of list) {
        n += b.size;
        b.destroy();
      }
    }
    this.#free.clear();
    this.#freeBytes = 0;
    return n;
  }

  /** Current accounting. */
  stats(): PoolStats {
    return { live: this.#live, peak: this.#peak, free: this.#freeBytes, created: this.#created };
  }

  /** Start a new peak measurement from the current live bytes. */
  resetPeak(): void {
    this.#peak = this.#live;
  }
}
