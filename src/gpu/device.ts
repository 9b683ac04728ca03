// The WebGPU runtime: adapter + device with the adapter's limits, feature probes, shader sources,
// a pipeline cache, batched command encoding and one readback helper.
//
// Every kernel dispatch is recorded into one open compute pass of one command encoder; the batch
// is submitted only when a readback needs it, when it grows past MAX_BATCH dispatches, or on an
// explicit flush(). Per-dispatch sizes travel in a uniform block (binding 0, 256-byte slots of one
// uniform buffer written once per batch), never baked into WGSL, so a shader is compiled once per
// (file, entry, override constants) whatever the shapes.

import { BufferPool, type PoolStats } from "./pool.ts";
import { loadShaderSources, SHADER_FAMILY, SHADER_FILES } from "./shaders.ts";
import { requestSiqvlAdapter } from "./adapter.ts";
import { activeProfiler, bindingBytes, type Profiler } from "./profile.ts";

/** Dispatches recorded before a batch is submitted. */
export const MAX_BATCH = 1024;
/** Bytes reserved per dispatch in the uniform buffer (the largest common uniform alignment). */
export const UNIFORM_SLOT = 256;
/** Maximum workgroups per grid dimension (WebGPU core limit). */
export const MAX_WG_DIM = 65535;

/** A 32-bit float uniform argument (plain numbers are packed as u32, negative ones as i32). */
export class F32 {
  constructor(readonly value: number) {}
}
/** Wrap a number so it travels as an f32 uniform. */
export const f32 = (value: number): F32 => new F32(value);
/** One uniform argument. */
export type UniformArg = number | F32;

/** A binding: a whole buffer, a window of one, or a texture view (sampled or storage texture). */
export type BindingLike =
  | GPUBuffer
  | GPUTextureView
  | { buffer: GPUBuffer; offset?: number; size?: number };

/**
 * One kernel launch. `bindings[k]` goes to @binding(k + 1) (null leaves that slot out, for an
 * entry point that does not use it); uniforms go to @binding(0).
 */
export interface Dispatch {
  shader: string;
  entry: string;
  constants?: Record<string, number>;
  uniforms?: UniformArg[];
  bindings: (BindingLike | null)[];
  /** Workgroup count: a number (folded into 2-D above 65,535) or an explicit [x, y, z] grid. */
  workgroups: number | [number, number?, number?];
  label?: string;
}

/** Limits the device was created with. */
export interface GpuLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxStorageBuffersPerShaderStage: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  minStorageBufferOffsetAlignment: number;
  minUniformBufferOffsetAlignment: number;
}

/** What the adapter offers beyond core WebGPU (each verified, not just reported). */
export interface GpuFeatures {
  /** `shader-f16` reported AND a probe kernel returned the right f16 numbers. */
  shaderF16: boolean;
  timestampQuery: boolean;
}

/** Split a 1-D workgroup count into a grid that respects the 65,535 per-dimension limit. */
export function foldGrid(n: number): [number, number, number] {
  if (n <= MAX_WG_DIM) return [Math.max(1, n), 1, 1];
  const y = Math.ceil(n / MAX_WG_DIM);
  if (y > MAX_WG_DIM) throw new Error(`dispatch of ${n} workgroups exceeds a 2-D grid`);
  return [Math.ceil(n / y), y, 1];
}

/** The WebGPU runtime shared by every tensor. Obtain it with `Gpu.get()`. */
export class Gpu {
  static #instance: Promise<Gpu> | null = null;

  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly limits: GpuLimits;
  readonly features: GpuFeatures;
  readonly pool: BufferPool;
  readonly adapterDescription: string;
  readonly isFallbackAdapter: boolean;
  /** The wgpu backend the adapter came from ("Vulkan", "Metal", "D3D12"; see adapter.ts). */
  readonly backend: string = "unknown";

