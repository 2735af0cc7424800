#!/usr/bin/env python3
"""Reference run dirs and logits written by the moshi-finetune TTT fork's own code (test data generator).

Test dependency only (never used by the product); run through scripts/make_fork_refs.sh.

For every case it
  1. trains a tiny Moshi-TTT with the fork's own entry point `train.train(config.yaml)` (its get_fsdp_model,
     TTT integration, training loop, Checkpointer), on one CPU process (see fork_shims.py);
  2. loads the run back the way the fork's eval/resume code does (get_fsdp_model on the run's args.yaml +
     CheckpointLoader.load_checkpoint on the last checkpoint's consolidated/ dir), in float32, and writes
     ref.safetensors: LMModel.forward, teacher-forced streaming, gates at 0, the training loss;
  3. measures the fork behaviours issue 12 names (meta.json `fork_behaviours`);
  4. copies the run dir (minus optimizer state, tensorboard and timing logs) next to ref.safetensors.
The tiny base Moshi (random weights) is written once to OUT/base/.

Usage: gen_fork_refs.py --fork DIR [--out tests/data/fork_runs] [--work /tmp/mtt-fork-runs]
                        [--fork-commit SHA] [--cases a,b]
DIR is the fork's moshi-finetune folder (the one holding train.py).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TORCHDYNAMO_DISABLE"] = "1"  # the fork's @torch.compile methods run eagerly (fork_shims.py)
os.environ["NO_TORCH_COMPILE"] = "1"

import argparse
import contextlib
import copy
import io
import json
import logging
import math
import platform
import shutil
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

FORK_REPO = "AlufRon/claude-web"
FORK_FOLDER = "moshi_ttt_try/moshi-finetune"
FORK_COMMIT = "f5e977ac"

# lib/moshi/config.cpp LMConfig::tiny() with a 24-frame attention context, in the config.json form
# moshi.models.loaders.CheckpointInfo reads (LMModel kwargs + the file names of the other models).
TINY_LM = {
    "dim": 64, "text_card": 48, "existing_text_padding_id": 3, "n_q": 6, "dep_q": 3, "card": 32,
    "num_heads": 4, "num_layers": 4, "hidden_scale": 4.125, "causal": True, "layer_scale": None,
    "context": 24, "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32",
    "positional_embedding": "rope", "depformer_dim": 16, "depformer_dim_feedforward": 66,
    "depformer_num_heads": 2, "depformer_num_layers": 2, "depformer_layer_scale": None,
    "depformer_multi_linear": True, "depformer_context": 8, "depformer_max_period": 10000,
    "depformer_gating": "silu", "depformer_pos_emb": "none", "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 0, 1, 1],
}
BASE_FILES = {"moshi_name": "model.safetensors", "mimi_name": "tokenizer-e351c8d8-checkpoint125.safetensors",
              "tokenizer_name": "tokenizer_spm_32k_3.model", "model_type": "moshi"}
BASE_SEED = 20250101
CODES_SEED = 1234
B, T = 2, 37  # T = 37 is not a multiple of any mini-batch size used (16, 8), and exceeds the context (24)

COMMON = {
    "duration_sec": 2.0,  # 25 training frames per sample
    "batch_size": 1,
    "max_steps": 3,
    "log_freq": 1,
    "ckpt_freq": 0,
    "seed": 0,
    "optim": {"lr": 2e-3, "weight_decay": 0.1, "pct_start": 0.05},
    "param_dtype": "bfloat16",
}
CASES = {
    "ttt_adapters": {"ttt": {"enable": True}, "save_adapters": True},
    "ttt_merged": {"ttt": {"enable": True}, "save_adapters": False},
    "lora_ttt": {"ttt": {"enable": True}, "lora": {"enable": True, "rank": 4, "scaling": 2.0},
                 "save_adapters": True},
    "ttt_other": {"ttt": {"enable": True, "layers": "1,3", "mini_batch_size": 8, "base_lr": 0.5,
                          "initial_gating_alpha": 0.05},
                  "param_dtype": "float32", "save_adapters": True},
    "ttt_mlp3": {"ttt": {"enable": True, "ttt_mlp_layers": 3}, "save_adapters": True},
}
DROPPED = ("optimizer_state.pt", "tb", "metrics.train.jsonl", "metrics.eval.jsonl")


def deep_update(d, u):
    out = copy.deepcopy(d)
    for k, v in u.items():
        out[k] = deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def max_abs(a, b=None):
    x = a if b is None else (a.double() - b.double())
    x = x[torch.isfinite(x)]
    return float(x.abs().max()) if x.numel() else 0.0


# ---------------------------------------------------------------------------------------------- base model
def make_base(base_dir: Path) -> None:
    from moshi.models.lm import LMModel
    from safetensors.torch import save_file

    base_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(BASE_SEED)
    model = LMModel(**TINY_LM, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # moshi inits norm scales at 1; a wrong norm must show in the logits
                p.add_(0.1 * torch.randn_like(p))
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        # The on-disk layout of the published Moshi checkpoints: one in_proj_weight / out_proj.weight per
        # attention, the per-step projections stacked (StreamingMultiheadAttention._load_hook splits them).
        for proj, legacy in ((".in_projs.", ".in_proj_weight"), (".out_projs.", ".out_proj.weight")):
            if proj in k:
                prefix = k.split(proj)[0]
                key = prefix + legacy
                if key not in out:
                    n = len([x for x in sd if x.startswith(prefix + proj)])
                    out[key] = torch.cat([sd[f"{prefix}{proj}{i}.weight"] for i in range(n)], 0)
                break
        else:
            out[k] = v
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sorted(out.items())},
              str(base_dir / "model.safetensors"))
    (base_dir / "config.json").write_text(json.dumps({**TINY_LM, **BASE_FILES}, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- training
def case_config(name: str, work: Path) -> dict:
    base = work / "base"
    cfg = deep_update(COMMON, CASES[name])
    cfg = deep_update(cfg, {
        "run_dir": str(work / name / "run"),
        "moshi_paths": {"hf_repo_id": None, "moshi_path": str(base / "model.safetensors"),
                        "config_path": str(base / "config.json")},
        "data": {"train_data": ""},
    })
    return cfg


def train_case(name: str, work: Path, log) -> dict:
    import yaml
    import train as fork_train
    import fork_shims

    case_dir = work / name
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    cfg = case_config(name, work)
    cfg_path = case_dir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    fork_train.build_data_loader = fork_shims.random_codes_loader(TINY_LM, data_seed=cfg["seed"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), fork_shims.cuda_to_cpu():
        fork_train.train(str(cfg_path))
    (case_dir / "train.log").write_text(buf.getvalue())
    logging.getLogger().handlers.clear()  # set_logger bound the handlers to the redirected streams
    losses = []
    mpath = Path(cfg["run_dir"]) / "metrics.train.jsonl"
    if mpath.exists():
        for line in mpath.read_text().splitlines():
            m = json.loads(line)
            losses.append({"step": m.get("step"), "loss": m.get("loss")})
    log(f"[{name}] trained: losses {[round(x['loss'], 4) for x in losses]}")
    return {"config": cfg, "losses": losses}


# ---------------------------------------------------------------------------------------------- loading
LOAD_FUNCTION = ("finetune.wrapped_model.get_fsdp_model(TrainArgs.load(run/args.yaml) with param_dtype=float32, "
                 "moshi.models.loaders.CheckpointInfo.from_hf_repo(**args.moshi_paths)); "
                 "finetune.checkpoint_loader.CheckpointLoader.load_checkpoint(<last checkpoint>/consolidated, model, "
                 "optimizer=None, load_optimizer=False, strict=False); model.eval() "
                 "(the fork's resume path; evaluation/scripts/eval_from_checkpoint.py does the same load_state_dict)")


def last_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint_*"))
    return ckpts[-1] / "consolidated"


def load_from_run(run_dir: Path):
    """The model as the fork loads it back from RUN (base from args.moshi_paths + the saved tensors)."""
    import fork_shims
    from finetune.args import TrainArgs
    from finetune.checkpoint_loader import CheckpointLoader
    from finetune.wrapped_model import get_fsdp_model
    from moshi.models import loaders
    from safetensors.torch import load_file

    args = TrainArgs.load(run_dir / "args.yaml", drop_extra_fields=False)
    args.param_dtype = "float32"
    info = loaders.CheckpointInfo.from_hf_repo(
        hf_repo=args.moshi_paths.hf_repo_id, moshi_weights=args.moshi_paths.moshi_path,
        mimi_weights=args.moshi_paths.mimi_path, tokenizer=args.moshi_paths.tokenizer_path,
        config_path=args.moshi_paths.config_path)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), fork_shims.cuda_to_cpu():
        model = get_fsdp_model(args, info)
        ckpt = last_checkpoint(run_dir)
        CheckpointLoader.load_checkpoint(str(ckpt), model, optimizer=None, load_optimizer=False, strict=False)
    model.eval()
    wfile = ckpt / "lora.safetensors"
    if not wfile.exists():
        wfile = ckpt / "consolidated.safetensors"
    saved = load_file(str(wfile))
    model_keys = set(model.state_dict().keys())
    load_info = {
        "function": LOAD_FUNCTION,
        "weights_file": str(wfile.relative_to(run_dir)),
        "weights_dtype": str(next(iter(saved.values())).dtype).replace("torch.", ""),
        "keys_in_file": len(saved),
        "model_keys_not_in_file": len(model_keys - set(saved)),
        "file_keys_not_in_model": sorted(set(saved) - model_keys),
    }
    return model, args, load_info


# ---------------------------------------------------------------------------------------------- references
def make_codes(lm: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(CODES_SEED)
    text = torch.randint(0, lm["text_card"], (B, 1, T), generator=g)
    audio = torch.randint(0, lm["card"], (B, lm["n_q"], T), generator=g)
    codes = torch.cat([text, audio], 1)
    codes[1, 1:, T - 2:] = -1  # zero_token_id: audio padding at the end of item 1 (what the fork's loader pads with)
    codes[1, 0, 30] = -1       # and one text position, so text_mask is exercised too
    return codes


def lm_out(prefix: str, o) -> dict:
    return {prefix + "logits": o.logits.float().contiguous(), prefix + "mask": o.mask.contiguous(),
            prefix + "text_logits": o.text_logits.float().contiguous(), prefix + "text_mask": o.text_mask.contiguous()}


def teacher_forced_stream(model, codes):
    """LMGen._step / depformer_step with the sampled tokens replaced by the true ones, logits kept."""
    from moshi.models.lm_utils import _delay_sequence, _undelay_sequence

    Bc, K, Tc = codes.shape
    initial = model._get_initial_token().expand(Bc, -1, -1)
    delayed = torch.cat([initial, _delay_sequence(model.delays, codes, initial)], dim=2)  # [B, K, T + 1]
    text_steps, audio_steps = [], []
    with model.streaming(Bc):
        for s in range(Tc):
            h, tl = model.forward_text(delayed[:, :, s:s + 1])
            text_steps.append(tl)
            per_cb = []
            with model.depformer.streaming(Bc):
                for k in range(model.dep_q):
                    per_cb.append(model.forward_depformer(k, delayed[:, k:k + 1, s + 1:s + 2], h))
            audio_steps.append(torch.cat(per_cb, dim=1))
    logits = torch.cat(audio_steps, dim=2)
    text_logits = torch.cat(text_steps, dim=2)
    logits, mask = _undelay_sequence(model.delays[model.audio_offset:model.audio_offset + model.dep_q],
                                     logits, fill_value=float("NaN"))
    mask &= codes[:, model.audio_offset:model.audio_offset + model.dep_q] != model.zero_token_id
    text_logits, text_mask = _undelay_sequence(model.delays[:1], text_logits, fill_value=float("NaN"))
    text_mask &= codes[:, :1] != model.zero_token_id
    return {"stream.logits": logits.float().contiguous(), "stream.mask": mask.contiguous(),
            "stream.text_logits": text_logits.float().contiguous(), "stream.text_mask": text_mask.contiguous()}


def fork_losses(model, args, out, codes) -> dict:
    """finetune/loss.py compute_loss_with_mask exactly as train.py calls it, plus its per-position terms."""
    import torch.nn.functional as F
    from finetune.loss import compute_loss_with_mask

    pad_ids = {model.text_padding_token_id, model.end_of_text_padding_id}
    text_target = codes[:, :model.audio_offset]
    audio_target = codes[:, model.audio_offset:model.audio_offset + model.dep_q]
    text_loss = compute_loss_with_mask(out.text_logits, text_target, out.text_mask, mode="text",
                                       text_padding_weight=args.text_padding_weight, text_padding_ids=pad_ids)
    audio_loss = compute_loss_with_mask(out.logits, audio_target, out.mask, mode="audio",
                                        first_codebook_weight_multiplier=args.first_codebook_weight_multiplier)

    def per_position(logits, target, mask, mode):
        target = torch.where(mask, target, torch.zeros_like(target))
        w = mask.float()
        if mode == "audio":
            w[:, 0] *= args.first_codebook_weight_multiplier
        else:
            for i in pad_ids:
                w[target == i] *= args.text_padding_weight
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), reduction="none")
        ce = ce.view(target.shape)
        return torch.where(w > 0, ce, torch.zeros_like(ce)), w

    tce, tw = per_position(out.text_logits, text_target, out.text_mask, "text")
    ace, aw = per_position(out.logits, audio_target, out.mask, "audio")
    for ce, w, ref in ((tce, tw, text_loss), (ace, aw, audio_loss)):
        assert abs(float((ce * w).sum() / w.sum()) - float(ref)) <= 1e-5 * max(1.0, abs(float(ref)))
    return {"loss.text": text_loss.float().reshape(()), "loss.audio": audio_loss.float().reshape(()),
            "loss.total": (text_loss + audio_loss).float().reshape(()),
            "loss.text_ce": tce.contiguous(), "loss.text_weight": tw.contiguous(),
            "loss.audio_ce": ace.contiguous(), "loss.audio_weight": aw.contiguous()}


def ttt_blocks(model):
    from moshi_ttt.hybrid_layer import HybridStreamingTransformerLayer

    return [(i, l) for i, l in enumerate(model.transformer.layers) if isinstance(l, HybridStreamingTransformerLayer)]


def inner_weights(model) -> dict:
    """The TTT inner-loop weights (the state that persistence would carry), by name."""
    out = {}
    for i, layer in ttt_blocks(model):
        ttt = layer.seq_modeling_block.ttt_layer.ttt
        for n, p in ttt.named_parameters():
            if n in ("W1", "b1", "W2", "b2") or n.startswith(("weights.", "biases.")):
                out[f"transformer.layers.{i}.{n}"] = p.detach().clone()
    return out


def weights_delta(before: dict, after: dict) -> float:
    return max(max_abs(before[k], after[k]) for k in before)


def gate_stats(model) -> dict:
    out = {}
    for i, layer in ttt_blocks(model):
        blk = layer.seq_modeling_block
        for g in ("forward_ssm_gating", "backward_ssm_gating"):
            a = getattr(blk, g).gating_alpha.detach().float()
            out[f"layer{i}.{g}"] = {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}
    return out


def set_gates(model, value: float) -> None:
    from moshi_ttt.ssm_gating import SSMGating

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SSMGating):
                m.gating_alpha.fill_(value)


def dual_form_multi_layer_mini_batch(params_dict, inputs, log_losses=None, layer_id=None):
    """NOT fork code: the fork's compute_multi_layer_mini_batch with the textbook dual-form query pass
    (initial W_i / b_i, as the fork's own 2-layer compute_mini_batch does). Used only for `dual.*`."""
    import torch.nn.functional as F
    from moshi_ttt.models.ssm.ops.utils import gelu_bwd, ln_fused_l2_bwd, ln_fwd

    ttt_norm_weight, ttt_norm_bias = params_dict["ttt_norm_weight"], params_dict["ttt_norm_bias"]
    W, bs = params_dict["weight_states"], params_dict["bias_states"]
    n = len(W)
    XQ, XV, XK, eta = inputs["XQ"], inputs["XV"], inputs["XK"], inputs["eta"]
    num_heads, head_dim = XQ.size(1), XQ.size(-1)
    xs, zs = [XK], []
    for i in range(n):
        z = xs[i] @ W[i] + bs[i]
        zs.append(z)
        if i < n - 1:
            xs.append(F.gelu(z, approximate="tanh"))
    target = XV - XK
    ln_w = ttt_norm_weight.reshape(num_heads, 1, head_dim)
    ln_b = ttt_norm_bias.reshape(num_heads, 1, head_dim)
    grads = [None] * n
    grads[-1] = ln_fused_l2_bwd(zs[-1], target, ln_w, ln_b)
    for i in range(n - 2, -1, -1):
        grads[i] = grads[i + 1] @ W[i + 1].transpose(-2, -1) * gelu_bwd(zs[i])
    last_eta = eta[:, :, -1, :, None]
    W_new = [W[i] - (last_eta * xs[i]).transpose(-1, -2) @ grads[i] for i in range(n)]
    b_new = [bs[i] - torch.sum(last_eta * grads[i], dim=-2, keepdim=True) for i in range(n)]
    x = XQ
    for i in range(n):
        attn = x @ xs[i].transpose(-2, -1)
        z_bar = x @ W[i] - (eta * attn) @ grads[i] + (bs[i] - eta @ grads[i])
        if i < n - 1:
            x = F.gelu(z_bar, approximate="tanh")
        else:
            out = XQ + ln_fwd(z_bar, ln_w, ln_b, layer_id=layer_id)
    return {"weight_states": W_new, "bias_states": b_new, "ttt_norm_weight": ttt_norm_weight,
            "ttt_norm_bias": ttt_norm_bias}, out


def causality_probe(load, codes, gates=None) -> torch.Tensor:
    """Perturb only the last input step of forward_text; a causal model keeps every earlier output.
    Each pass gets a freshly loaded model (TTTMLPMultiLayer's forward mutates its weights)."""
    from moshi.models.lm_utils import _delay_sequence

    hs = []
    for perturb in (False, True):
        model = load()
        if gates is not None:
            set_gates(model, gates)
        initial = model._get_initial_token().expand(codes.shape[0], -1, -1)
        delayed = torch.cat([initial, _delay_sequence(model.delays, codes, initial)], dim=2)[:, :, :-1]
        if perturb:
            delayed = delayed.clone()
            delayed[:, 0, -1] = (delayed[:, 0, -1] + 1) % model.text_card
            delayed[:, 1:, -1] = (delayed[:, 1:, -1].clamp(min=0) + 1) % model.card
        hs.append(model.forward_text(delayed)[0])
    return (hs[0] - hs[1]).abs().amax(dim=(0, 2))  # [S]


def apply_inference_script_overrides(model, ttt_cfg: dict) -> None:
    """Steps 9-10 of the fork's inference/run_inference_with_ttt.py load_ttt_model (RoPE max_period and the
    attention contexts it sets after loading), replicated because that function also downloads the base from
    Hugging Face and casts the model to bfloat16."""
    if hasattr(model, "transformer") and hasattr(model.transformer, "rope") and model.transformer.rope is not None:
        model.transformer.rope.max_period = 100_000
        model.transformer.max_period = 100_000
    ttt_context = ttt_cfg.get("ttt_layer_context", 3000)
    non_ttt_context = ttt_cfg.get("non_ttt_layer_context", 3000)
    for layer in model.transformer.layers:
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "context"):
            layer.self_attn.context = non_ttt_context
        elif hasattr(layer, "original_layer") and hasattr(layer.original_layer, "self_attn"):
            if hasattr(layer.original_layer.self_attn, "context"):
                layer.original_layer.self_attn.context = ttt_context


