// A small SVG line chart of training and evaluation loss against the optimizer step.
//
// Self-contained SVG 1.1 (no scripts, no external fonts): axes with "nice" ticks, one polyline
// per series (train in blue, eval in orange with point markers), a legend and a title. Non-finite
// points are left out (a gap, not a spike to infinity).

/** One curve: a name, a colour and (step, value) points. */
export interface Series {
  name: string;
  points: [number, number][];
  color?: string;
  markers?: boolean;
}

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** About `n` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, n);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

/** Render series as an SVG document (string). */
export function lossPlotSvg(
  series: Series[],
  opts: { title?: string; width?: number; height?: number; xLabel?: string; yLabel?: string } = {},
): string {
  const W = opts.width ?? 720, H = opts.height ?? 420;
  const m = { l: 64, r: 20, t: 40, b: 48 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => isFinite(x) && isFinite(y));
  let x0 = Math.min(...pts.map((p) => p[0]), 0), x1 = Math.max(...pts.map((p) => p[0]), 1);
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (!pts.length) [x0, x1, y0, y1] = [0, 1, 0, 1];
  if (x1 <= x0) x1 = x0 + 1;
  if (!(y1 > y0)) {
    const pad = Math.abs(y0) * 0.1 || 1;
    y0 -= pad;
    y1 += pad;
  } else {
    const pad = (y1 - y0) * 0.05;
    y0 = Math.max(y0 >= 0 ? 0 : -Infinity, y0 - pad);
    y1 += pad;
  }
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.t + (1 - (y - y0) / (y1 - y0)) * ph;
  const f = (v: number) => v.toFixed(1);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" ` +
      `viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  if (opts.title) {
    out.push(
      `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`,
    );
  }
  // Grid and ticks.
  for (const t of niceTicks(y0, y1, 6)) {
    const y = f(sy(t));
    out.push(`<line x1="${m.l}" y1="${y}" x2="${m.l + pw}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.l - 6}" y="${y}" text-anchor="end" dy="4">${fmt(t)}</text>`);
  }
  for (const t of niceTicks(x0, x1, 8)) {
    const x = f(sx(t));
    out.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + ph}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${x}" y="${m.t + ph + 16}" text-anchor="middle">${fmt(t)}</text>`);
  }
  out.push(
    `<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`,
  );
  out.push(
    `<text x="${m.l + pw / 2}" y="${H - 10}" text-anchor="middle">${
      esc(opts.xLabel ?? "step")
    }</text>`,
  );
  out.push(
    `<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${
      esc(opts.yLabel ?? "loss")
    }</text>`,
  );
  // Curves: a polyline per finite run of points.
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1) {
        out.push(
          `<polyline fill="none" stroke="${color}" stroke-width="1.6" points="${run.join(" ")}"/>`,
        );
      }
      run = [];
    };
    for (const [x, y] of s.points) {
      if (!isFinite(x) || !isFinite(y)) {
        flush();
        continue;
      }
      run.push(`${f(sx(x))},${f(sy(y))}`);
      if (s.markers || s.points.length === 1) {
        out.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3" fill="${color}"/>`);
      }
    }
    flush();
    const ly = m.t + 14 + i * 16;
    out.push(
      `<line x1="${m.l + pw - 110}" y1="${ly - 4}" x2="${m.l + pw - 90}" y2="${
        ly - 4
      }" stroke="${color}" stroke-width="2"/>`,
    );
    out.push(`<text x="${m.l + pw - 84}" y="${ly}">${esc(s.name)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** Write the train/eval loss plot to `path` (atomically: temp file + rename). */
export async function writeLossPlot(
  path: string,
  train: [number, number][],
  evalLoss: [number, number][],
  title = "SiQ-VL training loss",
): Promise<void> {
  const series: Series[] = [{ name: "train loss", points: train }];
  if (evalLoss.length) series.push({ name: "eval loss", points: evalLoss, markers: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, lossPlotSvg(series, { title }));
  await Deno.rename(tmp, path);
}
