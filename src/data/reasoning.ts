// Reasoning formats: how a rationale and a final answer become one assistant text (stage-3
// training data), and how the final answer is found again in generated text (evaluation,
// generation, GRPO rewards). One module so writing and reading always agree.
//
//   think      <think>RATIONALE</think>\nANSWER                  (R1-style traces)
//   llava-cot  <REASONING>RATIONALE</REASONING>\n<CONCLUSION>ANSWER</CONCLUSION>
//              (LLaVA-CoT-100k; its <SUMMARY>/<CAPTION> stages pass through when present)
//   plain      RATIONALE\nANSWER                                  (answer on the last line)
//   none       ANSWER                                              (no reasoning)

/** How reasoning and answer are laid out in an assistant text. */
export type ReasoningFormat = "think" | "llava-cot" | "plain" | "none";

/** The formats, for flag validation. */
export const REASONING_FORMATS: readonly ReasoningFormat[] = [
  "think",
  "llava-cot",
  "plain",
  "none",
];

/** Parse a `--reasoning_format` value. */
export function parseReasoningFormat(v: string, flag = "--reasoning_format"): ReasoningFormat {
  if ((REASONING_FORMATS as readonly string[]).includes(v)) return v as ReasoningFormat;
  throw new Error(`${flag} ${v}: unknown (known: ${REASONING_FORMATS.join(", ")})`);
}

/** The assistant text for `rationale` + `answer` in `format`. */
export function formatReasoning(
  rationale: string,
  answer: string,
  format: ReasoningFormat,
): string {
  const r = rationale.trim(), a = answer.trim();
  if (format === "none" || !r) {
    return format === "llava-cot" ? `<CONCLUSION>${a}</CONCLUSION>` : a;
  }
  switch (format) {
    case "think":
      return `<think>${r}</think>\n${a}`;
    case "llava-cot":
      // A rationale that already carries LLaVA-CoT stages keeps them; otherwise it is the
      // REASONING stage.
      return (/<(SUMMARY|CAPTION|REASONING)>/.test(r) ? r : `<REASONING>${r}</REASONING>`) +
        `\n<CONCLUSION>${a}</CONCLUSION>`;
    case "plain":
      return `${r}\n${a}`;
  }
}

/** A generated text split into its reasoning and its final answer. */
export interface SplitAnswer {
  reasoning: string;
  answer: string;
  /** Whether the text follows the format (tags present, closed and in order). */
  wellFormed: boolean;
}

/** Split generated `text` by `format` (the inverse of {@link formatReasoning}). */
export function splitReasoning(text: string, format: ReasoningFormat): SplitAnswer {
  const t = text.trim();
  switch (format) {
    case "none":
      return { reasoning: "", answer: t, wellFormed: true };
    case "think": {
      const close = t.lastIndexOf("</think>");
      if (close < 0) {
        // An unfinished thought has no answer yet; text without any tag is all answer.
        const open = t.indexOf("<think>");
        return open < 0
          ? { reasoning: "", answer: t, wellFormed: false }
          : { reasoning: t.slice(open + 7).trim(), answer: "", wellFormed: false };
      }
      const open = t.indexOf("<think>");
      const reasoning = t.slice(open >= 0 && open < close ? open + 7 : 0, close).trim();
      const answer = t.slice(close + 8).trim();
      const wellFormed = open === 0 && t.indexOf("<think>", 1) < 0 &&
        t.indexOf("</think>") === close && answer.length > 0;
      return { reasoning, answer, wellFormed };
    }
    case "llava-cot": {
      const open = t.lastIndexOf("<CONCLUSION>");
      if (open < 0) return { reasoning: t, answer: "", wellFormed: false };
      const close = t.indexOf("</CONCLUSION>", open);
      const answer = t.slice(open + 12, close < 0 ? undefined : close).trim();
      const reasoning = t.slice(0, open).replace(/<\/?(SUMMARY|CAPTION|REASONING)>/g, "")
        .trim();
      const wellFormed = close >= 0 && answer.length > 0 &&
        /<REASONING>[\s\S]*<\/REASONING>\s*$/.test(t.slice(0, open));
      return { reasoning, answer, wellFormed };
    }
    case "plain": {
      const lines = t.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
      if (!lines.length) return { reasoning: "", answer: "", wellFormed: false };
      const last = lines[lines.length - 1].replace(/^(final answer|answer)\s*[:：]\s*/i, "");
      return {
        reasoning: lines.slice(0, -1).join("\n"),
        answer: last,
        wellFormed: lines.length > 1,
      };
    }
  }
}

/** The final answer in generated `text` (see {@link splitReasoning}). */
export function extractAnswer(text: string, format: ReasoningFormat): string {
  return splitReasoning(text, format).answer;
}
