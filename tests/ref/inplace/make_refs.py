"""Reference run dirs and logits written by the In-Place TTT port's own code (AlufRon/moshi_in_place).

usage: make_refs.py --port PORT_DIR --out OUT_DIR [--case NAME ...] [--commit SHA]

1. Builds a tiny random base Moshi with the port's own loader (get_moshi_lm(None, lm_kwargs))
   and writes OUT/base/{model.safetensors, config.json}.
2. For each case, writes a train config, runs the port's train.py in a fresh process
   (port_train.py: the port's train.train under shims.py) into OUT/<case>/run.
3. Loads the trained model back the way the port does (moshi.models.loaders: CheckpointInfo
   + get_moshi / get_moshi_lm, with run_inference.main's overrides for --lora-weights) and
   writes OUT/<case>/ref.safetensors (float32) + OUT/<case>/meta.json.
See README.md next to this file (regenerating) and tests/data/inplace_runs/README.md (contents).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Tiny base: moshi's LMModel kwargs (config.json as moshi's CheckpointInfo reads it). The
# depformer has per-step weights like moshiko: the port builds the depformer from the same
# kwargs (ttt_config included) and only weights_per_step keeps TTT out of it.
BASE_CONFIG = {
    "moshi_name": "model.safetensors",
    "dim": 32,
    "text_card": 48,
    "existing_text_padding_id": 3,
    "n_q": 4,
    "dep_q": 2,
    "card": 32,
    "num_heads": 4,
    "num_layers": 4,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 8,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 16,
    "depformer_dim_feedforward": 66,
    "depformer_num_heads": 2,
    "depformer_num_layers": 2,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 2,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 0, 1],
}
BASE_SEED = 1234
REF_CODES_SEED = 778  # text row has both padding ids (3 and 0)
REF_T = 11            # chunk_size 4: chunks of 4, 4, 3 tokens (not a multiple)
DURATION_SEC = 1.2    # training T = ceil(1.2 * 12.5) = 15 frames: chunks 4, 4, 4, 3

TTT_COMMON = {"enabled": True, "layer_frequency": 2, "start_layer": 1, "chunk_size": 4,
              "conv_kernel_size": 2}

CASES = {
    "inplace_default": {
        "about": "default init (target generator N(0, 1e-2), w_down <- linear_out), default TTT lr 1e-3, "
                 "save_adapters: false (consolidated.safetensors holds every tensor)",
        "ttt": {**TTT_COMMON, "learning_rate": 1e-3},
        "save_adapters": False,
    },
    "inplace_zero": {
        "about": "target generator zero at the start of training. The port (d2e9475) has no option for "
                 "it: get_fsdp_model loads moshi_path with strict=False/assign=True and "
                 "initialize_ttt_parameters only fills tensors that are still meta, so the run starts "
                 "from a base that carries zero target_generator tensors (base_tg0, not committed: "
                 "args.yaml names it). save_adapters: false",
        "ttt": {**TTT_COMMON, "learning_rate": 1e-3},
        "save_adapters": False,
        "zero_target_generator": True,
    },
    "inplace_adapters": {
        "about": "the port's default save_adapters: true (lora.safetensors, adapter-only over the base); "
                 "same training as inplace_default (same seeds), so its tensors can be compared",
        "ttt": {**TTT_COMMON, "learning_rate": 1e-3},
        "save_adapters": True,
    },
    "inplace_big_lr": {
        "about": "TTT learning rate 1e4: the update clip (1e-5 Frobenius per chunk, not settable from "
                 "train args) makes the default lr inert; 1e4 moves the logits visibly. save_adapters: false",
        "ttt": {**TTT_COMMON, "learning_rate": 1e4},
        "save_adapters": False,
    },
}
TRAIN = {"seed": 0, "max_steps": 3, "optim_lr": 1e-2, "batch_size": 1, "data_seed": 5}
LR_SWEEP = [0.0, 1e-3, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5]


def log(msg: str) -> None:
    print(f"[inplace-refs] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- base model


def build_base(out: Path) -> None:
    import torch
    from moshi.models.loaders import get_moshi_lm
    from safetensors.torch import save_file

    torch.manual_seed(BASE_SEED)
    lm_kwargs = {k: v for k, v in BASE_CONFIG.items() if k != "moshi_name"}
    model = get_moshi_lm(None, lm_kwargs=lm_kwargs, device="cpu", dtype=torch.float32)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(BASE_CONFIG, indent=4) + "\n")
    log(f"base: {len(state)} tensors, {sum(v.numel() for v in state.values())} values -> {out}")


def write_zero_tg_base(base: Path, dst: Path, ttt: dict) -> list[str]:
    """base + zero target_generator tensors for the TTT layers (shapes as TTTGating makes them)."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(base / "model.safetensors"))
    D, k = BASE_CONFIG["dim"], ttt["conv_kernel_size"]
    added = []
    for i in ttt_layers(ttt):
        p = f"transformer.layers.{i}.gating.target_generator"
        state[f"{p}.conv1d.conv.weight"] = torch.zeros(D, D, k)
        state[f"{p}.W_target.weight"] = torch.zeros(D, D)
        added += [f"{p}.conv1d.conv.weight", f"{p}.W_target.weight"]
    dst.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst / "model.safetensors"))
    shutil.copy(base / "config.json", dst / "config.json")
    return added


