// Progress reporting: a one-line bar with ETA redrawn in place on a terminal, or plain periodic
// lines when stdout is not a TTY (CI logs, files), so logs stay readable.

/** Format seconds as h:mm:ss or m:ss. */
export function formatDuration(sec: number): string {
  if (!isFinite(sec) || sec < 0) return "?";
  const s = Math.round(sec);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n: number) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

/** Where progress goes: a write function and whether it is a terminal. */
export interface ProgressSink {
  write(text: string): void;
  isTTY: boolean;
}

function stdoutSink(): ProgressSink {
  const enc = new TextEncoder();
  let tty = false;
  try {
    tty = Deno.stdout.isTerminal();
  } catch { /* not available */ }
  return { write: (t) => void Deno.stdout.writeSync(enc.encode(t)), isTTY: tty };
}

/** Options of a progress reporter. */
export interface ProgressOptions {
  /** Label before the bar (e.g. "stage1"). */
  label?: string;
  /** Non-TTY: print a line at most this often (seconds), and at least every `everySteps`. */
  intervalSec?: number;
  /** Non-TTY: also print every this many steps (0 = time only). */
  everySteps?: number;
  sink?: ProgressSink;
  /** Clock in milliseconds (tests). */
  now?: () => number;
}

/** Progress over `total` steps starting at `start` (a resumed run starts past 0). */
export class Progress {
  readonly total: number;
  readonly #start: number;
  readonly #t0: number;
  readonly #opts: Required<Omit<ProgressOptions, "sink" | "now">>;
  readonly #sink: ProgressSink;
  readonly #now: () => number;
  #lastPrint = -Infinity;
  #lastStepPrinted = -1;
  #drawn = false;
  current: number;

  constructor(total: number, start = 0, opts: ProgressOptions = {}) {
    this.total = total;
    this.#start = start;
    this.current = start;
    this.#now = opts.now ?? (() => performance.now());
    this.#t0 = this.#now();
    this.#sink = opts.sink ?? stdoutSink();
    this.#opts = {
      label: opts.label ?? "train",
      intervalSec: opts.intervalSec ?? 30,
      everySteps: opts.everySteps ?? 0,
    };
  }

  /** Seconds left, from the mean time per step so far (NaN before the first step). */
  eta(): number {
    const done = this.current - this.#start;
    if (done <= 0) return NaN;
    const per = (this.#now() - this.#t0) / 1000 / done;
    return per * (this.total - this.current);
  }

  #line(info: string): string {
    const pct = this.total ? Math.floor((100 * this.current) / this.total) : 100;
    const elapsed = (this.#now() - this.#t0) / 1000;
    return `${this.#opts.label} ${this.current}/${this.total} (${pct}%) ` +
      `elapsed ${formatDuration(elapsed)} eta ${formatDuration(this.eta())}` +
      (info ? ` | ${info}` : "");
  }

  /** Set the position (optimizer step) and redraw or print when due. */
  update(step: number, info = ""): void {
    this.current = step;
    const now = this.#now();
    if (this.#sink.isTTY) {
      const width = 24;
      const fillN = this.total ? Math.round((width * this.current) / this.total) : width;
      const bar = "█".repeat(fillN) + "░".repeat(Math.max(0, width - fillN));
      this.#sink.write(`\r\x1b[2K${bar} ${this.#line(info)}`);
      this.#drawn = true;
      return;
    }
    const dueTime = (now - this.#lastPrint) / 1000 >= this.#opts.intervalSec;
    const dueStep = this.#opts.everySteps > 0 && step % this.#opts.everySteps === 0;
    const last = step >= this.total;
    if ((dueTime || dueStep || last) && step !== this.#lastStepPrinted) {
      this.#sink.write(this.#line(info) + "\n");
      this.#lastPrint = now;
      this.#lastStepPrinted = step;
    }
  }

  /** Print a message without breaking the bar (TTY: on its own line above the bar). */
  log(msg: string): void {
    if (this.#sink.isTTY && this.#drawn) {
      this.#sink.write(`\r\x1b[2K${msg}\n`);
      this.#drawn = false;
    } else this.#sink.write(msg + "\n");
  }

  /** Finish the bar (TTY: move to a new line). */
  done(): void {
    if (this.#sink.isTTY && this.#drawn) this.#sink.write("\n");
    this.#drawn = false;
  }
}
