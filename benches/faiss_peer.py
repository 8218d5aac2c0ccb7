#!/usr/bin/env python3
"""faiss-cpu peer for `setr bench search`: the same gallery, the same query vectors, the
same thread count, timed in the same run. Prints one JSON line per (batch, k, vectors).

The gallery is the f16 gallery of setr widened to f32 (faiss IndexFlatIP has no f16 flat
index), read from a raw little-endian f32 file; queries likewise. Dev/bench only:
`pip install faiss-cpu numpy`.
"""
import argparse
import json
import time

import faiss
import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gallery", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", required=True, help="batch:k:vectors,...")
    p.add_argument("--min-time", type=float, default=1.0)
    a = p.parse_args()
    faiss.omp_set_num_threads(a.threads)
    xb = np.fromfile(a.gallery, dtype="<f4").reshape(-1, a.dim)
    xq = np.fromfile(a.queries, dtype="<f4").reshape(-1, a.dim)
    index = faiss.IndexFlatIP(a.dim)
    index.add(xb)
    for run in a.runs.split(","):
        batch, k, vectors = (int(x) for x in run.split(":"))
        q = np.ascontiguousarray(xq[: batch * vectors])
        index.search(q, k)  # warm-up
        reps, start = 0, time.perf_counter()
        while True:
            index.search(q, k)
            reps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= a.min_time and reps >= 2:
                break
        print(json.dumps({"batch": batch, "k": k, "vectors": vectors,
                          "seconds": elapsed / reps, "version": faiss.__version__}), flush=True)


if __name__ == "__main__":
    main()
