// The scheduler: continuous batching of generation jobs on one model.
//
// Each loop iteration
//   1. drops cancelled jobs (their rows leave the batch at once);
//   2. prefills newcomers while the batch has free rows: the head of the queue and the waiting
//      jobs for the same adapter that fit `prefillTokens` padded positions are prefilled together,
//      at most `prefillChunk` padded positions (rows × positions) per iteration, so a long prompt
//      or a large group spans several iterations between which the running rows keep decoding;
//      a finished prefill picks each choice's first token and copies the prompt's slots into one
//      row per choice (n > 1 shares one prefill);
//   3. runs one decode step per adapter group over all of its live rows (BatchKV), picks the
//      next token of every row and removes the rows that finished.
// Rows join and leave between steps; requests never wait for each other to finish. With
// `maxBatch` 1 the same loop serves one sequence at a time (the baseline of the load test).

import { mulberry32 as rng } from "../data/rng.ts";
import { batchDecodeStep, BatchKV } from "../infer/slots.ts";
import { PrefillJob } from "../infer/prefill_job.ts";
import { applyCountPenalties, countToken, type TokenCounts } from "../infer/penalties.ts";
import { chooseToken, type SamplingOptions } from "../infer/sampling.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { noGrad, Tensor } from "../tensor/mod.ts";
import type { AdapterSet } from "./adapters.ts";
import type { ServeMetrics } from "./metrics.ts";

/** Why a choice ended. */
export type FinishReason = "stop" | "length" | "cancelled" | "error";

/** One completion of a job (OpenAI's `n` choices share a prompt). */
export interface ChoiceSpec {
  sampling: SamplingOptions;
  frequencyPenalty?: number;
  presencePenalty?: number;
  seed: number;
  /** New tokens at most (≥ 1). */
  maxTokens: number;
  /** Do not end at the stop ids (vLLM's ignore_eos). */
  ignoreStopIds?: boolean;
  /** Every generated token (stop ids included); return true to end the choice here. */
  onToken(token: number): boolean;
  onFinish(reason: FinishReason, error?: Error): void;
}

/** A prompt to continue. */
export interface EngineJob {
  promptIds: number[];
  /** Preprocessed images, f32 [C, S, S] each, in the order of their placeholders. */
  images?: Float32Array[];
  /** Adapter name (null: the base model). */
  adapter: string | null;
  choices: ChoiceSpec[];
  signal?: AbortSignal;
}

/** Engine settings. */
export interface EngineOptions {
  /** Rows of the decode batch (sequences generated together). */
  maxBatch: number;
  /** Sequences allowed to wait for a row; more are refused with {@link QueueFullError}. */
  maxQueue: number;
  /** KV slots per row: prompt + new tokens of one sequence at most. */
  capacity: number;
  /** Padded prompt positions (rows × positions) prefilled per loop iteration (default 512). */
  prefillChunk?: number;
  /** Padded positions (rows × longest prompt) of one prefill group (default 4096). */
  prefillTokens?: number;
  /** Id of the prefill's left padding. */
  padId: number;
  /** Ids that end a choice. */
  stopIds: number[];
  adapters?: AdapterSet;
  metrics?: ServeMetrics;
}

/** The waiting queue is full. */
export class QueueFullError extends Error {
  constructor(readonly waiting: number, readonly limit: number) {
    super(`the server is busy: ${waiting} sequences are waiting (limit ${limit}); retry later`);
  }
}

interface Seq {
  job: EngineJob;
  spec: ChoiceSpec;
  seen: number[];
  counts: TokenCounts;
  random: () => number;
  last: number;
  generated: number;
}

interface Group {
  kv: BatchKV;
  seqs: Seq[];
}

interface Prefilling {
  jobs: EngineJob[];
  pf: PrefillJob;
  pixels?: Tensor;
}

/** Continuous-batching generation over one model (and its adapters). */
export class Engine {
  readonly #waiting: EngineJob[] = [];
  #prefilling: Prefilling | null = null;
  readonly #groups = new Map<string, Group>();
  #loop: Promise<void> | null = null;
  readonly #stop: Set<number>;
  readonly #chunk: number;
  #closed = false;

  constructor(readonly model: SiqvlModel, readonly opts: EngineOptions) {
    if (!(opts.maxBatch >= 1)) throw new Error(`max_batch ${opts.maxBatch} must be ≥ 1`);
    this.#stop = new Set(opts.stopIds);
    this.#chunk = opts.prefillChunk ?? 512;
  }

  /** Sequences waiting for a row (a job counts its n choices). */
  get queueDepth(): number {
    return this.#waiting.reduce((s, j) => s + j.choices.length, 0);
  }

