#!/usr/bin/env python3
"""Reference tensors of the moshi-finetune TTT fork's own numerics (test data generator, issue 12 item 3).

Test dependency only (never used by the product); run through scripts/make_fork_numerics.sh. It imports
the fork's modules from its folder (AlufRon/claude-web, moshi_ttt_try/moshi-finetune @ f5e977ac; moshi
from the venv, PyPI 0.2.13 as tests/ref/fork uses) and runs
its own functions on small random inputs; nothing of the fork's math is copied or edited. Shims: the
Triton TTT-Linear module is replaced by a stub before import (its @triton.autotune decorators need a GPU
driver at import time; TTTWrapper never builds the kernel path), TORCHDYNAMO_DISABLE=1 runs the fork's
@torch.compile methods eagerly.

Files written into OUT (tests/data/fork_numerics), read by tests/ttt/fork_numerics_test.cpp:
  multilayer_op.safetensors   float64. ttt_mlp_multi_layer (compute_multi_layer_mini_batch, 3 and 4
                              inner layers, per-element states, a general eta): XQW, final states and the
                              gradients of sum(XQW * R) w.r.t. every input.
  hybrid_<case>.safetensors   float32. The fork's HybridSeqModelingBlock TTT branch (_ttt_forward: zero
                              pads to a multiple of the mini-batch, TTTWrapper, forward gate) built by the
                              fork's create_ttt_config from its TTTArgs:
                                params      under HybridSeqModelingBlock names (ttt_layer.ttt.*, *_ssm_gating.*)
                                x, r        input [B, L, D] (L not a multiple of b) and a cotangent
                                y, ttt_out  training-mode full-sequence output and TTT output before the gate
                                grad.<name> gradients of sum(y * r) (x and every parameter)
                                y_stream    eval mode, model streaming: one token per call (x[:, t:t+1]),
                                            as LMGen feeds the layer; ttt_out_stream likewise
  cases: ml2 (2-layer TTTMLP: every call restarts from W0), ml3 (TTTMLPMultiLayer, expansion 4: the query
  pass through the updated weights; in eval batch element 0's end state is written back into the
  parameters after every call, so every element of the stream continues from it), ml4 (4 layers,
  ttt_mlp_hidden_dims [12, 20, 8]). B = 2 everywhere.

Usage: gen_fork_numerics.py --fork DIR [--out tests/data/fork_numerics]
DIR is the fork's moshi-finetune folder. Without it the script prints "skip: ..." and exits 0.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TORCHDYNAMO_DISABLE"] = "1"

import argparse
import copy
import json
import sys
import types
from pathlib import Path

FORK_COMMIT = "f5e977ac"


def install_shims():
    import torch

    class TritonLinear(torch.autograd.Function):
        sharded_mode = False

        @staticmethod
        def forward(ctx, *args):
            raise RuntimeError("gen_fork_numerics: the Triton TTT-Linear kernel needs a GPU")

    stub = types.ModuleType("moshi_ttt.models.ssm.linear_triton")
    stub.TritonLinear = TritonLinear
    sys.modules[stub.__name__] = stub


def multilayer_op(out):
    import torch
    from moshi_ttt.models.ssm.ops.ttt_mlp import ttt_mlp_multi_layer

    torch.manual_seed(7)
    t = {}
    B, H, NC, b, d = 2, 2, 3, 4, 8
    for tag, dims in (("n3", [d, 32, 32, d]), ("n4", [d, 12, 20, 8, d])):
        g = torch.float64
        XQ = torch.nn.functional.normalize(torch.randn(B, H, NC, b, d, dtype=g), dim=-1)
        XK = torch.nn.functional.normalize(torch.randn(B, H, NC, b, d, dtype=g), dim=-1)
        XV = torch.randn(B, H, NC, b, d, dtype=g)
        eta = torch.rand(B, H, NC, b, b, dtype=g) * 0.5  # general rows (the op takes any eta)
        lnw = 1.0 + 0.1 * torch.randn(H, d, dtype=g)
        lnb = 0.1 * torch.randn(H, d, dtype=g)
        Ws = [torch.randn(B, H, dims[k], dims[k + 1], dtype=g) / dims[k] ** 0.5 for k in range(len(dims) - 1)]
        Bs = [0.1 * torch.randn(B, H, 1, dims[k + 1], dtype=g) for k in range(len(dims) - 1)]
        leaves = [XQ, XK, XV, eta, lnw, lnb] + Ws + Bs
        for x in leaves:
            x.requires_grad_(True)
        XQW, Wf, Bf = ttt_mlp_multi_layer(XK, XQ, XV, eta, lnw, lnb, Ws, Bs, 0, return_updated_weights=True)
        XQW = XQW.permute(0, 3, 1, 2, 4).contiguous()  # [B, NC, b, H, d] -> [B, H, NC, b, d]
        R = torch.randn_like(XQW)
        (XQW * R).sum().backward()
        p = tag + "."
        names = ["XQ", "XK", "XV", "eta", "ln_weight", "ln_bias"]
        names += ["W%d" % k for k in range(len(Ws))] + ["b%d" % k for k in range(len(Bs))]
        for n, x in zip(names, leaves):
            t[p + n] = x.detach().contiguous()
            t[p + "grad." + n] = x.grad.contiguous()
        t[p + "R"] = R
        t[p + "XQW"] = XQW.detach()
        for k, (w, bb) in enumerate(zip(Wf, Bf)):
            t[p + "W%d_final" % k] = w.detach().contiguous()
            t[p + "b%d_final" % k] = bb.detach().contiguous()
    from safetensors.torch import save_file

    save_file(t, str(out / "multilayer_op.safetensors"), metadata={"fork_commit": FORK_COMMIT})


def hybrid_case(out, name, ttt_kw, B_stream):
    import torch
    from finetune.args import TTTArgs
    from finetune.ttt_integration import create_ttt_config
    from moshi.modules.transformer import StreamingTransformerLayer
    from moshi_ttt.hybrid_layer import HybridSeqModelingBlock

    torch.manual_seed(11)
    D, H, L = 32, 2, 13
    args = TTTArgs(enable=True, **ttt_kw)
    cfg = create_ttt_config(args, {"dim": D, "num_heads": H})
    base = StreamingTransformerLayer(d_model=D, num_heads=H, dim_feedforward=4 * D, causal=True,
                                     norm="rms_norm_f32", gating="silu")
    block = HybridSeqModelingBlock(base, cfg, persistent_states=args.persistent_states, layer_id=1)
    # Parameters away from the fork's tiny init so that every path of the math shows in the outputs.
    with torch.no_grad():
        for n, p in block.named_parameters():
            if n.startswith("original_layer."):
                continue
            if "gating_alpha" in n:
                p.copy_(torch.empty_like(p).uniform_(-1.0, 1.0))
            elif n.endswith("ttt.W1") or n.endswith("ttt.W2") or ".weights." in n:
                p.copy_(torch.randn_like(p) / p.shape[-2] ** 0.5)
            else:
                p.add_(0.05 * torch.randn_like(p))
    params = {n: p.detach().clone() for n, p in block.named_parameters() if not n.startswith("original_layer.")}
    t = {"params." + n: v.contiguous() for n, v in params.items()}
    x = torch.randn(2, L, D)
    r = torch.randn(2, L, D)
    # Training mode, full sequence (TTTMLP / TTTMLPMultiLayer write nothing back in training).
    block.train()
    xg = x.clone().requires_grad_(True)
    y = block._ttt_forward(xg)
    t["ttt_out"] = block._last_ttt_output.contiguous()
    (y * r).sum().backward()
    t["x"], t["r"], t["y"] = x, r, y.detach().contiguous()
    t["grad.x"] = xg.grad.contiguous()
    for n, p in block.named_parameters():
        if not n.startswith("original_layer.") and p.grad is not None:
            t["grad." + n] = p.grad.contiguous()
    # Eval mode, streaming one token per call (as LMGen drives the layer), from the same parameters.
    block.eval()
    ys, ts = [], []
    with torch.no_grad():
        xs = x[:B_stream]
        for i in range(L):
            ys.append(block._ttt_forward(xs[:, i:i + 1]))
            ts.append(block._last_ttt_output)
    t["y_stream"] = torch.cat(ys, 1).contiguous()
    t["ttt_out_stream"] = torch.cat(ts, 1).contiguous()
    after = {n: p.detach() for n, p in block.named_parameters() if not n.startswith("original_layer.")}
    written_back = any(not torch.equal(after[n], params[n]) for n in params)
    meta = {"fork_commit": FORK_COMMIT, "ttt_args": json.dumps(ttt_kw), "D": str(D), "H": str(H),
            "stream_batch": str(B_stream), "ttt_class": type(block.ttt_layer.ttt).__name__,
            "stream_wrote_params": str(written_back).lower()}
    from safetensors.torch import save_file

    save_file(t, str(out / ("hybrid_%s.safetensors" % name)), metadata=meta)
    print("%s: %s, streaming wrote the parameters back: %s" % (name, meta["ttt_class"], written_back))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fork", default=os.environ.get("MTT_FORK_DIR", ""))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "data" / "fork_numerics"))
    a = ap.parse_args()
    fork = Path(a.fork) if a.fork else None
    if fork is None or not (fork / "moshi_ttt" / "models" / "ssm" / "ops" / "ttt_mlp.py").is_file():
        print("skip: the fork's moshi-finetune folder is not available (--fork DIR or MTT_FORK_DIR)")
        return 0
    try:
        import torch  # noqa: F401
        import simple_parsing  # noqa: F401
    except ImportError as e:
        print("skip: %s (needs torch, simple_parsing; see the script's docstring)" % e)
        return 0
    sys.path.insert(0, str(fork))  # moshi itself from the venv (PyPI 0.2.13, as tests/ref/fork uses)
    install_shims()
    import torch

    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    multilayer_op(out)
    common = {"mini_batch_size": 4, "base_lr": 1.0, "initial_gating_alpha": 0.1}
    hybrid_case(out, "ml2", dict(common), B_stream=2)
    hybrid_case(out, "ml3", dict(common, ttt_mlp_layers=3), B_stream=2)
    hybrid_case(out, "ml4", dict(common, ttt_mlp_layers=4, ttt_mlp_hidden_dims=[12, 20, 8]), B_stream=2)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
