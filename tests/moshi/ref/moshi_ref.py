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


def build(config_path, weights_path):
    with open(config_path) as f:
        kwargs = json.load(f)
    kwargs.pop("lm_gen_config", None)
    kwargs.pop("ttt", None)
    model = LMModel(**kwargs, dtype=torch.float32)
    sd = load_file(weights_path)
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
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = build(a.config, a.weights)
    inputs = load_file(a.inputs)
    out = {}
    with torch.no_grad():
        if a.mode == "forward":
            o = model(inputs["codes"])
            out = {"logits": o.logits.contiguous(), "mask": o.mask.contiguous(),
                   "text_logits": o.text_logits.contiguous(), "text_mask": o.text_mask.contiguous()}
        elif a.mode == "stream":
            seq = inputs["seq"]
            B, K, S = seq.shape
            tl, hs = [], []
            with model.streaming(B):
                for s in range(S):
                    h, t = model.forward_text(seq[:, :, s:s + 1])
                    tl.append(t)
                    hs.append(h)
            out = {"text_logits": torch.cat(tl, 2).contiguous(), "h": torch.cat(hs, 1).contiguous()}
        else:
            user = inputs["user"]
            B, _, N = user.shape
            gen = LMGen(model, use_sampling=not a.greedy, temp=a.temp, temp_text=a.temp_text,
                        top_k=a.top_k, top_k_text=a.top_k_text)
            text_logits = []
            gen.on_text_logits_hook = lambda t: text_logits.append(t[:, 0, 0].float().clone())
            toks = []
            with gen.streaming(B):
                torch.manual_seed(a.seed)
                for n in range(N):
                    r = gen.step(user[:, :, n:n + 1])
                    if r is None:
                        r = torch.full((B, 1 + model.dep_q, 1), -2, dtype=torch.long)
                    toks.append(r[:, :, 0])
            out = {"tokens": torch.stack(toks, 0).contiguous(), "text_logits": torch.stack(text_logits, 0).contiguous()}
    save_file(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