def ttt_layers(ttt: dict) -> list[int]:
    # transformer.py StreamingTransformerLayer: idx >= start_layer and (idx - start) % frequency == 0
    return [i for i in range(BASE_CONFIG["num_layers"])
            if i >= ttt["start_layer"] and (i - ttt["start_layer"]) % ttt["layer_frequency"] == 0]


# ----------------------------------------------------------------------------- training


def train_case(port: Path, case: str, spec: dict, case_dir: Path, base: Path, work: Path) -> Path:
    import yaml

    run_dir = case_dir / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    moshi_base = base
    if spec.get("zero_target_generator"):
        moshi_base = work / "base_tg0"
        spec["zero_keys"] = write_zero_tg_base(base, moshi_base, spec["ttt"])
    cfg = {
        "data": {"train_data": "", "shuffle": False, "eval_data": ""},
        "run_dir": str(run_dir),
        "moshi_paths": {"hf_repo_id": None, "mimi_path": None, "tokenizer_path": None,
                        "moshi_path": str(moshi_base / "model.safetensors"),
                        "config_path": str(moshi_base / "config.json")},
        "seed": TRAIN["seed"],
        "duration_sec": DURATION_SEC,
        "batch_size": TRAIN["batch_size"],
        "max_steps": TRAIN["max_steps"],
        "log_freq": 1,
        "ckpt_freq": 0,
        "save_adapters": spec["save_adapters"],
        "do_eval": False,
        "optim": {"lr": TRAIN["optim_lr"], "weight_decay": 0.1, "pct_start": 0.05},
        "lora": {"enable": False},
        "full_finetuning": False,
        "ttt": {k: v for k, v in spec["ttt"].items()},
        "param_dtype": "float32",
    }
    cfg_path = work / f"{case}.train.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    log_path = work / f"{case}.train.log"
    with open(log_path, "w") as lf:
        rc = subprocess.run([sys.executable, str(HERE / "port_train.py"), str(port), str(cfg_path),
                             str(TRAIN["data_seed"])], env=env, stdout=lf, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.stderr.write(log_path.read_text()[-4000:])
        raise SystemExit(f"[inplace-refs] the port's train.py failed for {case} (rc {rc}); log: {log_path}")
    # Logs that carry wall-clock times, host names or event-file names: not reproducible, not read by
    # anything downstream. args.yaml, checkpoints/ (safetensors + config.json) stay as written.
    for name in ("tb", "metrics.train.jsonl", "metrics.eval.jsonl"):
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return run_dir


# ----------------------------------------------------------------------------- loading (the port's way)


def checkpoint_dir(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "checkpoints").iterdir())
    return ckpts[-1] / "consolidated"


