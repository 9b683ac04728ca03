#!/usr/bin/env python3
"""OpenBLAS sgemm reference for bench/kernels.ts.

Usage: numpy_matmul.py M,K,N [M,K,N ...]  -> one JSON line per shape on stdout:
  {"M":..,"K":..,"N":..,"ms":..,"gflops":..,"cpu_ms":..,"threads":..}
Computes x [M, K] @ w[N, K].T in float32 (the Linear layout the WGSL benchmark uses), timed after a
warm-up over enough repetitions for ~1 s; cpu_ms is process CPU time per product (all threads).
The caller sets the thread count (OPENBLAS_NUM_THREADS) and clears OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE for this process.
"""
import json
import os
import sys
import time

import numpy as np


def bench(m: int, k: int, n: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    y = x @ w.T  # warm-up (thread pool, page faults)
    t0 = time.perf_counter()
    y = x @ w.T
    one = time.perf_counter() - t0
    reps = max(1, min(50, int(1.0 / max(one, 1e-4))))
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        y = x @ w.T
    dt = (time.perf_counter() - t0) / reps
    cpu = (time.process_time() - c0) / reps
    del y
    return {
        "M": m,
        "K": k,
        "N": n,
        "ms": dt * 1e3,
        "gflops": 2 * m * k * n / dt / 1e9,
        "cpu_ms": cpu * 1e3,
        "threads": os.environ.get("OPENBLAS_NUM_THREADS", "?"),
    }


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        m, k, n = (int(v) for v in arg.split(","))
        print(json.dumps(bench(m, k, n)), flush=True)
