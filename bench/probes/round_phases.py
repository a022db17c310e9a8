import sys, time, collections
import torch
sys.path.insert(0, '.')
torch.set_num_threads(1)
from bench.scaling import size_config
import bench.scaling as sc
from fedshare.synthetic import generate
from fedshare.data import prepare
from fedshare.sharing import build_mask
import fedshare.federated as fed, fedshare.training as tr
T = collections.defaultdict(float)
def wrap(mod, name):
    f = getattr(mod, name)
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); T[name] += time.perf_counter() - t; return r
    setattr(mod, name, g)
for m, n in [(fed, "local_training"), (fed, "chunked_mean_bpr"), (fed, "sample_negatives"), (fed, "make_batch"), (fed, "client_updates"), (fed, "weighted_square_norm"), (fed, "lightgcn"), (tr, "client_round")]:
    wrap(m, n)
orig_step = fed.Server.step
def step(self, *a, **k):
    t = time.perf_counter(); r = orig_step(self, *a, **k); T["server.step"] += time.perf_counter() - t; return r
fed.Server.step = step
args = sc.parse_args() if False else None
import argparse
ns = argparse.Namespace(device="cpu", overrides=[], seed=0, items=None, mean=20.0, rounds=3, threads=1)
config = size_config(ns, "fedshare")
raw = generate(int(sys.argv[1]), mean_per_user=20, seed=0)
inter = prepare(raw, config.data, 0); del raw
mask = build_mask(inter, config.sharing, 0)
model, gen = tr.build_model(config, inter, mask, torch.device("cpu"))
tr.run_round(model, gen); T.clear()
n = 2; t = time.perf_counter()
for _ in range(n): tr.run_round(model, gen)
print("round %.3f" % ((time.perf_counter() - t) / n))
for k, v in sorted(T.items(), key=lambda kv: -kv[1]): print("  %-22s %.3f" % (k, v / n))
