"""Reference runs of the PyPI `moshi` package for the C++ parity tests (tests/moshi/lm_parity_test.cpp).

Test dependency only (never used by the product). Usage:
  moshi_ref.py forward  CONFIG.json WEIGHTS.safetensors CODES.safetensors OUT.safetensors
  moshi_ref.py generate CONFIG.json WEIGHTS.safetensors USER.safetensors OUT.safetensors \
               --seed S [--greedy] [--temp T --temp-text T --top-k K --top-k-text K]
  moshi_ref.py stream   CONFIG.json WEIGHTS.safetensors SEQ.safetensors OUT.safetensors

CONFIG.json holds LMModel keyword arguments as written by mtt::moshi::LMConfig::to_json()
(keys `lm_gen_config` and `ttt` are not LMModel arguments and are dropped). WEIGHTS holds the
module-form state dict (in_projs.{k}.weight ...) written by the C++ model.

forward:  LMModel.forward(codes) -> logits, mask, text_logits, text_mask.
stream:   forward_text step by step in streaming mode on an already-delayed sequence [B, K, S]
          -> text_logits [B, 1, S, card_text], h [B, S, dim] (ring KV cache, wrap when S > context).
Optional inputs of stream/generate: `reset_at` [R] (int64) and `reset_mask` [R, B] (int64 0/1):
before step reset_at[r], reset_streaming(reset_mask[r]) (per-row reset; on LMGen for generate).
Optional `exec_mask` [S or N, B] (int64 0/1): set_exec_mask(exec_mask[n]) before every step.
--out-of-sync: LMGen(support_out_of_sync=True). --dtype bfloat16: the model built and run in bf16
(weights cast), outputs returned in float32.
--lora RANK:SCALING: replace_all_linear_with_lora(model, RANK, SCALING) before loading (WEIGHTS then holds
the LoRALinear names frozen_W.weight / lora_A.weight / lora_B.weight); with --fuse-lora, forward also runs
after replace_lora_with_linear (moshi's --fuse-lora) and adds fused_logits / fused_text_logits.
generate: LMGen.step on user codes [B, n_q - dep_q, N] with torch.manual_seed(seed) right before
          the first step -> tokens [N, B, 1 + dep_q] (-2 where upstream returns None), and
          text_logits [N, B, text_card] of every step.
"""
import argparse
import json
import sys

import torch
from safetensors.torch import load_file, save_file

from moshi.models.lm import LMModel, LMGen


def build(config_path, weights_path, dtype=torch.float32, lora=None):
    with open(config_path) as f:
        kwargs = json.load(f)
    kwargs.pop("lm_gen_config", None)
    kwargs.pop("ttt", None)
    model = LMModel(**kwargs, dtype=dtype)
    if lora:
        from moshi.modules.lora import replace_all_linear_with_lora
        rank, scaling = lora.split(":")
        replace_all_linear_with_lora(model, int(rank), float(scaling))
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in load_file(weights_path).items()}
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["forward", "generate", "stream"])
    ap.add_argument("config")
    ap.add_argument("weights")
    ap.add_argument("inputs")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--temp", type=float, default=0.8)
    ap.add_argument("--temp-text", type=float, default=0.7)
    ap.add_argument("--top-k", type=int, default=250)
    ap.add_argument("--top-k-text", type=int, default=25)
    ap.add_argument("--out-of-sync", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--lora", default=None)
    ap.add_argument("--fuse-lora", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = build(a.config, a.weights, getattr(torch, a.dtype), a.lora)
    inputs = load_file(a.inputs)
    resets = {}
    if "reset_at" in inputs:
        for r, n in enumerate(inputs["reset_at"].tolist()):
            resets[n] = inputs["reset_mask"][r].bool()
    out = {}
    with torch.no_grad():
        if a.mode == "forward":
            o = model(inputs["codes"])
            out = {"logits": o.logits.float().contiguous(), "mask": o.mask.contiguous(),
                   "text_logits": o.text_logits.float().contiguous(), "text_mask": o.text_mask.contiguous()}
            if a.lora and a.fuse_lora:
                from moshi.modules.lora import replace_lora_with_linear
                replace_lora_with_linear(model)
                o = model(inputs["codes"])
                out["fused_logits"] = o.logits.float().contiguous()
                out["fused_text_logits"] = o.text_logits.float().contiguous()
        elif a.mode == "stream":
            seq = inputs["seq"]
            B, K, S = seq.shape
            tl, hs = [], []
            with model.streaming(B):
                for s in range(S):
                    if s in resets:
                        model.reset_streaming(resets[s])
                    if "exec_mask" in inputs:
                        model.set_exec_mask(inputs["exec_mask"][s].bool())
                    h, t = model.forward_text(seq[:, :, s:s + 1])
                    tl.append(t)
                    hs.append(h)
            out = {"text_logits": torch.cat(tl, 2).float().contiguous(), "h": torch.cat(hs, 1).float().contiguous()}
        else:
            user = inputs["user"]
            B, _, N = user.shape
            gen = LMGen(model, use_sampling=not a.greedy, temp=a.temp, temp_text=a.temp_text,
                        top_k=a.top_k, top_k_text=a.top_k_text, support_out_of_sync=a.out_of_sync)
            text_logits = []
            gen.on_text_logits_hook = lambda t: text_logits.append(t[:, 0, 0].float().clone())
            toks = []
            with gen.streaming(B):
                torch.manual_seed(a.seed)
                for n in range(N):
                    if n in resets:
                        gen.reset_streaming(resets[n])
                    if "exec_mask" in inputs:
                        gen.set_exec_mask(inputs["exec_mask"][n].bool())
                    r = gen.step(user[:, :, n:n + 1])
                    if r is None:
                        r = torch.full((B, 1 + model.dep_q, 1), -2, dtype=torch.long)
                    toks.append(r[:, :, 0])
            out = {"tokens": torch.stack(toks, 0).contiguous(), "text_logits": torch.stack(text_logits, 0).contiguous()}
    save_file(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
