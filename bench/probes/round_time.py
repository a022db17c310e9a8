"""Median seconds per fedshare round (ML-100K or ML-1M, mixed, seed 0, params.yaml defaults) of the fedshare in the current folder.

    PYTHONPATH=. python round_time.py ml-100k 20 [KEY=VALUE ...]     # dataset, timed rounds, overrides
MALLOPT=1 first asks glibc to keep freed memory (a probe, not adopted: docs/results.md table 4 note).
"""
import sys, time, os, ctypes
if os.environ.get("MALLOPT"):
    libc = ctypes.CDLL("libc.so.6"); print("mallopt", libc.mallopt(-3, 32*1024*1024), libc.mallopt(-1, 1<<30))
import torch
sys.path.insert(0, '.')
from bench.speed import benchmark_config
from fedshare.data import load_interactions
from fedshare.sharing import build_mask
from fedshare.training import build_model, run_round
ds = sys.argv[1]; n=int(sys.argv[2])
cfg = benchmark_config(ds, "fedshare", "cpu", os.environ["FEDSHARE_DATA_DIR"], sys.argv[3:])
inter = load_interactions(cfg.data, 0)
mask = build_mask(inter, cfg.sharing, 0)
model, gen = build_model(cfg, inter, mask, torch.device("cpu"))
run_round(model, gen)
ts=[]
for _ in range(n):
    t=time.perf_counter(); run_round(model, gen); ts.append(time.perf_counter()-t)
import statistics, resource
print(ds, "median s/round %.4f min %.4f" % (statistics.median(ts), min(ts)), "maxrss MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss//1024)
