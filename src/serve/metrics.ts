// Server metrics in the Prometheus text exposition format (GET /metrics): counters, gauges read
// at scrape time, and cumulative histograms.

/** Cumulative histogram over fixed upper bounds. */
export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly name: string, readonly help: string, readonly bounds: readonly number[]) {
    this.counts = bounds.map(() => 0);
  }

  observe(x: number): void {
    this.sum += x;
    this.count++;
    this.bounds.forEach((b, i) => {
      if (x <= b) this.counts[i]++;
    });
  }

  /** The q-quantile's bucket bound (an upper estimate), NaN when empty. */
  quantileBound(q: number): number {
    const want = q * this.count;
    for (let i = 0; i < this.bounds.length; i++) if (this.counts[i] >= want) return this.bounds[i];
    return Infinity;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.bounds.forEach((b, i) => lines.push(`${this.name}_bucket{le="${b}"} ${this.counts[i]}`));
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`);
    lines.push(`${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`);
    return lines.join("\n");
  }
}

const SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** Everything the server counts. */
export class ServeMetrics {
  /** Finished HTTP requests by route and status. */
  readonly requests = new Map<string, number>();
  promptTokens = 0;
  generationTokens = 0;
  /** Requests rejected because the queue was full. */
  rejected = 0;
  cancelled = 0;
  readonly batchSize = new Histogram(
    "siqvl_decode_batch_size",
    "Sequences sharing one decode step",
    [1, 2, 4, 8, 16, 32, 64, 128, 256],
  );
  readonly stepSeconds = new Histogram(
    "siqvl_decode_step_seconds",
    "Time of one batched decode step",
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
  );
  readonly ttft = new Histogram(
    "siqvl_time_to_first_token_seconds",
    "Time from request arrival to the first generated token",
    SECONDS,
  );
  readonly latency = new Histogram(
    "siqvl_request_latency_seconds",
    "Time from request arrival to the last token",
    SECONDS,
  );

  constructor(
    readonly gauges: () => { queueDepth: number; running: number } = () => ({
      queueDepth: 0,
      running: 0,
    }),
  ) {}

  countRequest(route: string, status: number): void {
    const key = `route="${route}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  /** The exposition text. */
  render(): string {
    const g = this.gauges();
    const out: string[] = [
      "# HELP siqvl_requests_total HTTP requests answered",
      "# TYPE siqvl_requests_total counter",
      ...[...this.requests].map(([k, v]) => `siqvl_requests_total{${k}} ${v}`),
    ];
    const scalar = (name: string, type: string, help: string, v: number) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${v}`);
    scalar("siqvl_prompt_tokens_total", "counter", "Prompt tokens prefilled", this.promptTokens);
    scalar(
      "siqvl_generation_tokens_total",
      "counter",
      "Tokens generated",
      this.generationTokens,
    );
    scalar(
      "siqvl_requests_rejected_total",
      "counter",
      "Requests refused (queue full)",
      this.rejected,
    );
    scalar("siqvl_requests_cancelled_total", "counter", "Requests cancelled", this.cancelled);
    scalar("siqvl_queue_depth", "gauge", "Sequences waiting for a batch slot", g.queueDepth);
    scalar("siqvl_running_sequences", "gauge", "Sequences in the decode batch", g.running);
    for (const h of [this.batchSize, this.stepSeconds, this.ttft, this.latency]) {
      out.push(h.render());
    }
    return out.join("\n") + "\n";
  }
}