  /** Sequences in the decode batch or being prefilled. */
  get running(): number {
    let n = 0;
    for (const j of this.#prefilling?.jobs ?? []) n += j.choices.length;
    for (const g of this.#groups.values()) n += g.seqs.length;
    return n;
  }

  /** Queue a job; throws {@link QueueFullError} when the queue has no room for its choices. */
  submit(job: EngineJob): void {
    if (this.#closed) throw new Error("the engine is shut down");
    const n = job.choices.length;
    if (n === 0) throw new Error("a job needs at least one choice");
    if (n > this.opts.maxBatch) {
      throw new Error(`n = ${n} exceeds the batch size ${this.opts.maxBatch}`);
    }
    const waiting = this.queueDepth;
    if (waiting + n > this.opts.maxQueue) throw new QueueFullError(waiting, this.opts.maxQueue);
    this.#waiting.push(job);
    this.#loop ??= this.#run().finally(() => (this.#loop = null));
  }

  /** Resolves when no job is left. */
  async idle(): Promise<void> {
    while (this.#loop) await this.#loop;
  }

  /** Refuse new jobs, cancel every job (waiting or running), free the caches. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const j of this.#waiting.splice(0)) this.#finishJob(j, "cancelled");
    await this.idle();
    for (const g of this.#groups.values()) g.kv.dispose();
    this.#groups.clear();
  }

  async #run(): Promise<void> {
    while (this.#waiting.length || this.#prefilling || this.running) {
      this.#reap();
      try {
        await this.#admit();
      } catch (e) {
        const p = this.#prefilling;
        this.#prefilling = null;
        if (p) {
          this.#disposePrefill(p);
          for (const j of p.jobs) this.#finishJob(j, "error", e as Error);
        }
      }
      const stepped = await this.#decodeAll();
      // Let the HTTP side run when this iteration did no GPU readback.
      if (!stepped) await new Promise((r) => setTimeout(r, 0));
    }
  }

  /** Remove the sequences of aborted jobs. */
  #reap(): void {
    const aborted = (j: EngineJob) => this.#aborted(j);
    for (let i = this.#waiting.length - 1; i >= 0; i--) {
      const j = this.#waiting[i];
      if (aborted(j)) {
        this.#waiting.splice(i, 1);
        this.#finishJob(j, "cancelled");
      }
    }
    for (const g of this.#groups.values()) {
      for (let i = g.seqs.length - 1; i >= 0; i--) {
        const s = g.seqs[i];
        if (aborted(s.job)) {
          this.#removeRow(g, i);
          s.spec.onFinish("cancelled");
          this.opts.metrics && this.opts.metrics.cancelled++;
        }
      }
    }
  }

  /** Cancelled by its client, or the engine is closing. */
  #aborted(j: EngineJob): boolean {
    return this.#closed || j.signal?.aborted === true;
  }

  #finishJob(j: EngineJob, reason: FinishReason, err?: Error): void {
    if (reason === "cancelled" && this.opts.metrics) this.opts.metrics.cancelled++;
    for (const c of j.choices) c.onFinish(reason, err);
  }

  #disposePrefill(p: Prefilling): void {
    p.pf.dispose();
    p.pixels?.dispose();
  }

  #liveRows(): number {
    let n = 0;
    for (const g of this.#groups.values()) n += g.seqs.length;
    return n;
  }

