"""Reference data for `ttt-infer --score` (tests/infer/score_test.cpp), from the PyPI `moshi` package.

Test dependency only (never used by the product). Run with the reference venv (scripts/test.sh
creates it: PyPI moshi 0.2.13, torch 2.7.1):

  ~/.cache/moshi-ttt/moshi-ref-venv/bin/python tests/ref/score/gen_score_ref.py tests/data/score_ref

It builds a tiny random `moshi.models.lm.LMModel` with moshiko's code paths (RMSNorm f32, RoPE,
SiLU-gated FFN, depformer with per-step weights and multi-linear inputs, delays on text / Moshi /
user streams, a ring KV cache of 5 frames that wraps), and writes into OUT_DIR:

  config.json        the LMModel keyword arguments (moshi's config.json keys, as loaders.py's
                     `_lm_kwargs`), read by `ttt-infer --config`
  model.safetensors  LMModel.state_dict(), float32
  codes.safetensors  `codes` int64 [B = 2, 1 + n_q, T = 23]: random tokens, some text padding ids
                     (3 and 0, weighted by text_padding_weight), some -1 (zero token: no target)
  ref.safetensors    LMModel.forward(codes): `logits` [B, dep_q, T, card], `mask` (bool),
                     `text_logits` [B, 1, T, text_card], `text_mask` (bool);
                     the streamed forward (`stream.logits`, `stream.text_logits`): forward_text one
                     frame at a time inside model.streaming(B) on the delayed sequence (initial
                     tokens in front, as forward() builds it), and the depformer one codebook at a
                     time through forward_depformer in its streaming state, as LMGen.depformer_step
                     runs it, teacher-forced with the next frame's tokens; undelayed as forward();
                     per-position cross-entropies `text_loss` [B, T], `audio_loss` [B, T],
                     `audio_loss_per_codebook` [B, dep_q, T] (NaN where masked) and their weights
                     `text_weight`, `audio_weight` [B, T]; `loss.text`, `loss.audio` (scalars):
                     moshi-finetune's compute_loss_with_mask (finetune/loss.py, reproduced below)
                     with text_padding_weight 0.5, first_codebook_weight_multiplier 2.0.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import moshi
from moshi.models.lm import LMModel
from moshi.models.lm_utils import _delay_sequence, _undelay_sequence

SEED = 1234
B, T = 2, 23
TEXT_PADDING_WEIGHT = 0.5
FIRST_CODEBOOK_WEIGHT = 2.0

CONFIG = {
    "dim": 32,
    "text_card": 40,
    "existing_text_padding_id": 3,
    "existing_text_end_padding_id": 0,
    "n_q": 4,
    "dep_q": 2,
    "card": 24,
    "num_heads": 2,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 5,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 16,
    "depformer_dim_feedforward": int(4.125 * 16),
    "depformer_num_heads": 2,
    "depformer_num_layers": 2,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 8,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 0, 2],
}


def compute_loss_with_mask(logits, target, target_mask, mode, first_codebook_weight_multiplier=1.0,
                           text_padding_weight=1.0, text_padding_ids=None):
    # moshi-finetune finetune/loss.py (kyutai-labs/moshi-finetune; the TTT fork keeps it unchanged).
    target = torch.where(target_mask, target, torch.zeros_like(target))
    weights = target_mask.float()
    if mode == "audio":
        weights[:, 0] *= first_codebook_weight_multiplier
    elif mode == "text":
        assert text_padding_ids is not None
        for id in text_padding_ids:
            weights[target == id] *= text_padding_weight
    logits = logits.reshape(-1, logits.size(-1)).float()
    target = target.reshape(-1)
    weights = weights.reshape(-1)
    mask = target_mask.reshape(-1)
    mb_loss = F.cross_entropy(logits, target, reduction="none")
    mb_loss = torch.where(mask, mb_loss, torch.zeros_like(mb_loss))
    return torch.sum(mb_loss * weights) / torch.sum(weights)


def per_position(logits, target, target_mask, weights):
    # [B, K, T, V] -> CE [B, K, T] (NaN where masked); weighted mean over K per position.
    tgt = torch.where(target_mask, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.float().nan_to_num(0.0).permute(0, 3, 1, 2), tgt, reduction="none")
    ce = torch.where(target_mask, ce, torch.full_like(ce, float("nan")))
    w = weights.sum(1)
    num = torch.where(target_mask, ce * weights, torch.zeros_like(ce)).sum(1)
    pos = torch.where(w > 0, num / w.clamp_min(1e-30), torch.full_like(w, float("nan")))
    return ce, pos, w


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    kwargs = {k: v for k, v in CONFIG.items() if k != "depformer_context"}
    model = LMModel(**kwargs, device="cpu", dtype=torch.float32)
    # Norm gains away from 1 so that a port that skips one fails.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.add_(0.1 * torch.randn_like(p))
    model.eval()

    K = model.num_codebooks
    g = torch.Generator().manual_seed(SEED + 1)
    codes = torch.empty(B, K, T, dtype=torch.long)
    codes[:, 0] = torch.randint(0, model.text_card, (B, T), generator=g)
    codes[:, 1:] = torch.randint(0, model.card, (B, K - 1, T), generator=g)
    codes[0, 0, 3:9] = 3   # text padding
    codes[1, 0, 10] = 0    # end-of-text padding
    codes[0, 1, 20] = -1   # zero token in Moshi's first codebook: no target, zero embedding
    codes[1, :, 15] = -1   # a whole frame of zero tokens
    codes[1, 3, 2] = -1    # a user codebook

    with torch.no_grad():
        o = model(codes)
        # Streaming: the same delayed sequence, one frame per call.
        initial = model._get_initial_token().expand(B, -1, -1)
        delayed = torch.cat([initial, _delay_sequence(model.delays, codes, initial)], dim=2)
        text_steps, audio_steps = [], []
        with model.streaming(B):
            for t in range(T):
                h, tl = model.forward_text(delayed[:, :, t:t + 1])
                text_steps.append(tl)
                per_cb = []
                with model.depformer.streaming(B):
                    for k in range(model.dep_q):
                        tok = delayed[:, k:k + 1, t + 1:t + 2]  # text for k = 0, else codebook k - 1
                        per_cb.append(model.forward_depformer(k, tok, h))
                audio_steps.append(torch.cat(per_cb, 1))
        s_logits = torch.cat(audio_steps, 2)
        s_text = torch.cat(text_steps, 2)
        s_logits, _ = _undelay_sequence(model.delays[1:1 + model.dep_q], s_logits, fill_value=float("nan"))
        s_text, _ = _undelay_sequence(model.delays[:1], s_text, fill_value=float("nan"))

    text_ids = {model.existing_text_padding_id, model.end_of_text_padding_id}
    text_tgt = codes[:, :1]
    audio_tgt = codes[:, 1:1 + model.dep_q]
    loss_text = compute_loss_with_mask(o.text_logits, text_tgt, o.text_mask, "text",
                                       text_padding_weight=TEXT_PADDING_WEIGHT, text_padding_ids=text_ids)
    loss_audio = compute_loss_with_mask(o.logits, audio_tgt, o.mask, "audio",
                                        first_codebook_weight_multiplier=FIRST_CODEBOOK_WEIGHT)
    tw = o.text_mask.float()
    masked_tgt = torch.where(o.text_mask, text_tgt, torch.zeros_like(text_tgt))
    for i in text_ids:
        tw[masked_tgt == i] *= TEXT_PADDING_WEIGHT
    aw = o.mask.float()
    aw[:, 0] *= FIRST_CODEBOOK_WEIGHT
    _, text_pos, text_w = per_position(o.text_logits, text_tgt, o.text_mask, tw)
    audio_ce, audio_pos, audio_w = per_position(o.logits, audio_tgt, o.mask, aw)

    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, "model.safetensors"))
    save_file({"codes": codes}, os.path.join(out_dir, "codes.safetensors"))
    ref = {
        "logits": o.logits.float(), "mask": o.mask, "text_logits": o.text_logits.float(), "text_mask": o.text_mask,
        "stream.logits": s_logits.float(), "stream.text_logits": s_text.float(),
        "text_loss": text_pos, "audio_loss": audio_pos, "audio_loss_per_codebook": audio_ce,
        "text_weight": text_w, "audio_weight": audio_w,
        "loss.text": loss_text.reshape(()), "loss.audio": loss_audio.reshape(()),
    }
    meta = {
        "generator": "tests/ref/score/gen_score_ref.py", "reference": "moshi " + moshi.__version__ + " LMModel.forward",
        "torch": torch.__version__, "seed": str(SEED), "text_padding_weight": str(TEXT_PADDING_WEIGHT),
        "first_codebook_weight_multiplier": str(FIRST_CODEBOOK_WEIGHT),
    }
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(out_dir, "ref.safetensors"), metadata=meta)
    d = (s_logits - o.logits).abs().nan_to_num(0).max().item()
    dt = (s_text - o.text_logits).abs().nan_to_num(0).max().item()
    print(f"wrote {out_dir}: loss.text {loss_text.item():.6f} loss.audio {loss_audio.item():.6f}; "
          f"upstream streamed vs full: logits {d:.3g}, text {dt:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
