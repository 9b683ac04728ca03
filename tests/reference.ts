// Plain float64 references shared by the kernel tests (matmul_test, attention_test and
// gpu_variants_test check their ops, and the GPU variants of them, against these).

/** A product out = op(a)·op(b) (+ bias): a [Z?, M, K] (or [Z?, K, M] with transA), b [K, N]. */
export interface MatmulCase {
  Z: number; // leading (batch) size of a; b batched when batchedB
  M: number;
  K: number;
  N: number;
  transA?: boolean;
  transB?: boolean;
  batchedB?: boolean;
  bias?: boolean;
}

// Element accessors of the stored layouts.
const aAt = (c: MatmulCase, a: ArrayLike<number>, z: number, m: number, k: number) =>
  c.transA ? a[(z * c.K + k) * c.M + m] : a[(z * c.M + m) * c.K + k];
const bAt = (c: MatmulCase, b: ArrayLike<number>, z: number, k: number, n: number) => {
  const base = c.batchedB ? z * c.K * c.N : 0;
  return c.transB ? b[base + n * c.K + k] : b[base + k * c.N + n];
};

/** out, dA, dB, dbias in float64 for upstream gradient g [Z, M, N]. */
export function refMatmul(
  c: MatmulCase,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  g: ArrayLike<number>,
) {
  const { Z, M, K, N } = c;
  const out = new Float64Array(Z * M * N);
  const da = new Float64Array(Z * M * K);
  const db = new Float64Array((c.batchedB ? Z : 1) * K * N);
  const dbias = new Float64Array(N);
  for (let z = 0; z < Z; z++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = bias ? bias[n] : 0;
        for (let k = 0; k < K; k++) s += aAt(c, a, z, m, k) * bAt(c, b, z, k, n);
        out[(z * M + m) * N + n] = s;
        const gv = g[(z * M + m) * N + n];
        dbias[n] += gv;
        for (let k = 0; k < K; k++) {
          const ai = c.transA ? (z * K + k) * M + m : (z * M + m) * K + k;
          da[ai] += gv * bAt(c, b, z, k, n);
          const bBase = c.batchedB ? z * K * N : 0;
          const bi = c.transB ? bBase + n * K + k : bBase + k * N + n;
          db[bi] += gv * aAt(c, a, z, m, k);
        }
      }
    }
  }
  return { out, da, db, dbias };
}

/** An attention call: q [B, T, Hq, D], k / v [B, S, Hkv, D]. */
export interface AttentionCase {
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  D: number;
  causal: boolean;
  qOffset?: number;
  scale?: number;
  mask?: ArrayLike<number>;
}

export interface AttentionRef {
  out: Float64Array;
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
  /** Per query row (b, h, i): whether it sees at least one key. */
  seen: boolean[];
}

// Plain float64 attention: materialises each row's probabilities. dout = null skips backward.
export function refAttention(
  c: AttentionCase,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dout: ArrayLike<number> | null,
): AttentionRef {
  const { B, T, S, Hq, Hkv, D } = c;
  const G = Hq / Hkv, off = c.qOffset ?? 0, sc = c.scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * T * Hq * D);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  const seen: boolean[] = [];
  const qi = (b: number, i: number, h: number) => ((b * T + i) * Hq + h) * D;
  const ki = (b: number, j: number, g: number) => ((b * S + j) * Hkv + g) * D;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const g = Math.floor(h / G);
      for (let i = 0; i < T; i++) {
        const keys: number[] = [];
        for (let j = 0; j < S; j++) {
          if ((!c.causal || j <= off + i) && (!c.mask || c.mask[b * S + j] !== 0)) keys.push(j);
        }
        seen.push(keys.length > 0);
        if (!keys.length) continue;
        const qo = qi(b, i, h);
        const s = keys.map((j) => {
          let t = 0;
          for (let d = 0; d < D; d++) t += q[qo + d] * k[ki(b, j, g) + d];
          return t * sc;
        });
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const l = e.reduce((a, x) => a + x, 0);
        const p = e.map((x) => x / l);
        keys.forEach((j, t) => {
          for (let d = 0; d < D; d++) out[qo + d] += p[t] * v[ki(b, j, g) + d];
        });
        if (!dout) continue;
        const dp = keys.map((j) => {
          let t = 0;
          for (let d = 0; d < D; d++) t += dout[qo + d] * v[ki(b, j, g) + d];
          return t;
        });
        let rowDot = 0;
        keys.forEach((_, t) => rowDot += p[t] * dp[t]);
        keys.forEach((j, t) => {
          const ds = p[t] * (dp[t] - rowDot), ko = ki(b, j, g);
          for (let d = 0; d < D; d++) {
            dq[qo + d] += sc * ds * k[ko + d];
            dk[ko + d] += sc * ds * q[qo + d];
            dv[ko + d] += p[t] * dout[qo + d];
          }
        });
      }
    }
  }
  return { out, dq, dk, dv, seen };
}