def load_port_model(run_dir: Path, base: Path, save_adapters: bool, dtype=None, ttt_overrides: dict | None = None):
    """The trained model as the port loads it back.

    save_adapters false: run_inference --moshi-weight consolidated.safetensors --config consolidated/config.json
      -> CheckpointInfo.from_hf_repo(...).get_moshi(device, dtype, lm_kwargs_overrides={}).
    save_adapters true: run_inference --moshi-weight BASE --config BASE/config.json --lora-weights lora.safetensors
      -> the overrides run_inference.main reads from the checkpoint's config.json (lora, lora_rank,
      lora_scaling, context, max_period, ttt_config), then get_moshi(...): get_moshi_lm loads the base,
      initialises w_down/w_down_pretrained/target_generator, then load_state_dict(lora file, strict=False).
    ttt_overrides: keys merged into ttt_config (e.g. learning_rate 0 for the no-update reference).
    """
    import torch
    from moshi.models import loaders

    dtype = dtype or torch.float32
    ck = checkpoint_dir(run_dir)
    overrides: dict = {}
    if save_adapters:
        info = loaders.CheckpointInfo.from_hf_repo(None, base / "model.safetensors", None, None,
                                                   base / "config.json", lora_weights=ck / "lora.safetensors")
        ckpt_config = json.loads((ck / "config.json").read_text())
        overrides["lora"] = ckpt_config.get("lora", True)
        overrides["lora_rank"] = ckpt_config.get("lora_rank", 64)
        overrides["lora_scaling"] = ckpt_config.get("lora_scaling", 2.0)
        for key in ("context", "max_period", "ttt_config"):
            if key in ckpt_config:
                overrides[key] = ckpt_config[key]
    else:
        info = loaders.CheckpointInfo.from_hf_repo(None, ck / "consolidated.safetensors", None, None,
                                                   ck / "config.json")
    if ttt_overrides:
        ttt = dict(overrides.get("ttt_config") or info.lm_config["ttt_config"])
        ttt.update(ttt_overrides)
        overrides["ttt_config"] = ttt
    model = info.get_moshi(device="cpu", dtype=dtype, lm_kwargs_overrides=overrides)
    return model


# ----------------------------------------------------------------------------- reference computations


def forward_train_mode(model, codes):
    """LMModel.forward with model.train(): TTTGating._ttt_forward -> _parallel_ttt_update
    (per-chunk conv, exclusive prefix sum of clipped deltas), what train.py's loop computes."""
    import torch

    model.train()
    with torch.no_grad():
        out = model(codes)
    model.eval()
    return out


def forward_eval_mode(model, codes):
    """LMModel.forward on the model as get_moshi returns it (eval): TTTGating._ttt_forward_inference
    (output Z·w_downᵀ with the loaded w_down for every token; complete chunks are then replayed into
    w_down.data)."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(codes)


def forward_streaming(model, codes):
    """Teacher-forced streaming, frame by frame, with the port's own LMModel methods:
    delayed = cat([initial, _delay_sequence(delays, codes, initial)], 2) as LMModel.forward builds it;
    with model.streaming(B): for t in range(T):
        h_t, text_t = model.forward_text(delayed[:, :, t:t+1])            # main transformer, one step
        audio_t = model.forward_depformer_training(delayed[:, :, t+1:t+2], h_t)  # depformer (streaming-detached)
    then the tail of LMModel.forward (_undelay_sequence with NaN fill, masks from codes != -1)."""
    import torch
    from moshi.models.lm_utils import _delay_sequence, _undelay_sequence

    model.eval()
    B, K, T = codes.shape
    with torch.no_grad():
        initial = model._get_initial_token().expand(B, -1, -1)
        delayed = _delay_sequence(model.delays, codes, initial)
        delayed = torch.cat([initial, delayed], dim=2)
        audio, text = [], []
        with model.streaming(B):
            for t in range(T):
                h, tl = model.forward_text(delayed[:, :, t:t + 1])
                audio.append(model.forward_depformer_training(delayed[:, :, t + 1:t + 2], h))
                text.append(tl)
        logits = torch.cat(audio, dim=2)
        text_logits = torch.cat(text, dim=2)
        ao = model.audio_offset
        logits, mask = _undelay_sequence(model.delays[ao:ao + model.dep_q], logits, fill_value=float("NaN"))
        mask &= codes[:, ao:ao + model.dep_q] != model.zero_token_id
        text_logits, text_mask = _undelay_sequence(model.delays[:1], text_logits, fill_value=float("NaN"))
        text_mask &= codes[:, :1] != model.zero_token_id
    return logits, mask, text_logits, text_mask


def port_losses(model, codes, out, args_yaml: dict):
    """compute_loss_with_mask exactly as train.py's loop calls it."""
    from finetune.loss import compute_loss_with_mask

    text_loss = compute_loss_with_mask(
        out.text_logits, codes[:, : model.audio_offset], out.text_mask, mode="text",
        text_padding_weight=args_yaml["text_padding_weight"],
        text_padding_ids={model.text_padding_token_id, model.end_of_text_padding_id})
    audio_loss = compute_loss_with_mask(
        out.logits, codes[:, model.audio_offset: model.audio_offset + model.dep_q], out.mask, mode="audio",
        first_codebook_weight_multiplier=args_yaml["first_codebook_weight_multiplier"])
    return text_loss, audio_loss


