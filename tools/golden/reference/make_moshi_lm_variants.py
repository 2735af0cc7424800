#!/usr/bin/env python3
"""Moshi LM goldens in the format of shared/golden/moshi (upstream moshi/tests/assets: a state dict,
`codes` and the forward's logits/masks), for other LMModel configurations, produced by running the
PyPI `moshi` package's LMModel itself (the reference; test data tooling, not part of the product).

  python make_moshi_lm_variants.py --out tests/fixtures/golden_variants

Writes two triples <stem>_model / _codes / _out.safetensors:
  lm_config_odd  an LMModel unlike upstream's test model in sizes and settings (heads, delays,
                 context, gated FFN, RMSNorm, RoPE, depformer without a schedule); its keyword
                 arguments are stored as JSON in the model file's `config` metadata.
  lm_shapes_odd  upstream tests/test_lm.py's settings (heads, delays, context, schedule, gating)
                 with other sizes and no metadata at all: everything the runner needs beyond those
                 settings must come from the state dict's shapes.
Needs the PyPI moshi package (scripts/test.sh's reference venv) and safetensors.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

from moshi.models.lm import LMModel

# upstream tests/test_lm.py _get_lm(): the settings that leave no trace in the shapes.
TEST_LM = dict(delays=[0, 1, 2, 4], num_heads=1, context=4, depformer_multi_linear=True,
               depformer_weights_per_step=True, depformer_weights_per_step_schedule=[0, 1, 1],
               depformer_num_heads=1, depformer_gating="silu")

CASES = {
    "lm_config_odd": (dict(delays=[0, 2, 1, 0, 3], n_q=4, dep_q=2, card=20, text_card=30, dim=24, num_heads=3,
                           num_layers=3, hidden_scale=2, context=5, norm="rms_norm_f32", gating="silu",
                           positional_embedding="rope", depformer_dim=12, depformer_num_heads=2,
                           depformer_num_layers=1, depformer_multi_linear=True, depformer_weights_per_step=True,
                           depformer_gating="silu", depformer_pos_emb="none"),
                      True, 2, 9, 3001),
    "lm_shapes_odd": (dict(TEST_LM, n_q=3, dep_q=3, card=24, text_card=20, dim=24, num_layers=3, hidden_scale=2,
                           depformer_dim=12, depformer_low_rank_embeddings=6),
                      False, 3, 8, 3002),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    for stem, (kwargs, with_config, B, T, seed) in CASES.items():
        torch.manual_seed(seed)
        model = LMModel(**kwargs, dtype=torch.float32)
        with torch.no_grad():
            # Norm gains and biases away from 1 / 0 so that a port that drops one fails.
            for n, p in model.named_parameters():
                if p.dim() == 1:
                    p.add_(0.2 * torch.randn_like(p))
        model.eval()
        K = kwargs["n_q"] + 1
        codes = torch.empty(B, K, T, dtype=torch.long)
        codes[:, 0] = torch.randint(0, kwargs["text_card"], (B, T))
        codes[:, 1:] = torch.randint(0, kwargs["card"], (B, K - 1, T))
        with torch.no_grad():
            o = model(codes)
        sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
        meta = {"config": json.dumps(kwargs)} if with_config else None
        save_file(sd, os.path.join(a.out, stem + "_model.safetensors"), metadata=meta)
        save_file({"codes": codes.contiguous()}, os.path.join(a.out, stem + "_codes.safetensors"))
        save_file({"logits": o.logits.float().contiguous(), "text_logits": o.text_logits.float().contiguous(),
                   "mask": o.mask.contiguous(), "text_mask": o.text_mask.contiguous()},
                  os.path.join(a.out, stem + "_out.safetensors"))
        print(stem, "logits", tuple(o.logits.shape), "valid", int(o.mask.sum()), "params", len(sd))


if __name__ == "__main__":
    main()