  #sources: Map<string, string>;
  #modules = new Map<string, GPUShaderModule>();
  #pipelines = new Map<string, GPUComputePipeline>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #uniformBuf: GPUBuffer;
  #uniformData = new ArrayBuffer(UNIFORM_SLOT * MAX_BATCH);
  #uniformU32 = new Uint32Array(this.#uniformData);
  #uniformI32 = new Int32Array(this.#uniformData);
  #uniformF32 = new Float32Array(this.#uniformData);
  #batchCount = 0;
  #afterSubmit: GPUBuffer[] = [];
  #error: GPUError | null = null;
  // Profiling (src/gpu/profile.ts): timestamp query set, its resolve buffer, and this batch's
  // timed kernels and the copies recorded between them.
  #querySet: GPUQuerySet | null = null;
  #resolveBuf: GPUBuffer | null = null;
  #timed: ReturnType<Profiler["add"]>[] = [];
  #untimed: ReturnType<Profiler["add"]>[] = [];
  #gaps = new Map<number, ReturnType<Profiler["add"]>[]>();
  /** Dispatches recorded since creation (for benchmarks and tests). */
  dispatches = 0;
  /** Batches submitted since creation. */
  submits = 0;

  private constructor(
    adapter: GPUAdapter,
    device: GPUDevice,
    sources: Map<string, string>,
  ) {
    this.adapter = adapter;
    this.device = device;
    this.#sources = sources;
    const l = device.limits;
    this.limits = {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      minStorageBufferOffsetAlignment: l.minStorageBufferOffsetAlignment,
      minUniformBufferOffsetAlignment: l.minUniformBufferOffsetAlignment,
    };
    this.features = { shaderF16: false, timestampQuery: device.features.has("timestamp-query") };
    this.pool = new BufferPool(device, l.maxBufferSize);
    const info = adapter.info;
    this.adapterDescription = info?.description || info?.device || info?.vendor || "unknown";
    this.isFallbackAdapter = Boolean(info?.isFallbackAdapter);
    this.#uniformBuf = device.createBuffer({
      size: UNIFORM_SLOT * MAX_BATCH,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: "uniforms",
    });
    device.addEventListener("uncapturederror", (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      if (!this.#error) this.#error = e;
    });
  }

  /** The shared runtime (created on first call). */
  static get(): Promise<Gpu> {
    if (!Gpu.#instance) {
      Gpu.#instance = Gpu.#create().catch((e) => {
        Gpu.#instance = null;
        throw e;
      });
    }
    return Gpu.#instance;
  }

  static async #create(): Promise<Gpu> {
    const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
    if (!nav?.gpu) {
      throw new Error(
        'WebGPU is not available: run Deno with --unstable-webgpu (or `"unstable": ["webgpu"]` ' +
          "in deno.json).",
      );
    }
    const { adapter, backend } = await requestSiqvlAdapter(nav.gpu);
    const a = adapter.limits;
    const requiredFeatures: GPUFeatureName[] = [];
    for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) {
      if (adapter.features.has(f)) requiredFeatures.push(f);
    }
    const device = await adapter.requestDevice({
      label: "siqvl",
      requiredFeatures,
      requiredLimits: {
        maxBufferSize: a.maxBufferSize,
        maxStorageBufferBindingSize: a.maxStorageBufferBindingSize,
        maxComputeWorkgroupStorageSize: a.maxComputeWorkgroupStorageSize,
        maxStorageBuffersPerShaderStage: a.maxStorageBuffersPerShaderStage,
        maxComputeInvocationsPerWorkgroup: a.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: a.maxComputeWorkgroupSizeX,
        maxComputeWorkgroupSizeY: a.maxComputeWorkgroupSizeY,
        maxComputeWorkgroupSizeZ: a.maxComputeWorkgroupSizeZ,
      },
    });
    const sources = await loadShaderSources(SHADER_FILES);
    const gpu = new Gpu(adapter, device, sources);
    (gpu as { backend: string }).backend = backend;
    if (device.features.has("shader-f16")) {
      (gpu.features as { shaderF16: boolean }).shaderF16 = await gpu.#probeF16();
    }
    return gpu;
  }

  /** One line describing the adapter, limits and features (for logs). */
  describe(): string {
    const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;
    const soft = this.isFallbackAdapter ? " (software)" : "";
    return `${this.adapterDescription} [${this.backend}]${soft}; ` +
      `maxBufferSize ${mib(this.limits.maxBufferSize)}, binding ` +
      `${mib(this.limits.maxStorageBufferBindingSize)}, workgroup storage ` +
      `${this.limits.maxComputeWorkgroupStorageSize} B, storage buffers/stage ` +
      `${this.limits.maxStorageBuffersPerShaderStage}; shader-f16 ` +
      `${this.features.shaderF16 ? "verified" : "off"}`;
  }

  // A tiny f16 kernel: trusted only if the numbers come back right.
  async #probeF16(): Promise<boolean> {
    try {
      const code = `enable f16;
@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(4) fn main(@builtin(global_invocation_id) g: vec3u) {
  let h = f16(g.x) * f16(1.5) + f16(0.25);
  o[g.x] = f32(h * h);
}`;
      this.device.pushErrorScope("validation");
      const module = this.device.createShaderModule({ code, label: "f16-probe" });
      const pipe = this.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      const err = await this.device.popErrorScope();
      if (err) return false;
      const out = this.device.createBuffer({
        size: 16,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
      });
      const enc = this.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipe);
      pass.setBindGroup(
        0,
        this.device.createBindGroup({
          layout: pipe.getBindGroupLayout(0),
          entries: [{ binding: 0, resource: { buffer: out } }],
        }),
      );
      pass.dispatchWorkgroups(1);
      pass.end();
      this.device.queue.submit([enc.finish()]);
      const got = new Float32Array(await this.#readRaw(out, 0, 16));
      out.destroy();
      return [0, 1, 2, 3].every((i) => got[i] === (i * 1.5 + 0.25) ** 2);
    } catch {
      return false;
    }
  }

  /** The compiled pipeline for (shader file, entry point, override constants), cached. */
  pipeline(shader: string, entry: string, constants?: Record<string, number>): GPUComputePipeline {
    const ckey = constants
      ? Object.keys(constants).sort().map((k) => `${k}=${constants[k]}`).join(",")
      : "";
    const key = `${shader}:${entry}:${ckey}`;
    let p = this.#pipelines.get(key);
    if (p) return p;
    let module = this.#modules.get(shader);
    if (!module) {
      const code = this.#sources.get(shader);
      if (code === undefined) {
        throw new Error(
          `unknown shader "${shader}" (known: ${[...this.#sources.keys()].join(", ")})`,
        );
      }
      module = this.device.createShaderModule({ code, label: shader });
      this.#modules.set(shader, module);
    }
    p = this.device.createComputePipeline({
      layout: "auto",
      label: key,
      compute: { module, entryPoint: entry, constants },
    });
    this.#pipelines.set(key, p);
    return p;
  }

  /** Number of distinct pipelines built so far. */
  get pipelineCount(): number {
    return this.#pipelines.size;
  }

  #beginPass(): GPUComputePassEncoder {
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder({ label: "batch" });
    if (!this.#pass) this.#pass = this.#encoder.beginComputePass();
    return this.#pass;
  }

  #endPass(): GPUCommandEncoder {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder({ label: "batch" });
    return this.#encoder;
  }

  /** Record one kernel launch into the current batch. */
  dispatch(d: Dispatch): void {
    if (this.#batchCount >= MAX_BATCH) this.flush();
    const pipe = this.pipeline(d.shader, d.entry, d.constants);
    const entries: GPUBindGroupEntry[] = [];
    if (d.uniforms && d.uniforms.length) {
      if (d.uniforms.length > UNIFORM_SLOT / 4) throw new Error("too many uniform values");
      const base = (this.#batchCount * UNIFORM_SLOT) / 4;
      for (let i = 0; i < d.uniforms.length; i++) {
        const v = d.uniforms[i];
        if (v instanceof F32) this.#uniformF32[base + i] = v.value;
        else if (v < 0) this.#uniformI32[base + i] = v;
        else this.#uniformU32[base + i] = v;
      }
      entries.push({
        binding: 0,
        resource: {
          buffer: this.#uniformBuf,
          offset: this.#batchCount * UNIFORM_SLOT,
          size: UNIFORM_SLOT,
        },
      });
    }
    for (let i = 0; i < d.bindings.length; i++) {
      const b = d.bindings[i];
      if (!b) continue;
      const resource: GPUBindingResource = b instanceof GPUTextureView
        ? b
        : b instanceof GPUBuffer
        ? { buffer: b }
        : { buffer: b.buffer, offset: b.offset ?? 0, size: b.size };
      entries.push({ binding: i + 1, resource });
    }
    const group = this.device.createBindGroup({
      layout: pipe.getBindGroupLayout(0),
      entries,
      label: d.label,
    });
    const grid = typeof d.workgroups === "number"
      ? foldGrid(d.workgroups)
      : [d.workgroups[0], d.workgroups[1] ?? 1, d.workgroups[2] ?? 1];
    for (const g of grid) {
      if (g > MAX_WG_DIM) throw new Error(`${d.shader}.${d.entry}: grid dimension ${g} > 65535`);
    }
    if (grid[0] * grid[1] * grid[2] === 0) return;
    const prof = activeProfiler();
    const pass = prof ? this.#profiledPass(prof, d) : this.#beginPass();
    pass.setPipeline(pipe);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    this.#batchCount++;
    this.dispatches++;
  }

  // Profiling: each dispatch in its own pass with timestamps at its beginning and end (or, without
  // timestamp queries, in the shared pass, its time estimated at flush).
  #profiledPass(prof: Profiler, d: Dispatch): GPUComputePassEncoder {
    let bytes = 0;
    for (const b of d.bindings) if (b) bytes += bindingBytes(b);
    const family = SHADER_FAMILY[d.shader] ?? d.shader;
    const rec = prof.add("kernel", family, `${d.shader}.${d.entry}`, bytes);
    if (!this.features.timestampQuery) {
      this.#untimed.push(rec);
      return this.#beginPass();
    }
    if (!this.#querySet) {
      this.#querySet = this.device.createQuerySet({ type: "timestamp", count: 2 * MAX_BATCH });
      this.#resolveBuf = this.device.createBuffer({
        size: 16 * MAX_BATCH,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
        label: "timestamps",
      });
    }
    const enc = this.#endPass();
    const i = this.#timed.length;
    this.#timed.push(rec);
    this.#pass = enc.beginComputePass({
      timestampWrites: {
        querySet: this.#querySet,
        beginningOfPassWriteIndex: 2 * i,
        endOfPassWriteIndex: 2 * i + 1,
      },
    });
    return this.#pass;
  }

  // Profiling: a copy recorded now is charged the gap before the next timed pass.
  #profileCopy(kind: "copy" | "upload", family: string, bytes: number): void {
    const prof = activeProfiler();
    if (!prof) return;
    const rec = prof.add(kind, family, `${family}.${kind}`, bytes);
    if (!this.features.timestampQuery) {
      this.#untimed.push(rec);
      return;
    }
    const i = this.#timed.length;
    let list = this.#gaps.get(i);
    if (!list) this.#gaps.set(i, list = []);
    list.push(rec);
  }

  // Profiling at submit: resolve this batch's timestamps (or time the batch) asynchronously.
  #profileSubmit(enc: GPUCommandEncoder): (() => void) | null {
    const prof = activeProfiler();
    const timed = this.#timed, gaps = this.#gaps, untimed = this.#untimed;
    this.#timed = [];
    this.#gaps = new Map();
    this.#untimed = [];
    if (!prof) return null;
    if (timed.length > 0) {
      const n = timed.length;
      const read = this.device.createBuffer({
        size: 16 * n,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
        label: "timestamps readback",
      });
      enc.resolveQuerySet(this.#querySet!, 0, 2 * n, this.#resolveBuf!, 0);
      enc.copyBufferToBuffer(this.#resolveBuf!, 0, read, 0, 16 * n);
      return () => {
        prof.pending.push(
          read.mapAsync(GPUMapMode.READ).then(() => {
            const ts = new BigUint64Array(read.getMappedRange());
            for (let i = 0; i < n; i++) timed[i].ns = Number(ts[2 * i + 1] - ts[2 * i]);
            for (const [i, recs] of gaps) {
              if (i === 0 || i >= n) continue; // before the first / after the last pass: untimed
              const gap = Math.max(0, Number(ts[2 * i] - ts[2 * i - 1]));
              const total = recs.reduce((s, r) => s + r.bytes, 0) || recs.length;
              for (const r of recs) r.ns = (gap * (r.bytes || 1)) / total;
            }
            read.unmap();
            read.destroy();
          }),
        );
      };
    }
    if (untimed.length === 0) return null;
    const t0 = performance.now();
    return () => {
      prof.pending.push(
        this.device.queue.onSubmittedWorkDone().then(() => {
          const ns = (performance.now() - t0) * 1e6;
          const total = untimed.reduce((s, r) => s + r.bytes, 0) || untimed.length;
          for (const r of untimed) r.ns = (ns * (r.bytes || 1)) / total;
        }),
      );
    };
  }

  /** Record a buffer-to-buffer copy into the current batch. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size === 0) return;
    this.#endPass().copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
    this.#profileCopy("copy", "buffer copy", size);
  }

  /** Record a buffer-to-texture copy into the current batch. */
  copyToTexture(
    src: GPUTexelCopyBufferInfo,
    dst: GPUTexelCopyTextureInfo,
    size: GPUExtent3D,
  ): void {
    this.#endPass().copyBufferToTexture(src, dst, size);
    if (activeProfiler()) {
      const [w, h, d] = Array.isArray(size)
        ? [size[0], size[1] ?? 1, size[2] ?? 1]
        : [(size as GPUExtent3DDict).width, (size as GPUExtent3DDict).height ?? 1, 1];
      this.#profileCopy("copy", "texture staging", w * h * d * 16);
    }
  }

  /** Write CPU data into a buffer, ordered after every command recorded so far. */
  upload(dst: GPUBuffer, dstOffset: number, data: ArrayBufferView): void {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const size = Math.ceil(bytes.byteLength / 4) * 4;
    if (size === 0) return;
    this.#profileCopy("upload", "upload", size);
    if (!this.#encoder) {
      // Nothing pending: the queue's own write is ordered correctly and cheapest.
      if (size === bytes.byteLength) {
        this.device.queue.writeBuffer(dst, dstOffset, bytes as Uint8Array<ArrayBuffer>);
      } else {
        const padded = new Uint8Array(size);
        padded.set(bytes);
        this.device.queue.writeBuffer(dst, dstOffset, padded);
      }
      return;
    }
    const staging = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
      label: "upload",
    });
    new Uint8Array(staging.getMappedRange()).set(bytes);
    staging.unmap();
    this.#endPass().copyBufferToBuffer(staging, 0, dst, dstOffset, size);
    this.#afterSubmit.push(staging);
  }

  /** Submit everything recorded so far. */
  flush(): void {
    if (!this.#encoder) return;
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
    if (this.#batchCount > 0) {
      this.device.queue.writeBuffer(
        this.#uniformBuf,
        0,
        this.#uniformData,
        0,
        this.#batchCount * UNIFORM_SLOT,
      );
    }
    const afterProfile = this.#profileSubmit(this.#encoder);
    this.device.queue.submit([this.#encoder.finish()]);
    afterProfile?.();
    this.submits++;
    this.#encoder = null;
    this.#batchCount = 0;
    for (const b of this.#afterSubmit) b.destroy();
    this.#afterSubmit = [];
    this.#throwPending();
  }

  #throwPending(): void {
    if (this.#error) {
      const e = this.#error;
      this.#error = null;
      throw new Error(`WebGPU error: ${e.message}`);
    }
  }

  async #readRaw(src: GPUBuffer, offset: number, size: number): Promise<ArrayBuffer> {
    const padded = Math.ceil(size / 4) * 4;
    const staging = this.device.createBuffer({
      size: padded,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "readback",
    });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(src, offset, staging, 0, padded);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0, size);
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Read `size` bytes at `offset` of a buffer after all recorded work (flushes). */
  async read(src: GPUBuffer, offset: number, size: number): Promise<ArrayBuffer> {
    activeProfiler()?.add("readback", "readback", "readback", size);
    this.flush();
    const out = await this.#readRaw(src, offset, size);
    this.#throwPending();
    return out;
  }

  /** Flush and wait until the GPU has finished everything submitted. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.#throwPending();
  }

  /** Pool byte accounting (live, peak, free). */
  memory(): PoolStats {
    return this.pool.stats();
  }
}
