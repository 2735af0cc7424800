"""Reference timing for bench/moshi_bench.cpp: the PyPI moshi package's LMGen.step on the same
LM configuration (random weights, f32 or bf16, CPU), same thread count, same number of steps.
Prints one JSON object on stdout. Benchmark reference only, never used by the product.

usage: moshi_ref.py CONFIG.json --steps N --warmup W --threads T --batch B [--greedy] [--dtype bfloat16]
"""
import argparse
import json
import statistics
import time

import torch

from moshi.models.lm import LMModel, LMGen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(a.config) as f:
        kwargs = json.load(f)
    gen_cfg = kwargs.pop("lm_gen_config", {})
    kwargs.pop("ttt", None)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = LMModel(**kwargs, dtype=getattr(torch, a.dtype)).eval()
    build_s = time.perf_counter() - t0
    gen = LMGen(model, use_sampling=not a.greedy, **gen_cfg)
    n_user = model.n_q - model.dep_q
    user = torch.randint(0, model.card, (a.batch, n_user, 1))
    times = []
    with torch.no_grad(), gen.streaming(a.batch):
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            gen.step(user)
            dt = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(dt)
    med = statistics.median(times)
    print(json.dumps({"impl": "pypi-moshi", "version": __import__("moshi").__version__,
                      "torch": torch.__version__, "dtype": a.dtype, "threads": a.threads, "batch": a.batch,
                      "steps": a.steps, "build_s": build_s, "step_ms_median": med * 1e3,
                      "step_ms_min": min(times) * 1e3,
                      "step_ms_mean": statistics.mean(times) * 1e3,
                      "frames_per_s": a.batch / med,
                      "tokens_per_s": a.batch * (1 + model.dep_q) / med}))


if __name__ == "__main__":
    main()