def maxabs_masked(a, b, mask=None):
    import torch

    d = (a - b).abs()
    if mask is not None:
        d = d[mask]
    d = d[torch.isfinite(d)]
    return float(d.max()) if d.numel() else 0.0


def maxabs(a, mask=None):
    import torch

    x = a.abs()
    if mask is not None:
        x = x[mask]
    x = x[torch.isfinite(x)]
    return float(x.max()) if x.numel() else 0.0


def gating_of(model, i):
    return model.transformer.layers[i].gating


def compute_refs(port: Path, case: str, spec: dict, case_dir: Path, base: Path, commit: str,
                 extra: dict) -> dict:
    import torch
    import torch.nn.functional as F
    import yaml
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    run_dir = case_dir / "run"
    args_yaml = yaml.safe_load((run_dir / "args.yaml").read_text())
    ck = checkpoint_dir(run_dir)
    ck_config = json.loads((ck / "config.json").read_text())
    save_adapters = bool(args_yaml["save_adapters"])
    saved_file = ck / ("lora.safetensors" if save_adapters else "consolidated.safetensors")
    saved = load_file(str(saved_file))
    base_state = load_file(str(base / "model.safetensors"))
    layers = ttt_layers(spec["ttt"])

    from shims import random_codes

    codes = random_codes(REF_CODES_SEED, 1, BASE_CONFIG["n_q"], REF_T, BASE_CONFIG["card"], BASE_CONFIG["text_card"])

    def fresh(**kw):
        return load_port_model(run_dir, base, save_adapters, **kw)

    # ---- what the loader does with the fast weight
    m = fresh()
    loader = {}
    for i in layers:
        g = gating_of(m, i)
        p = f"transformer.layers.{i}.gating"
        lin_out = g.linear_out.weight.detach()
        rec = {
            "loaded.w_down_minus_linear_out_maxabs": maxabs(g.w_down.detach() - lin_out),
            "loaded.w_down_pretrained_minus_w_down_maxabs": maxabs(g.w_down_pretrained - g.w_down.detach()),
            "loaded.w_down_dtype": str(g.w_down.dtype),
        }
        if f"{p}.w_down" in saved:
            rec["file.w_down_minus_loaded_w_down_maxabs"] = maxabs(saved[f"{p}.w_down"] - g.w_down.detach())
            rec["file.w_down_minus_file_linear_out_maxabs"] = maxabs(saved[f"{p}.w_down"] - saved[f"{p}.linear_out.weight"])
        if f"{p}.w_down_pretrained" in saved:
            rec["file.w_down_pretrained_minus_file_w_down_maxabs"] = maxabs(saved[f"{p}.w_down_pretrained"] - saved[f"{p}.w_down"])
            rec["file.w_down_pretrained_minus_loaded_w_down_pretrained_maxabs"] = maxabs(saved[f"{p}.w_down_pretrained"] - g.w_down_pretrained)
        for t in ("conv1d.conv.weight", "W_target.weight"):
            key = f"{p}.target_generator.{t}"
            mod = g.target_generator.conv1d.conv.weight if t.startswith("conv") else g.target_generator.W_target.weight
            rec[f"loaded.target_generator.{t}.fro_norm"] = float(mod.detach().norm())
            if key in saved:
                rec[f"file.target_generator.{t}_minus_loaded_maxabs"] = maxabs(saved[key] - mod.detach())
        loader[f"layer{i}"] = rec
    g0 = gating_of(m, layers[0])
    layer_settings = {
        "ttt_layers": layers,
        "class": type(g0).__name__,
        "chunk_size": g0.chunk_size,
        "ttt_lr": g0.ttt_lr,
        "conv_kernel_size": g0.conv_kernel_size,
        "delta_clip_fro_norm": g0.delta_clip_fro_norm,
        "delta_clip_epsilon": g0.delta_clip_epsilon,
        "hidden": g0.linear_out.in_features,
        "activation": f"{g0.activation.__module__}.{g0.activation.__name__}",
        "activation_is_F_gelu": g0.activation is F.gelu,
        "non_ttt_layer_gating": f"{type(m.transformer.layers[0].gating).__name__} "
                                f"activation {getattr(m.transformer.layers[0].gating.activation, '__name__', '?')}",
        "depformer_has_ttt": any(getattr(l, "use_ttt", False) for l in m.depformer.layers),
    }
    # the activation really used: exact-erf GELU vs tanh GELU vs SiLU on the layer's own gated hidden
    with torch.no_grad():
        x = torch.randn(1, 5, BASE_CONFIG["dim"], generator=torch.Generator().manual_seed(3))
        h = g0.linear_in(x).view(1, 5, 2, -1)
        z_layer = g0.activation(h[..., 0, :]) * h[..., 1, :]
        act_check = {
            "vs_gelu_erf": maxabs(z_layer - F.gelu(h[..., 0, :]) * h[..., 1, :]),
            "vs_gelu_tanh": maxabs(z_layer - F.gelu(h[..., 0, :], approximate="tanh") * h[..., 1, :]),
            "vs_silu": maxabs(z_layer - F.silu(h[..., 0, :]) * h[..., 1, :]),
        }
    layer_settings["activation_check_maxabs"] = act_check

    # ---- the reference tensors
    out = forward_train_mode(m, codes)
    out2 = forward_train_mode(fresh(), codes)
    text_loss, audio_loss = port_losses(m, codes, out, args_yaml)
    w_before = {i: gating_of(m, i).w_down.detach().clone() for i in layers}

    me = fresh()
    w_e0 = {i: gating_of(me, i).w_down.detach().clone() for i in layers}
    ev = forward_eval_mode(me, codes)
    eval_w_change = {f"layer{i}": maxabs(gating_of(me, i).w_down.detach() - w_e0[i]) for i in layers}

    ms = fresh()
    w_s0 = {i: gating_of(ms, i).w_down.detach().clone() for i in layers}
    s_logits, s_mask, s_text, s_text_mask = forward_streaming(ms, codes)
    stream_w_change = {f"layer{i}": maxabs(gating_of(ms, i).w_down.detach() - w_s0[i]) for i in layers}
    stream_buffered = {f"layer{i}": int(gating_of(ms, i)._inference_z_buffer.shape[1])
                       if gating_of(ms, i)._inference_z_buffer is not None else 0 for i in layers}

    nu = forward_train_mode(fresh(ttt_overrides={"learning_rate": 0.0}), codes)

    # fp32 noise: the same load in float64 (the port's _parallel_ttt_update still runs in float32)
    out64 = forward_train_mode(fresh(dtype=torch.float64), codes)

    # the update's effect across TTT learning rates (train-mode forward, same weights)
    sweep = []
    for lr in LR_SWEEP:
        o = forward_train_mode(fresh(ttt_overrides={"learning_rate": lr}), codes)
        sweep.append({
            "learning_rate": lr,
            "logits_maxabs_vs_lr0": maxabs_masked(o.logits, nu.logits, out.mask),
            "text_logits_maxabs_vs_lr0": maxabs_masked(o.text_logits, nu.text_logits),
        })

    ref = {
        "codes": codes.contiguous(),
        "logits": out.logits.float().contiguous(),
        "mask": out.mask.contiguous(),
        "text_logits": out.text_logits.float().contiguous(),
        "text_mask": out.text_mask.contiguous(),
        "loss.text": text_loss.detach().float().reshape(1),
        "loss.audio": audio_loss.detach().float().reshape(1),
        "eval.logits": ev.logits.float().contiguous(),
        "eval.text_logits": ev.text_logits.float().contiguous(),
        "stream.logits": s_logits.float().contiguous(),
        "stream.text_logits": s_text.float().contiguous(),
        "noupdate.logits": nu.logits.float().contiguous(),
        "noupdate.text_logits": nu.text_logits.float().contiguous(),
    }
    case_dir.mkdir(parents=True, exist_ok=True)
    save_file(ref, str(case_dir / "ref.safetensors"))

    L, TL = maxabs(out.logits, out.mask), maxabs(out.text_logits)
    figures = {
        "max_abs.logits": L,
        "max_abs.text_logits": TL,
        "update_effect.logits_maxabs (logits vs noupdate.logits)": maxabs_masked(out.logits, nu.logits, out.mask),
        "update_effect.text_logits_maxabs": maxabs_masked(out.text_logits, nu.text_logits),
        "eval_vs_train.logits_maxabs (eval.logits vs logits)": maxabs_masked(ev.logits, out.logits, out.mask),
        "eval_vs_noupdate.logits_maxabs": maxabs_masked(ev.logits, nu.logits, out.mask),
        "stream_vs_eval.logits_maxabs": maxabs_masked(s_logits, ev.logits, out.mask),
        "stream_vs_eval.text_logits_maxabs": maxabs_masked(s_text, ev.text_logits),
        "stream_vs_train.logits_maxabs": maxabs_masked(s_logits, out.logits, out.mask),
        "stream_vs_train.text_logits_maxabs": maxabs_masked(s_text, out.text_logits),
        "masks_equal(stream, full)": bool(torch.equal(s_mask, out.mask) and torch.equal(s_text_mask, out.text_mask)),
        "repeat_run.logits_maxabs (two fresh loads, train-mode forward)": maxabs_masked(out2.logits, out.logits, out.mask),
        "fp64_load_vs_fp32.logits_maxabs": maxabs_masked(out64.logits.float(), out.logits, out.mask),
        "fp64_load_vs_fp32.text_logits_maxabs": maxabs_masked(out64.text_logits.float(), out.text_logits),
        "fp64_load_vs_fp32.logits_rel (of max|logits|)": maxabs_masked(out64.logits.float(), out.logits, out.mask) / L,
        "train_mode_forward_changes_w_down": any(maxabs(gating_of(m, i).w_down.detach() - w_before[i]) > 0 for i in layers),
        "eval_forward_w_down_change_maxabs (w_down.data after eval forward - before)": eval_w_change,
        "stream_w_down_change_maxabs (after T frames - before)": stream_w_change,
        "stream_tokens_left_in_buffer": stream_buffered,
        "lr_sweep": sweep,
    }
    # The effect is linear in lr once it is above fp32 noise: slope from lr 1e2..1e4, extrapolated to this lr.
    pts = [r for r in sweep if 1e2 <= r["learning_rate"] <= 1e4]
    slope = sum(r["logits_maxabs_vs_lr0"] / r["learning_rate"] for r in pts) / len(pts)
    figures["lr_sweep_slope (logits maxabs per unit lr, lr 1e2..1e4)"] = slope
    figures["update_effect_extrapolated_at_this_lr (slope * lr; below fp32 noise when < ~1e-6)"] = slope * layer_settings["ttt_lr"]

    saved_keys = sorted(saved.keys())
    base_keys = set(base_state.keys())
    saved_summary = {
        "file": str(saved_file.relative_to(case_dir)),
        "n_tensors": len(saved_keys),
        "keys_not_in_base": [k for k in saved_keys if k not in base_keys],
        "n_keys_also_in_base": sum(1 for k in saved_keys if k in base_keys),
        "dtypes": sorted({str(v.dtype) for v in saved.values()}),
    }
    if save_adapters:
        saved_summary["keys"] = saved_keys
        saved_summary["has_w_down"] = any(k.endswith(".w_down") for k in saved_keys)
        saved_summary["only_target_generator"] = all(".target_generator." in k for k in saved_keys)

    behaviours = port_behaviours(case, figures, layer_settings, loader, saved_summary, save_adapters)
    meta = {
        "case": case,
        "about": spec["about"],
        "port": {"repo": "AlufRon/moshi_in_place", "commit": commit,
                 "model_code": "moshi/moshi/moshi/modules/ttt_module.py (TTTGating), modules/transformer.py, models/lm.py, models/loaders.py",
                 "train_code": "moshi-finetune/train.py (train.train -> _train), finetune/wrapped_model.py get_fsdp_model, finetune/checkpointing.py Checkpointer, finetune/loss.py compute_loss_with_mask"},
        "shims": __import__("shims").SHIMS,
        "training": {**TRAIN, "duration_sec": DURATION_SEC,
                     "frames_per_step": math.ceil(DURATION_SEC * 12.5), "param_dtype": "float32",
                     "save_adapters": save_adapters,
                     "removed_from_run_dir": ["tb/ (tensorboard event files)", "metrics.train.jsonl (wall-clock timings)"],
                     "optimizer_state": "not written by the port's Checkpointer (nothing dropped)"},
        "ttt_config.config.json": ck_config.get("ttt_config"),
        "ttt_section.args.yaml": args_yaml.get("ttt"),
        "ttt_layer_settings (read from the built TTTGating)": layer_settings,
        "loader": {
            "how": ("run_inference with --lora-weights: get_moshi_lm(base) -> w_down <- linear_out (float32), "
                    "w_down_pretrained <- w_down, target_generator N(0,1e-4) (meta), then "
                    "load_state_dict(lora.safetensors, strict=False)") if save_adapters else
                   ("run_inference --moshi-weight consolidated.safetensors --config consolidated/config.json: "
                    "get_moshi_lm loads every tensor (assign=True, strict=False), w_down is not meta so it is kept, "
                    "then w_down_pretrained <- w_down (the file's w_down_pretrained, = base linear_out, is overwritten)"),
            "per_layer": loader,
        },
        "saved_checkpoint": saved_summary,
        "ref_codes": {"seed": REF_CODES_SEED, "shape": list(codes.shape), "T": REF_T,
                      "chunks": [min(4, REF_T - s) for s in range(0, REF_T, 4)]},
        "tensors": {
            "codes": "int64 [B, 1 + n_q, T]: LMModel.forward input (text stream first); shims.random_codes(REF_CODES_SEED=778, ...)",
            "logits / mask / text_logits / text_mask": "LMModel.forward(codes) with model.train() under no_grad: "
                "TTTGating._parallel_ttt_update (the update applied chunk by chunk); logits NaN where mask is false",
            "loss.text / loss.audio": "finetune.loss.compute_loss_with_mask on those outputs, arguments as train.py "
                "passes them (text_padding_weight, text_padding_ids {3, 0}, first_codebook_weight_multiplier); shape [1]",
            "eval.logits / eval.text_logits": "LMModel.forward(codes) on the model as get_moshi returns it (eval): "
                "TTTGating._ttt_forward_inference, every token uses the loaded w_down (no update in the outputs)",
            "stream.logits / stream.text_logits": forward_streaming.__doc__.strip(),
            "noupdate.logits / noupdate.text_logits": "as logits, with ttt_config.learning_rate 0 "
                "(lm_kwargs_overrides through get_moshi): W_eff = w_down for every chunk",
        },
        "figures": figures,
        "port_behaviours": behaviours,
        **extra,
    }
    (case_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return meta


def port_behaviours(case, f, ls, loader, saved, save_adapters) -> list[str]:
    """What this case shows about the port, with its own figures (see also tests/data/inplace_runs/README.md)."""
    l1 = loader[f"layer{ls['ttt_layers'][0]}"]
    out = [
        f"activation: TTTGating gets the layer's default F.gelu (exact erf) although the model's gating is "
        f"'silu': |Z - gelu_erf| = {ls['activation_check_maxabs']['vs_gelu_erf']:.1e}, |Z - gelu_tanh| = "
        f"{ls['activation_check_maxabs']['vs_gelu_tanh']:.1e}, |Z - silu| = {ls['activation_check_maxabs']['vs_silu']:.2f} "
        f"(random input); the non-TTT layers use {ls['non_ttt_layer_gating']}",
        f"update clip: delta_clip_fro_norm = {ls['delta_clip_fro_norm']} (TTTGating default). train.py and "
        "get_fsdp_model build ttt_config without it, so args.yaml's ttt.delta_clip_fro_norm never reaches the "
        "model and config.json's ttt_config has no clip key",
        "eval-mode LMModel.forward (the model as get_moshi returns it) applies no fast-weight update to its outputs "
        f"(eval.logits vs noupdate.logits: {f['eval_vs_noupdate.logits_maxabs']:.1e}) and then writes the complete "
        f"chunks' update into w_down.data (change {max(f['eval_forward_w_down_change_maxabs (w_down.data after eval forward - before)'].values()):.2e}); "
        "with B > 1 and T >= chunk_size it raises ValueError (batch 1 only), hence B = 1 in every reference",
        "streaming: each frame's target V_hat is the conv over that frame alone (its 'next token' tap sees a zero), the "
        "update lands in w_down.data after every complete chunk, and the last T mod chunk_size frames stay buffered "
        f"({max(f['stream_tokens_left_in_buffer'].values())} here) until flush_ttt_buffers(); stream vs train-mode "
        f"logits: {f['stream_vs_train.logits_maxabs']:.2e}",
        f"fp32 noise floor: float64 load vs float32 = {f['fp64_load_vs_fp32.logits_maxabs']:.1e} "
        f"({f['fp64_load_vs_fp32.logits_rel (of max|logits|)']:.1e} of max|logits|; the port's "
        "_parallel_ttt_update runs in float32 either way)",
        f"update effect at this lr ({ls['ttt_lr']}): logits vs noupdate {f['update_effect.logits_maxabs (logits vs noupdate.logits)']:.2e}; "
        f"linear in lr above the noise (slope {f['lr_sweep_slope (logits maxabs per unit lr, lr 1e2..1e4)']:.2e} per unit lr), "
        f"so the real effect is ~{f['update_effect_extrapolated_at_this_lr (slope * lr; below fp32 noise when < ~1e-6)']:.1e}",
    ]
    if save_adapters:
        out.append(f"adapter file ({saved['file']}): {saved['n_tensors']} tensors, only target_generator: "
                   f"{saved['only_target_generator']}, w_down saved: {saved['has_w_down']}; the loader sets "
                   f"w_down <- base linear_out (|w_down - linear_out| = {l1['loaded.w_down_minus_linear_out_maxabs']:.1e}): "
                   "the trained w_down is lost (see vs_inplace_default)")
    else:
        out.append("merged checkpoint: the file's w_down is the trained one (|w_down - linear_out| = "
                   f"{l1['file.w_down_minus_file_linear_out_maxabs']:.2e}) and its w_down_pretrained is still the base "
                   "linear_out; the loader overwrites w_down_pretrained with w_down "
                   f"(|file w_down_pretrained - loaded| = {l1['file.w_down_pretrained_minus_loaded_w_down_pretrained_maxabs']:.2e}), "
                   "so reset_ttt_state() returns to the trained w_down")
    if case == "inplace_zero":
        out.append("zero target generator stays exactly zero through training (conv and W_target Frobenius norms "
                   f"{l1['loaded.target_generator.conv1d.conv.weight.fro_norm']} / {l1['loaded.target_generator.W_target.weight.fro_norm']}: "
                   "V_hat = 0 makes both gradients 0) and the update is exactly inert "
                   f"(logits vs noupdate {f['update_effect.logits_maxabs (logits vs noupdate.logits)']})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--case", action="append", default=None)
    ap.add_argument("--commit", default="d2e9475")
    a = ap.parse_args()
    port, out = a.port.resolve(), a.out.resolve()
    sys.path[:0] = [str(port / "moshi" / "moshi"), str(port / "moshi-finetune"), str(HERE)]
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    work = (a.work or Path(tempfile.gettempdir()) / "mtt-inplace-refs").resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = out / "base"
    build_base(base)
    for case in a.case or list(CASES):
        spec = dict(CASES[case])
        log(f"{case}: training with the port's train.py")
        case_dir = out / case
        train_case(port, case, spec, case_dir, base, work)
        extra = {}
        if spec.get("zero_keys"):
            extra["zero_init_from"] = {"moshi_path": str(work / "base_tg0" / "model.safetensors"),
                                       "zero_tensors": spec["zero_keys"]}
        log(f"{case}: references")
        meta = compute_refs(port, case, spec, case_dir, base, a.commit, extra)
        f = meta["figures"]
        log(f"{case}: update effect {f['update_effect.logits_maxabs (logits vs noupdate.logits)']:.3e}, "
            f"max|logits| {f['max_abs.logits']:.3f}, fp64 diff {f['fp64_load_vs_fp32.logits_maxabs']:.2e}")
    compare_adapters_with_default(out)


def compare_adapters_with_default(out: Path) -> None:
    """inplace_adapters trains exactly as inplace_default (same seeds and settings) and differs only in
    save_adapters: what the adapter file keeps and what the port's loader then runs."""
    import torch
    from safetensors.torch import load_file

    a_dir, d_dir = out / "inplace_adapters", out / "inplace_default"
    if not (a_dir / "meta.json").exists() or not (d_dir / "meta.json").exists():
        return
    a_file = load_file(str(checkpoint_dir(a_dir / "run") / "lora.safetensors"))
    d_file = load_file(str(checkpoint_dir(d_dir / "run") / "consolidated.safetensors"))
    a_ref, d_ref = load_file(str(a_dir / "ref.safetensors")), load_file(str(d_dir / "ref.safetensors"))
    cmp = {"adapter_tensors_equal_default_consolidated": {
        k: bool(torch.equal(v, d_file[k])) for k, v in sorted(a_file.items())}}
    for k in sorted(d_file):
        if k.endswith(".w_down"):
            lo = d_file[k.replace(".w_down", ".linear_out.weight")]
            cmp[f"trained {k} - linear_out (maxabs, Frobenius), in default's consolidated"] = [
                maxabs(d_file[k] - lo), float((d_file[k] - lo).norm())]
    m = d_ref["mask"]
    cmp["logits maxabs (adapters ref vs default ref): what losing w_down changes"] = maxabs_masked(
        a_ref["logits"], d_ref["logits"], m)
    cmp["text_logits maxabs (adapters vs default)"] = maxabs_masked(a_ref["text_logits"], d_ref["text_logits"])
    meta = json.loads((a_dir / "meta.json").read_text())
    meta["vs_inplace_default"] = cmp
    (a_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