  /** Start a prefill group from the head of the queue, or continue the current one. */
  async #admit(): Promise<void> {
    if (!this.#prefilling) {
      const jobs = this.#takeGroup();
      if (jobs.length === 0) return;
      const images = jobs.flatMap((j) => j.images ?? []);
      const pixels = images.length ? imagesTensor(this.model, images) : undefined;
      const pf = new PrefillJob(this.model, jobs.map((j) => j.promptIds), pixels, this.opts.padId);
      this.#prefilling = { jobs, pixels, pf };
    }
    const p = this.#prefilling;
    const rows = p.jobs.length;
    const n = Math.min(Math.max(1, Math.floor(this.#chunk / rows)), p.pf.remaining);
    this.opts.adapters?.activate(p.jobs[0].adapter);
    const logits = await p.pf.step(n);
    if (!logits) return;
    this.#prefilling = null;
    const m = this.opts.metrics;
    if (m) { for (const j of p.jobs) m.promptTokens += j.promptIds.length; }
    try {
      const vocab = this.model.config.text.vocabSize;
      p.jobs.forEach((job, i) => {
        if (this.#aborted(job)) this.#finishJob(job, "cancelled");
        else this.#join(job, p.pf, i, logits.subarray(i * vocab, (i + 1) * vocab));
      });
    } finally {
      this.#disposePrefill(p);
    }
  }

  /**
   * The jobs to prefill together now: the head of the queue and, in queue order, the waiting
   * jobs for the same adapter that fit the free rows and the group budget.
   */
  #takeGroup(): EngineJob[] {
    const free = this.opts.maxBatch - this.#liveRows();
    const budget = this.opts.prefillTokens ?? 4096;
    const head = this.#waiting[0];
    if (!head || head.choices.length > free) return [];
    const jobs: EngineJob[] = [];
    let rows = 0, longest = 0;
    for (const job of this.#waiting) {
      if (job.adapter !== head.adapter) continue;
      const len = Math.max(longest, job.promptIds.length);
      if (rows + job.choices.length > free) break;
      if (jobs.length > 0 && (jobs.length + 1) * len > budget) break;
      jobs.push(job);
      rows += job.choices.length;
      longest = len;
    }
    const taken = new Set(jobs);
    this.#waiting.splice(0, this.#waiting.length, ...this.#waiting.filter((j) => !taken.has(j)));
    return jobs;
  }

  /** Choose each choice's first token and give the unfinished ones rows. */
  #join(job: EngineJob, pf: PrefillJob, row: number, logits: Float32Array): void {
    const live: Seq[] = [];
    for (const spec of job.choices) {
      const s: Seq = {
        job,
        spec,
        seen: [...job.promptIds],
        counts: new Map(),
        random: rng(spec.seed),
        last: -1,
        generated: 0,
      };
      if (this.#advance(s, logits.slice())) live.push(s);
    }
    if (live.length === 0) return;
    const key = job.adapter ?? "";
    let g = this.#groups.get(key);
    if (!g) {
      const c = this.model.config.text;
      const kv = new BatchKV(
        this.model.gpu,
        c.numHiddenLayers,
        this.opts.maxBatch,
        this.opts.capacity,
        c.numKeyValueHeads,
        c.headDim,
      );
      g = { kv, seqs: [] };
      this.#groups.set(key, g);
    }
    g.kv.join(pf.cache, row, pf.padding(row), live.length);
    g.seqs.push(...live);
  }

  /** Pick the next token of `s` from its logits row; false when the sequence is finished. */
  #advance(s: Seq, row: Float32Array): boolean {
    const spec = s.spec;
    applyCountPenalties(row, s.counts, spec.frequencyPenalty ?? 0, spec.presencePenalty ?? 0);
    const tok = chooseToken(row, s.seen, spec.sampling, s.random);
    s.seen.push(tok);
    countToken(s.counts, tok);
    s.last = tok;
    s.generated++;
    if (this.opts.metrics) this.opts.metrics.generationTokens++;
    const stopText = spec.onToken(tok);
    if (stopText || (!spec.ignoreStopIds && this.#stop.has(tok))) {
      spec.onFinish("stop");
      return false;
    }
    if (s.generated >= spec.maxTokens) {
      spec.onFinish("length");
      return false;
    }
    return true;
  }

  /** One decode step per adapter group; returns whether any ran. */
  async #decodeAll(): Promise<boolean> {
    let any = false;
    const vocab = this.model.config.text.vocabSize;
    for (const [key, g] of this.#groups) {
      if (g.seqs.length === 0) continue;
      any = true;
      const t0 = performance.now();
      let logits: Float32Array;
      try {
        this.opts.adapters?.activate(key === "" ? null : key);
        logits = await batchDecodeStep(this.model, g.kv, g.seqs.map((s) => s.last));
      } catch (e) {
        for (let i = g.seqs.length - 1; i >= 0; i--) {
          const s = g.seqs[i];
          this.#removeRow(g, i);
          s.spec.onFinish("error", e as Error);
        }
        continue;
      }
      const m = this.opts.metrics;
      if (m) {
        m.batchSize.observe(g.seqs.length);
        m.stepSeconds.observe((performance.now() - t0) / 1000);
      }
      const finished: number[] = [];
      g.seqs.forEach((s, i) => {
        if (this.#aborted(s.job)) return; // reaped next iteration
        if (!this.#advance(s, logits.slice(i * vocab, (i + 1) * vocab))) finished.push(i);
      });
      for (let k = finished.length - 1; k >= 0; k--) this.#removeRow(g, finished[k]);
    }
    return any;
  }

  /** Free row `i` of a group (the last row moves into it). */
  #removeRow(g: Group, i: number): void {
    const moved = g.kv.leave(i);
    if (moved >= 0) g.seqs[i] = g.seqs[moved];
    g.seqs.pop();
  }
}

/** Preprocessed images → f32 [I, C, S, S]. */
function imagesTensor(model: SiqvlModel, images: Float32Array[]): Tensor {
  const s = model.config.vision.imageSize;
  const per = 3 * s * s;
  const data = new Float32Array(images.length * per);
  images.forEach((im, i) => {
    if (im.length !== per) throw new Error(`image ${i}: ${im.length} values, ${per} expected`);
    data.set(im, i * per);
  });
  return noGrad(() => Tensor.from(model.gpu, data, [images.length, 3, s, s], "f32"));
}
