"""PyPI moshi side of bench/mimi_bench.cpp: times MimiModel encode/decode (offline and frame by
frame in streaming mode) on random weights, same config/length/threads as the C++ run; prints one
JSON object. Reference only (never part of the product)."""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "mimi", "ref"))
import mimi_ref  # noqa: E402


def best_of(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=["tiny", "full"], required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, ncb = mimi_ref.tiny_config() if args.config == "tiny" else mimi_ref.full_config()
    model = mimi_ref.build(cfg, ncb)
    gen = torch.Generator().manual_seed(0)
    mimi_ref.randomize(model, gen)
    fs = model.frame_size
    x = mimi_ref.signal(gen, 1, args.frames * fs)
    out = {}
    with torch.no_grad():
        codes = model.encode(x)
        out["encode_s"] = best_of(lambda: model.encode(x), args.reps)
        out["decode_s"] = best_of(lambda: model.decode(codes), args.reps)

        def stream_enc():
            with model.streaming(1):
                for f in range(args.frames):
                    model.encode(x[:, :, f * fs:(f + 1) * fs])

        def stream_dec():
            with model.streaming(1):
                for f in range(args.frames):
                    model.decode(codes[:, :, f:f + 1])
        out["stream_encode_s"] = best_of(stream_enc, args.reps)
        out["stream_decode_s"] = best_of(stream_dec, args.reps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
