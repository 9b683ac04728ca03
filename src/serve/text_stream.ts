// Incremental detokenisation with stop strings, for streamed and whole answers.
//
// Every push re-decodes the tokens so far (special tokens skipped) and releases only text that is
// settled: an incomplete UTF-8 sequence at the end (decoded as U+FFFD) is held back, and so is a
// suffix that could still grow into a stop string. When a stop string appears, the text up to it
// is final and the stop string itself is never returned (as OpenAI does).

import type { TextTokenizer } from "../data/tokenizer.ts";

/** Text released by one push. */
export interface TextDelta {
  /** New text (may be empty). */
  delta: string;
  /** A stop string was reached; nothing more will be released. */
  stopped: boolean;
}

/** Turns a growing token list into released text. */
export class TextStream {
  readonly ids: number[] = [];
  /** Text released so far. */
  text = "";
  #stopped = false;
  readonly #maxStop: number;

  constructor(readonly tokenizer: TextTokenizer, readonly stops: readonly string[] = []) {
    this.#maxStop = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Add one token and release what is settled. */
  push(token: number): TextDelta {
    if (this.#stopped) return { delta: "", stopped: true };
    this.ids.push(token);
    const full = this.tokenizer.decode(this.ids, { skipSpecialTokens: true });
    return this.#release(full.replace(/\uFFFD+$/, ""), false);
  }

  /** The generation ended: release everything not yet released (no stop string seen). */
  finish(): string {
    if (this.#stopped) return "";
    const full = this.tokenizer.decode(this.ids, { skipSpecialTokens: true });
    return this.#release(full, true).delta;
  }

  #release(settled: string, final: boolean): TextDelta {
    if (!settled.startsWith(this.text)) return { delta: "", stopped: false };
    // A stop string may start inside text released earlier only if it was held back, so search
    // from where the longest stop string could begin.
    const from = Math.max(0, this.text.length - this.#maxStop + 1);
    let cut = -1;
    for (const s of this.stops) {
      const at = settled.indexOf(s, from);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      const delta = settled.slice(this.text.length, Math.max(cut, this.text.length));
      this.text += delta;
      this.#stopped = true;
      return { delta, stopped: true };
    }
    let safe = settled.length;
    if (!final) safe -= this.#heldBack(settled);
    const delta = safe > this.text.length ? settled.slice(this.text.length, safe) : "";
    this.text += delta;
    return { delta, stopped: false };
  }

  /** Length of the longest suffix of `s` that is a proper prefix of a stop string. */
  #heldBack(s: string): number {
    let best = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, s.length); k > best; k--) {
        if (s.endsWith(stop.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
