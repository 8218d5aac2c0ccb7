#!/usr/bin/env python3
"""Peers of setr's fused scan, timed on the same shapes: torch (fp16 matmul + topk) and CuPy
(fp16 matmul + argpartition + sort). Intersection does both matmuls, the z-scores and the
min before the top-k, as setr's kernel does in one pass. Times: CUDA events, median of
--reps after warm-up, on random (non-zero) normalised data. Writes a TSV
(tool, strategy, batch, k, ms) that gpu_bench reads; --dry-run only checks the imports."""
import argparse
import statistics
import sys


def bench(fn, sync, event, reps):
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(reps):
        a, b = event(), event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def torch_peer(args, rows_out):
    import torch

    torch.manual_seed(0)
    dev = "cuda"
    g = torch.nn.functional.normalize(torch.randn(args.rows, args.dim, device=dev), dim=1).half()
    for strategy in ("union", "intersection"):
        for b in args.batches:
            qi = torch.nn.functional.normalize(torch.randn(b, args.dim, device=dev), dim=1).half()
            qt = torch.nn.functional.normalize(torch.randn(b, args.dim, device=dev), dim=1).half()
            for k in args.ks:
                if strategy == "union":
                    q = torch.nn.functional.normalize((qi + qt).float(), dim=1).half()
                    fn = lambda: torch.topk(q @ g.T, k, dim=1)
                else:
                    fn = lambda: torch.topk(
                        torch.minimum(((qi @ g.T).float() - 0.01) * 20.0, ((qt @ g.T).float() - 0.02) * 25.0),
                        k, dim=1)
                ms = bench(fn, torch.cuda.synchronize, lambda: torch.cuda.Event(enable_timing=True), args.reps)
                rows_out.append(("torch", strategy, b, k, ms))
                print(f"torch {strategy:<12} batch {b:>3} k {k:>4}: {ms:.3f} ms", flush=True)
    del g
    torch.cuda.empty_cache()


def cupy_peer(args, rows_out):
    import cupy as cp

    rs = cp.random.RandomState(0)

    def unit(n):
        x = rs.standard_normal((n, args.dim), dtype=cp.float32)
        return (x / cp.linalg.norm(x, axis=1, keepdims=True)).astype(cp.float16)

    g = unit(args.rows)

    def topk(s, k):
        idx = cp.argpartition(-s, k - 1, axis=1)[:, :k]
        part = cp.take_along_axis(s, idx, axis=1)
        order = cp.argsort(-part, axis=1)
        return cp.take_along_axis(idx, order, axis=1)

    class Ev:
        def __init__(self):
            self.e = cp.cuda.Event()

        def record(self):
            self.e.record()

        def synchronize(self):
            self.e.synchronize()

        def elapsed_time(self, other):
            return cp.cuda.get_elapsed_time(self.e, other.e)

    for strategy in ("union", "intersection"):
        for b in args.batches:
            qi, qt = unit(b), unit(b)
            for k in args.ks:
                if strategy == "union":
                    fn = lambda: topk(qi @ g.T, k)
                else:
                    fn = lambda: topk(cp.minimum(((qi @ g.T).astype(cp.float32) - 0.01) * 20.0,
                                                 ((qt @ g.T).astype(cp.float32) - 0.02) * 25.0), k)
                ms = bench(fn, cp.cuda.Device().synchronize, Ev, args.reps)
                rows_out.append(("cupy", strategy, b, k, ms))
                print(f"cupy  {strategy:<12} batch {b:>3} k {k:>4}: {ms:.3f} ms", flush=True)
    del g
    cp.get_default_memory_pool().free_all_blocks()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--batches", default="1,4,16,64,256")
    p.add_argument("--ks", default="10,100,1000,4096")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default="peers.tsv")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    args.batches = [int(x) for x in args.batches.split(",")]
    args.ks = [int(x) for x in args.ks.split(",")]
    rows_out = []
    for name, peer in (("torch", torch_peer), ("cupy", cupy_peer)):
        try:
            __import__(name)
        except ImportError as e:
            print(f"{name}: not importable ({e}); skipped", flush=True)
            continue
        if args.dry_run:
            print(f"{name}: importable; dry run, not timed", flush=True)
            continue
        try:
            peer(args, rows_out)
        except Exception as e:  # a failing peer must not stop the other or the bench
            print(f"{name}: failed: {e!r}", file=sys.stderr, flush=True)
    with open(args.out, "w") as f:
        f.write("# tool\tstrategy\tbatch\tk\tms\n")
        for r in rows_out:
            f.write("\t".join(str(x) for x in r) + "\n")


if __name__ == "__main__":
    main()