def compute_refs(name: str, run_dir: Path, log) -> tuple[dict, dict]:
    import importlib
    ops_ttt_mlp = importlib.import_module("moshi_ttt.models.ssm.ops.ttt_mlp")

    refs, meta = {}, {}
    model, args, load_info = load_from_run(run_dir)
    meta["load"] = load_info
    codes = make_codes(TINY_LM)
    refs["codes"] = codes
    mb = args.ttt.mini_batch_size
    with torch.no_grad():
        w0 = inner_weights(model)
        out = model(codes)
        refs.update(lm_out("", out))
        refs.update(fork_losses(model, args, out, codes))
        w1 = inner_weights(model)
        out2 = model(codes)
        meta["gates_loaded"] = gate_stats(model)
        forward_mutation = {
            "inner_weights_max_abs_change_after_one_forward": weights_delta(w0, w1),
            "second_forward_logits_max_abs_diff": max_abs(out2.logits, out.logits),
        }

        model, _, _ = load_from_run(run_dir)
        w0 = inner_weights(model)
        refs.update(teacher_forced_stream(model, codes))
        w_after_stream = inner_weights(model)
        second = teacher_forced_stream(model, codes)  # same model object, a second streaming() session
        stream_info = {
            "inner_weights_max_abs_change_after_streaming": weights_delta(w0, w_after_stream),
            "stream_vs_forward_logits_max_abs_diff": max_abs(refs["stream.logits"], refs["logits"]),
            "stream_vs_forward_text_logits_max_abs_diff": max_abs(refs["stream.text_logits"], refs["text_logits"]),
            "second_session_on_same_model_logits_max_abs_diff": max_abs(second["stream.logits"], refs["stream.logits"]),
        }

        model, _, _ = load_from_run(run_dir)
        alone = teacher_forced_stream(model, codes[1:2])
        stream_info["item1_streamed_alone_vs_in_batch_logits_max_abs_diff"] = max_abs(
            alone["stream.logits"][0], refs["stream.logits"][1])

        model, _, _ = load_from_run(run_dir)
        set_gates(model, 0.0)
        refs.update(lm_out("gate0.", model(codes)))
        model, _, _ = load_from_run(run_dir)
        set_gates(model, 0.0)
        g0s = teacher_forced_stream(model, codes)
        stream_info["gate0_stream_vs_gate0_forward_logits_max_abs_diff"] = max_abs(g0s["stream.logits"],
                                                                                   refs["gate0.logits"])

        def load():
            return load_from_run(run_dir)[0]

        probe = causality_probe(load, codes)
        probe_gate0 = causality_probe(load, codes, gates=0.0)
        S = probe.shape[0]
        first_of_last_mb = ((S - 1) // mb) * mb
        causality = {
            "probe": "forward_text on the delayed sequence; only the last input step (step %d) perturbed; "
                     "max |delta transformer_out| at earlier steps" % (S - 1),
            "last_mini_batch_steps": [first_of_last_mb, S - 1],
            "max_change_same_mini_batch_earlier_steps": float(probe[first_of_last_mb:S - 1].max())
            if S - 1 > first_of_last_mb else None,
            "max_change_earlier_mini_batches": float(probe[:first_of_last_mb].max()) if first_of_last_mb else None,
            "gate0_max_change_all_earlier_steps": float(probe_gate0[:S - 1].max()),
        }

        model, _, _ = load_from_run(run_dir)
        model.double()
        out64 = model(codes)
        noise = {
            "fp32_vs_fp64_logits_max_abs": max_abs(refs["logits"], out64.logits),
            "fp32_vs_fp64_text_logits_max_abs": max_abs(refs["text_logits"], out64.text_logits),
            "max_abs_logits": max_abs(refs["logits"]),
            "max_abs_text_logits": max_abs(refs["text_logits"]),
            "how": "the same load in float64 (model.double()); the fork's 2-layer compute_mini_batch casts to "
                   "float32 internally, so for TTTMLP cases the TTT core itself is float32 in both runs",
        }
        noise["fp32_vs_fp64_logits_rel"] = noise["fp32_vs_fp64_logits_max_abs"] / noise["max_abs_logits"]

        discrimination = {
            "ttt_contribution_logits_max_abs (logits - gate0.logits)": max_abs(refs["logits"], refs["gate0.logits"]),
            "ttt_contribution_text_logits_max_abs": max_abs(refs["text_logits"], refs["gate0.text_logits"]),
        }
        if args.lora.enable:
            model, _, _ = load_from_run(run_dir)
            with torch.no_grad():
                for n_, p in model.named_parameters():
                    if "lora_B" in n_:
                        p.zero_()
            nolora = model(codes)
            discrimination["lora_contribution_logits_max_abs (LoRA B zeroed)"] = max_abs(refs["logits"], nolora.logits)
            discrimination["lora_contribution_text_logits_max_abs"] = max_abs(refs["text_logits"],
                                                                              nolora.text_logits)

        pads = mb - 1
        if args.ttt.ttt_mlp_layers < 3:
            d = stream_info["inner_weights_max_abs_change_after_streaming"]
            stream_info["finding"] = (
                ("confirmed" if d == 0 else "REFUTED") +
                f": the 2-layer TTTMLP.ttt (moshi_ttt/models/ssm/ttt_layer.py) never writes W1/b1/W2/b2 back "
                f"(max change after streaming {T} frames: {d:g}), although args.ttt.persistent_states is "
                f"{args.ttt.persistent_states}; every streamed frame runs TTT from the loaded weights on 1 real "
                f"token + {pads} zero pads (HybridSeqModelingBlock._apply_ttt_processing_impl pads to the mini-batch)")
        else:
            d = stream_info["inner_weights_max_abs_change_after_streaming"]
            stream_info["finding"] = (
                ("confirmed" if d > 0 else "REFUTED") +
                f": TTTMLPMultiLayer.ttt writes the final state of batch item 0 back in eval mode, so streaming "
                f"carries the state (max change after {T} frames: {d:g}); each frame's update also includes its "
                f"{pads} zero pads (their keys/eta come from the projections' biases); with B > 1 every item "
                f"continues from item 0's state (item 1 streamed alone differs from item 1 in the batch by "
                f"{stream_info['item1_streamed_alone_vs_in_batch_logits_max_abs_diff']:g})")
        stream_info["second_session_finding"] = (
            "HybridStreamingTransformerLayer starts its attention layer's streaming with streaming_forever() and "
            "never stops it: a second model.streaming() session on the same model object starts from the previous "
            "session's KV cache and offsets (logits differ from a fresh session by %g); stream.* are from a freshly "
            "loaded model" % stream_info["second_session_on_same_model_logits_max_abs_diff"])
        fm = forward_mutation["inner_weights_max_abs_change_after_one_forward"]
        forward_mutation["finding"] = (
            "LMModel.forward in eval mode mutates the TTT inner weights (TTTMLPMultiLayer writes back batch item 0's "
            "final state, pads included): a second identical forward differs by %g; logits/gate0/dual are each from "
            "a freshly loaded model" % forward_mutation["second_forward_logits_max_abs_diff"]
            if fm > 0 else "LMModel.forward leaves the model unchanged (max inner-weight change 0)")
        causality["finding"] = (
            "the fork's TTT is not causal inside a mini-batch: eta = ttt_lr.repeat(..., mini_batch_size, 1) / C "
            "(TTTBase.process_input) has no lower-triangular mask, so in LMModel.forward an output depends on later "
            "inputs of its mini-batch (max change %g); earlier mini-batches: %s; gates at 0: %g"
            % (causality["max_change_same_mini_batch_earlier_steps"] or 0.0,
               causality["max_change_earlier_mini_batches"], causality["gate0_max_change_all_earlier_steps"]))
        unused = {}
        for label, pattern in (("ttt.wo.*", ".ttt.wo."), ("ttt.post_norm.*", ".ttt.post_norm."),
                               ("backward_ssm_gating.gating_alpha", "backward_ssm_gating.")):
            model = load()
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                for n_, p in model.named_parameters():
                    if pattern in n_:
                        p.add_(0.5 * torch.randn(p.shape, generator=g))
            unused[label + ": logits max change when perturbed by N(0, 0.25)"] = max_abs(model(codes).logits,
                                                                                          refs["logits"])
        unused["finding"] = (
            "saved but never used by the forward: TTTWrapper.forward returns ttt.ttt(process_input(x)) without "
            "TTTBase.forward's post_norm and wo, and only forward_ssm_gating gates the output (these tensors also "
            "get no gradient, so training leaves them at their init)")
        model = load()
        tcfg = json.loads((last_checkpoint(run_dir) / "training_config.json").read_text())["ttt"]
        apply_inference_script_overrides(model, tcfg)
        inf = model(codes)
        inference_script = {
            "what": "inference/run_inference_with_ttt.py load_ttt_model, after loading, sets RoPE max_period to "
                    "100000 and every attention context to training_config ttt.ttt_layer_context / "
                    "non_ttt_layer_context (%r / %r here, i.e. None = unlimited; the model's config says %d); it "
                    "also runs the model in bfloat16 and reads only lora.safetensors (FileNotFoundError on a "
                    "save_adapters: false run)" % (tcfg.get("ttt_layer_context", 3000),
                                                  tcfg.get("non_ttt_layer_context", 3000), TINY_LM["context"]),
            "logits_max_abs_diff_vs_logits (float32)": max_abs(inf.logits, refs["logits"]),
            "text_logits_max_abs_diff_vs_text_logits (float32)": max_abs(inf.text_logits, refs["text_logits"]),
        }
        behaviours = {"forward_in_eval_mode": forward_mutation, "streaming": stream_info,
                      "mini_batch_causality": causality, "unused_saved_tensors": unused,
                      "inference_script_overrides": inference_script}
        if args.ttt.ttt_mlp_layers >= 3:
            orig = ops_ttt_mlp.compute_multi_layer_mini_batch
            ops_ttt_mlp.compute_multi_layer_mini_batch = dual_form_multi_layer_mini_batch
            try:
                model, _, _ = load_from_run(run_dir)
                dual = model(codes)
            finally:
                ops_ttt_mlp.compute_multi_layer_mini_batch = orig
            refs.update({"dual.logits": dual.logits.float().contiguous(),
                         "dual.text_logits": dual.text_logits.float().contiguous()})
            q = {
                "fork_vs_dual_form_logits_max_abs": max_abs(refs["logits"], dual.logits),
                "fork_vs_dual_form_text_logits_max_abs": max_abs(refs["text_logits"], dual.text_logits),
                "fork_vs_dual_form_logits_rel": max_abs(refs["logits"], dual.logits) / max_abs(refs["logits"]),
            }
            q["finding"] = (
                ("confirmed" if q["fork_vs_dual_form_logits_rel"] > 1e-5 else "REFUTED") +
                ": compute_multi_layer_mini_batch (moshi_ttt/models/ssm/ops/ttt_mlp.py) runs the query pass with the "
                "already-updated W_i / b_i (Z_i_bar = X_i_bar @ W_i_last - (eta * Attn_i) @ grad_i + b_i_last - "
                "eta @ grad_i) instead of the initial ones; logits differ from the dual form by %g (rel %.2g)"
                % (q["fork_vs_dual_form_logits_max_abs"], q["fork_vs_dual_form_logits_rel"]))
            behaviours["multi_layer_query_pass"] = q
    meta["noise"] = noise
    meta["discrimination"] = discrimination
    meta["fork_behaviours"] = behaviours
    meta["ttt_layers"] = [i for i, _ in ttt_blocks(model)]
    log(f"[{name}] refs: max|logits| {noise['max_abs_logits']:.3g}, fp64 diff {noise['fp32_vs_fp64_logits_max_abs']:.3g}, "
        f"stream-forward {stream_info['stream_vs_forward_logits_max_abs_diff']:.3g}")
    return refs, meta


# ---------------------------------------------------------------------------------------------- meta text
TENSOR_DOC = {
    "codes": "int64 [B, 1 + n_q, T]: LMModel.forward input (row 0 text, rows 1.. audio; -1 = zero_token_id)",
    "logits": "float32 [B, dep_q, T, card]: LMOutput.logits of model(codes) (NaN where mask is false)",
    "mask": "bool [B, dep_q, T]: LMOutput.mask",
    "text_logits": "float32 [B, 1, T, text_card]: LMOutput.text_logits",
    "text_mask": "bool [B, 1, T]: LMOutput.text_mask",
    "stream.*": "same layout, from teacher_forced_stream(): with model.streaming(B), per step s: "
                "model.forward_text(delayed[:, :, s:s+1]); with model.depformer.streaming(B): "
                "model.forward_depformer(k, delayed[:, k:k+1, s+1:s+2], h) for k < dep_q; then moshi's "
                "_undelay_sequence as in LMModel.forward",
    "gate0.*": "model(codes) after every SSMGating.gating_alpha (forward and backward) is set to 0",
    "loss.text / loss.audio": "float32 scalars: finetune/loss.py compute_loss_with_mask as train.py calls it "
                              "(text_padding_weight, first_codebook_weight_multiplier from args.yaml); "
                              "loss.total = their sum (train.py's mb_loss)",
    "loss.*_ce / loss.*_weight": "[B, 1|dep_q, T] per-position cross-entropy (0 where weight is 0) and the "
                                 "weights compute_loss_with_mask builds; loss.X == sum(ce*w)/sum(w)",
    "dual.*": "ttt_mlp3 only, NOT fork behaviour: logits with the textbook dual-form query pass "
              "(gen_fork_refs.dual_form_multi_layer_mini_batch) in place of the fork's",
}


MOSHI_NOTE = ("The fork's uv.lock pins moshi git 061cc4c (0.2.4a1 = PyPI 0.2.4 for lm.py, transformer.py, "
              "streaming.py, lora.py); with it the fork's own HybridSeqModelingBlock fails in every forward "
              "(StreamingTransformerLayer has no `cross_attention` before moshi 0.2.5) and its "
              "_init_streaming_state needs moshi >= 0.2.5's State(batch_size, device). The references use PyPI "
              "moshi 0.2.13; moshi 0.2.5 gives bit-identical logits and stream logits (checked on ttt_adapters, "
              "lora_ttt, ttt_mlp3). torch 2.7.1 CPU instead of the pinned 2.6.")


def env_info() -> dict:
    import moshi
    return {"python": platform.python_version(), "torch": torch.__version__, "moshi": moshi.__version__,
            "threads": torch.get_num_threads(), "device": "cpu", "note": MOSHI_NOTE}


def copy_run(src: Path, dst: Path) -> list:
    dropped = []
    if dst.exists():
        shutil.rmtree(dst)

    def ignore(d, names):
        out = []
        for n in names:
            if n in DROPPED:
                p = Path(d) / n
                entry = {"path": str(p.relative_to(src))}
                if n == "optimizer_state.pt":  # the others hold wall-clock timings: sizes vary run to run
                    entry["bytes"] = p.stat().st_size
                dropped.append(entry)
                out.append(n)
        return out

    shutil.copytree(src, dst, ignore=ignore)
    return sorted(dropped, key=lambda x: x["path"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fork", required=True, help="the fork's moshi-finetune folder (holds train.py)")
    ap.add_argument("--out", default="tests/data/fork_runs")
    ap.add_argument("--work", default="/tmp/mtt-fork-runs",
                    help="where the fork trains; its absolute paths end up in args.yaml as written")
    ap.add_argument("--fork-commit", default=FORK_COMMIT)
    ap.add_argument("--cases", default=",".join(CASES))
    a = ap.parse_args()
    fork = Path(a.fork).resolve()
    out_root = Path(a.out).resolve()
    work = Path(a.work).resolve()
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    sys.path.insert(0, str(fork))
    os.chdir(fork)  # the fork runs from its own folder (train.py imports inference.*, moshi_ttt.*)

    def log(msg):
        print(msg, file=sys.__stderr__, flush=True)

    import fork_shims
    fork_shims.init_single_process()
    fork_shims.install_model_file_shims()
    fork_shims.install_gpu_kernel_shims()
    import torch._dynamo
    torch._dynamo.config.disable = True

    work.mkdir(parents=True, exist_ok=True)
    make_base(work / "base")
    (out_root / "base").mkdir(parents=True, exist_ok=True)
    for f in ("model.safetensors", "config.json"):
        shutil.copy2(work / "base" / f, out_root / "base" / f)
    log(f"base: {out_root / 'base'}")

    from safetensors.torch import save_file
    for name in a.cases.split(","):
        trained = train_case(name, work, log)
        run_dir = Path(trained["config"]["run_dir"])
        buf = io.StringIO()  # the fork prints a line per SSMGating call with large norms
        logging.disable(logging.INFO)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            refs, meta = compute_refs(name, run_dir, log)
        logging.disable(logging.NOTSET)
        (work / name / "refs.log").write_text(buf.getvalue())
        dst = out_root / name
        dst.mkdir(parents=True, exist_ok=True)
        dropped = copy_run(run_dir, dst / "run")
        save_file({k: v.contiguous() for k, v in sorted(refs.items())}, str(dst / "ref.safetensors"))
        full = {
            "case": name,
            "fork": {"repo": FORK_REPO, "folder": FORK_FOLDER, "commit": a.fork_commit},
            "environment": env_info(),
            "shims": fork_shims.__doc__.split("\n\n", 1)[1].strip(),
            "settings": {"train_config_yaml": trained["config"], "lm": TINY_LM,
                         "base": "base/model.safetensors (bf16, legacy in_proj_weight layout) + base/config.json",
                         "codes": {"B": B, "T": T, "seed": CODES_SEED,
                                   "zero_token_positions": "item 1: audio rows at t = T-2, T-1; text at t = 30"}},
            "training": {"entry": "train.train(config.yaml) (fire entry point of the fork's train.py)",
                         "losses": trained["losses"],
                         "data": "fork_shims.random_codes_loader: uniform random text/audio tokens, "
                                 "ceil(duration_sec * 12.5) frames, torch.Generator seed = args.seed"},
            "run_dir_written_at": str(run_dir),
            "run_files_dropped": dropped,
            "tensors": {k: "%s %s" % (str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in sorted(refs.items())},
            "tensor_doc": TENSOR_DOC,
            **meta,
        }
        (dst / "meta.json").write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
        log(f"[{name}] wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
