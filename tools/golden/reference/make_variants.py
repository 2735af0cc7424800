#!/usr/bin/env python3
"""Golden files of every TTT reference family on other seeds and odd shapes, produced by running
the public reference code itself (the repositories @ commits of shared/golden/README.md), in the
shared/golden format (in.* / params F32, cot.G, out.* F64, out_f32.* F32, grad.* F64, grad_f32.* F32,
string metadata with the same keys as the visible set).

This is test-data tooling, not part of the product: it imports third-party reference code from
checkouts given on the command line and writes the files that tests/fixtures/golden_variants holds.

  python make_variants.py --vdit DIR --lmpt DIR --fork DIR --inplace DIR --out OUTDIR

DIR = a checkout (or `git archive`) of, respectively:
  test-time-training/ttt-video-dit @ 6c316a70e354eec671d35c2177f0439577c8c0de
  test-time-training/ttt-lm-pytorch @ cd831db10c8c9a0f6340f02da5613316a8a92b67
  AlufRon/claude-web @ f5e977ac4b24571499fe37a6eae11e7fc6d9f83e (folder moshi_ttt_try/moshi-finetune)
  AlufRon/moshi_in_place @ d2e94758115e63793bd12c8e4149c837895fc2f8 (folder moshi/moshi)
Needs torch, numpy, safetensors and einops (the VDIT code imports it).

Imports the references need but never use on these paths are replaced by inert modules (wandb,
tqdm, transformers' PretrainedConfig, the GPU kernel wrappers, the fork's module-level Moshi
imports); torch.compile / torch.compiler.disable become identity decorators.
"""
import argparse
import json
import os
import sys
import types

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SHIMMED = "torch.compile/torch.compiler.disable -> identity; wandb, tqdm, transformers (PretrainedConfig), GPU kernel wrappers (TkMLP, TritonLinear) and the fork's module-level Moshi imports -> inert modules"


# ---------------------------------------------------------------- shims
def _identity_decorator(fn=None, *a, **k):
    if fn is None or not callable(fn):
        return lambda f: f
    return fn


def install_shims():
    import torch.utils.checkpoint  # noqa: F401  (VDIT relies on another module having imported it)
    import torch._dynamo  # noqa: F401  (before the stubs: dynamo probes module specs on import)
    torch.compile = _identity_decorator
    torch.compiler.disable = _identity_decorator

    def stub(name, **attrs):
        import importlib.machinery
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class _Any:
        def __init__(self, *a, **k):
            pass

        def __call__(self, *a, **k):
            return self

        def __getattr__(self, n):
            return _Any()

    def missing(name):
        import importlib.util
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    if missing("wandb"):
        stub("wandb", init=_Any(), log=_Any(), Image=_Any)

    class _Kernel(torch.autograd.Function):  # never called: use_kernel=False
        sharded_mode = False

    # GPU kernel wrappers (ThunderKittens / Triton): imported at module level, never called here.
    for pkg in ("ttt.models.ssm", "moshi_ttt.models.ssm"):
        stub(pkg + ".linear_triton", TritonLinear=_Kernel)
        stub(pkg + ".mlp_tk", TkMLP=_Kernel)
    if missing("tqdm"):
        stub("tqdm", tqdm=lambda x=None, *a, **k: x)

    class PretrainedConfig:
        def __init__(self, **kwargs):
            for k, v in kwargs.items():
                setattr(self, k, v)

    class _Logger:
        def __getattr__(self, n):
            return lambda *a, **k: None

    stub("transformers", PretrainedConfig=PretrainedConfig)
    stub("transformers.activations", ACT2FN={})
    stub("transformers.modeling_outputs", BaseModelOutputWithPast=object, CausalLMOutputWithPast=object)
    stub("transformers.modeling_utils", PreTrainedModel=torch.nn.Module)
    stub("transformers.utils", ModelOutput=object, logging=types.SimpleNamespace(get_logger=lambda *a: _Logger()))
    stub("transformers.utils.import_utils", is_causal_conv1d_available=lambda: False)


# ---------------------------------------------------------------- file writer
def rel_err(a, ref):
    ref = ref.double()
    d = (a.double() - ref).abs().max().item() if ref.numel() else 0.0
    s = ref.abs().max().item() if ref.numel() else 0.0
    return d, (d / s if s > 0 else d), s


def run_both(run, inputs):
    """run(leaves: dict name->tensor (dtype), dtype) -> (outs: dict, main: tensor or list of (main, cot_key)).
    inputs: dict of F32 tensors to become leaves (names as in the file). Returns per dtype outs and grads."""
    res = {}
    for dt in (torch.float64, torch.float32):
        leaves = {k: v.detach().to(dt).clone().requires_grad_(True) for k, v in inputs.items()}
        outs, loss = run(leaves, dt)
        names = list(leaves)
        grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
        gd = {}
        for n, g in zip(names, grads):
            gd[n] = (g if g is not None else torch.zeros_like(leaves[n])).detach()
        res[dt] = ({k: v.detach() for k, v in outs.items()}, gd)
    return res


def grad_name(leaf_name):
    return leaf_name[3:] if leaf_name.startswith("in.") else leaf_name


def write(path, meta, stored, res, grad_map=grad_name, sensitivity=None):
    """stored: F32 tensors written as they are (inputs, params, cot.G)."""
    t = {k: v.detach().float().contiguous() for k, v in stored.items()}
    (o64, g64), (o32, g32) = res[torch.float64], res[torch.float32]
    fp = {}
    for k in o64:
        t["out." + k] = o64[k].double().contiguous()
        t["out_f32." + k] = o32[k].float().contiguous()
        d, r, s = rel_err(o32[k], o64[k])
        fp["out." + k] = {"max_abs": d, "max_rel_to_maxabs": r, "ref_max_abs": s}
    for k in g64:
        n = grad_map(k)
        if n is None:
            continue
        t["grad." + n] = g64[k].double().contiguous()
        t["grad_f32." + n] = g32[k].float().contiguous()
        d, r, s = rel_err(g32[k], g64[k])
        fp["grad." + n] = {"max_abs": d, "max_rel_to_maxabs": r, "ref_max_abs": s}
    m = dict(meta)
    m["generator"] = "tools/golden/reference/make_variants.py: the reference code executed on torch " + torch.__version__ + " (CPU); " + SHIMMED
    m["dtypes"] = "inputs/parameters/cotangent F32 (exactly representable in both runs); out.*/grad.* F64 from the float64 run; out_f32.*/grad_f32.* F32 from the float32 run on the same F32 inputs"
    m["set"] = "variants"
    m["fp32_vs_fp64"] = json.dumps(fp)
    if sensitivity is not None:
        m.setdefault("inner_loop_sensitivity", sensitivity)
    m = {k: str(v) for k, v in m.items()}
    save_file(t, path, metadata=m)
    worst_o = max((v["max_rel_to_maxabs"] for k, v in fp.items() if k.startswith("out.")), default=0)
    worst_g = max((v["max_rel_to_maxabs"] for k, v in fp.items() if k.startswith("grad.")), default=0)
    print(f"{os.path.basename(path)}: {len(t)} tensors, fp32 vs fp64 out {worst_o:.2e} grad {worst_g:.2e}")


def gen(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda *shape, std=1.0, mean=0.0: (torch.randn(*shape, generator=g) * std + mean)


def unif(seed):
    g = torch.Generator().manual_seed(seed + 7777)
    return lambda *shape: torch.rand(*shape, generator=g)


# ---------------------------------------------------------------- VDIT
VDIT_COMMIT = "test-time-training/ttt-video-dit@6c316a70e354eec671d35c2177f0439577c8c0de"


def vdit_op(out, mlp, general, seed, B, H, NC, b, d, cgs, base_lr):
    from ttt.models.ssm.ops import ttt_linear as op_lin_mod  # noqa
    from ttt.models.ssm.ops.ttt_linear import ttt_linear, compute_mini_batch as cmb_lin
    from ttt.models.ssm.ops.ttt_mlp import ttt_mlp, compute_mini_batch as cmb_mlp
    from ttt.models.ssm.utils import scan
    from torch.utils._pytree import tree_map

    r, u = gen(seed), unif(seed)
    h = 4 * d
    XQ = F.normalize(r(B, H, NC, b, d), dim=-1)
    XK = F.normalize(r(B, H, NC, b, d), dim=-1)
    XV = r(B, H, NC, b, d) * 0.5 + XK
    if general:
        eta = base_lr * u(B, H, NC, b, b) / (d * b)
        eta_mode, eta_cons = "general", "eta = base_lr * U(0,1) / (d*b), rows differ"
    else:
        s = r(B, H, NC, 1, b)
        eta = (1.0 / b) * base_lr * torch.sigmoid(s) / d
        eta = eta.expand(B, H, NC, b, b).contiguous()
        eta_mode, eta_cons = "vdit", "eta = (1/b) * base_lr * sigmoid(s_j) / d, identical rows (VDIT get_eta form)"
    inp = {"in.XQ": XQ, "in.XK": XK, "in.XV": XV, "in.eta": eta,
           "in.ttt_norm_weight": 1 + 0.2 * r(H, d), "in.ttt_norm_bias": 0.1 * r(H, d)}
    if mlp:
        inp.update({"in.W1": 0.3 * r(B, H, d, h), "in.b1": 0.1 * r(B, H, 1, h),
                    "in.W2": 0.15 * r(B, H, h, d), "in.b2": 0.1 * r(B, H, 1, d)})
    else:
        inp.update({"in.W1": 0.3 * r(B, H, d, d), "in.b1": 0.1 * r(B, H, 1, d)})
    G = r(B, NC, b, H, d)

    def run(L, dt, eta_scale=1.0):
        a = lambda k: L["in." + k]
        e = a("eta") * eta_scale
        if mlp:
            y = ttt_mlp(a("XK"), a("XQ"), a("XV"), e, a("ttt_norm_weight"), a("ttt_norm_bias"),
                        a("W1"), a("b1"), a("W2"), a("b2"), cgs)
            init = {"W1_states": a("W1"), "b1_states": a("b1"), "W2_states": a("W2"), "b2_states": a("b2"),
                    "ttt_norm_weight": a("ttt_norm_weight"), "ttt_norm_bias": a("ttt_norm_bias")}
            cmb = cmb_mlp
        else:
            y = ttt_linear(a("XK"), a("XQ"), a("XV"), e, a("ttt_norm_weight"), a("ttt_norm_bias"),
                           a("W1"), a("b1"), cgs)
            init = {"W1_states": a("W1"), "b1_states": a("b1"),
                    "ttt_norm_weight": a("ttt_norm_weight"), "ttt_norm_bias": a("ttt_norm_bias")}
            cmb = cmb_lin
        xs = tree_map(lambda x: x.permute(2, 0, 1, 3, 4), {"XK": a("XK"), "XQ": a("XQ"), "XV": a("XV"), "eta": e})
        carry, _ = scan(cmb, init, xs, 0)
        outs = {"XQW": y}
        names = ["W1", "b1", "W2", "b2"] if mlp else ["W1", "b1"]
        for n in names:
            outs["final_" + n] = carry[n + "_states"]
        return outs, (y * G.to(dt)).sum()

    with torch.no_grad():
        y = run({k: v.double() for k, v in inp.items()}, torch.float64)[0]["XQW"]
        y0 = run({k: v.double() for k, v in inp.items()}, torch.float64, 0.0)[0]["XQW"]
        sens = f"||XQW(eta)-XQW(eta=0)||/||XQW|| = {((y - y0).norm() / y.norm()).item():.4f}"
    res = run_both(run, inp)
    kind = "mlp" if mlp else "linear"
    name = f"vdit_ttt_{kind}_op" + ("_general_eta" if general else "") + "_odd"
    call = (f"ttt_mlp(XK, XQ, XV, eta, ttt_norm_weight, ttt_norm_bias, W1, b1, W2, b2, checkpoint_group_size={cgs})" if mlp
            else f"ttt_linear(XK, XQ, XV, eta, ttt_norm_weight, ttt_norm_bias, W1, b1, checkpoint_group_size={cgs})")
    meta = {
        "case": name,
        "reference": f"{VDIT_COMMIT}:ttt/models/ssm/ops/ttt_{kind}.py ttt_{kind}() (compute_mini_batch + ttt/models/ssm/utils.py scan)",
        "call": call,
        "shapes": f"B={B} H={H} NC={NC} b={b} d={d}" + (f" h=4d={h}" if mlp else ""),
        "layout": "XQ/XK/XV [B,H,NC,b,d]; eta [B,H,NC,b,b]; states per batch element [B,H,...]; out.XQW [B,NC,b,H,d] (as returned: permute(1,0,3,2,4) of the scan output)",
        "eta_mode": eta_mode, "eta_construction": eta_cons, "base_lr": base_lr,
        "inner_ln_eps": "1e-8 (VDIT ops/utils.py ln_fwd / ln_fused_l2_bwd)",
        "final_states": f"out.final_* = carry of the same reference scan (ttt_{kind} itself discards it)",
        "loss_for_grads": "sum(out.XQW * cot.G); grads w.r.t. every in.* tensor",
        "seed": seed,
    }
    write(os.path.join(out, name + ".safetensors"), meta, {**inp, "cot.G": G}, res, sensitivity=sens)


def vdit_layer(out, mlp, rope, seed, B, L, D, H, b, base_lr, cgs):
    from ttt.models.configs import ModelConfig
    from ttt.models.ssm import ttt_layer as tl
    from ttt.models.cogvideo.utils import SequenceMetadata

    torch.manual_seed(seed)
    kind = "ttt_mlp" if mlp else "ttt_linear"
    cfg = ModelConfig(model_dim=D, num_heads=H, num_layers=1, ssm_layer=kind, mini_batch_size=b, ttt_base_lr=base_lr,
                      scan_checkpoint_group_size=cgs, latent_height=1, latent_width=1,
                      compressed_num_frames=L, rope_theta=10000)
    w = tl.TTTWrapper(cfg)
    w.ttt.use_kernel = False
    if not rope:
        w.freqs_cis = torch.ones(L, D // H // 2, dtype=torch.complex64)
    r = gen(seed)
    d = D // H
    with torch.no_grad():
        t = w.ttt
        t.ttt_norm_weight.copy_(1 + 0.2 * r(H, d))
        t.ttt_norm_bias.copy_(0.1 * r(H, d))
        t.learnable_ttt_lr_weight.copy_(0.3 * r(*t.learnable_ttt_lr_weight.shape))
        t.learnable_ttt_lr_bias.copy_(0.5 * r(*t.learnable_ttt_lr_bias.shape))
        t.post_norm.weight.copy_(1 + 0.2 * r(D))
        t.post_norm.bias.copy_(0.1 * r(D))
        t.W1.copy_(0.3 * r(*t.W1.shape))
        t.b1.copy_(0.1 * r(*t.b1.shape))
        if mlp:
            t.W2.copy_(0.15 * r(*t.W2.shape))
            t.b2.copy_(0.1 * r(*t.b2.shape))
    x = r(B, L, D)
    G = r(B, L, D)
    sd = {"ttt." + k[len("ttt."):] if k.startswith("ttt.") else k: v for k, v in w.state_dict().items()}
    params = {k: v.float().clone() for k, v in sd.items() if k.startswith("ttt.")}
    md = SequenceMetadata(text_length=0, seq_text_length=0, num_frames=L, num_chunks=1, tokens_per_frame=1,
                          latent_height=1, latent_width=1, t_emb=None)

    def run(Lv, dt, zero_eta=False):
        w2 = tl.TTTWrapper(cfg)
        w2.ttt.use_kernel = False
        w2 = w2.to(dt)
        # Module.to(float64) would cast the complex64 buffer to a real one (dropping the imaginary
        # part); the reference keeps freqs_cis complex64 in every run.
        w2.freqs_cis = (w.freqs_cis if rope else torch.ones(L, D // H // 2, dtype=torch.complex64)).clone()
        # parameters as leaves
        for k in params:
            mod, pname = w2, k.split(".")
            for p in pname[:-1]:
                mod = getattr(mod, p)
            delattr(mod, pname[-1])
            setattr(mod, pname[-1], Lv[k])
        cap = {}
        orig = w2.ttt.process_input

        def pi(*a, **k):
            d_ = orig(*a, **k)
            cap.update(d_)
            if zero_eta:
                d_["eta"] = d_["eta"] * 0
            return d_
        w2.ttt.process_input = pi
        orig_ttt = w2.ttt.ttt

        def tt(inputs):
            y = orig_ttt(inputs)
            cap["XQW"] = y
            return y
        w2.ttt.ttt = tt
        y = w2(Lv["in.x"], md)
        outs = {"y": y, "XQW": cap["XQW"], "proc_XQ": cap["XQ"], "proc_XK": cap["XK"], "proc_XV": cap["XV"],
                "proc_eta": cap["eta"]}
        return outs, (y * G.to(dt)).sum()

    inp = {"in.x": x, **params}
    with torch.no_grad():
        y = run({k: v.double() for k, v in inp.items()}, torch.float64)[0]["y"]
        y0 = run({k: v.double() for k, v in inp.items()}, torch.float64, True)[0]["y"]
        sens = f"||y - y(eta=0)||/||y|| = {((y - y0).norm() / y.norm()).item():.4f}"
    res = run_both(run, inp)
    name = f"vdit_{kind}_layer_" + ("rope1d" if rope else "norope") + "_odd"
    rope_txt = ("3-D RoPE with a 1x1 spatial grid and L frames (seq_text_length=0): token t rotates the first d/4 channels by t*theta^(-2i/(d/4)) as adjacent pairs (2i,2i+1); the h/w bands rotate by angle 0. Reference computes RoPE in complex64 (x.float()), even in the fp64 run."
                if rope else "disabled: freqs_cis buffer replaced by 1+0j (identity rotation) because the code has no RoPE switch and an all-text sequence (seq_text_length=L) crashes in apply_rotary_emb on the empty video slice; XQ/XK still pass through the reference's complex64 cast (x.float()), also in the fp64 run")
    meta = {
        "case": name,
        "reference": f"{VDIT_COMMIT}:ttt/models/ssm/ttt_layer.py TTTWrapper.forward -> TTTBase.forward (process_input, {kind} op, post_norm, wo)",
        "config": f"ModelConfig(model_dim={D}, num_heads={H}, ssm_layer={kind}, mini_batch_size={b}, ttt_base_lr={base_lr}, scan_checkpoint_group_size={cgs}, latent_height=1, latent_width=1, compressed_num_frames={L}, rope_theta=10000); ttt.use_kernel=False",
        "shapes": f"B={B} L={L} D={D} H={H} d={d} b={b} NC={L // b}",
        "rope": rope_txt,
        "params": "stored under TTTWrapper.state_dict() names (ttt.wq.weight, ..., ttt.W1, ...); wq..wo = PyTorch default init from the constructor (torch.manual_seed(seed)); the other parameters are overwritten with random values so that each matters",
        "loss_for_grads": "sum(out.y * cot.G); grads w.r.t. in.x and every parameter (grad.<state_dict name>)",
        "intermediates": "out.proc_XQ/proc_XK/proc_XV [B,H,NC,b,d] and out.proc_eta [B,H,NC,b,b] = dict returned by TTTBase.process_input; out.XQW [B,L,D] = op output before post_norm/wo",
        "seed": seed,
    }
    write(os.path.join(out, name + ".safetensors"), meta, {**inp, "cot.G": G}, res, sensitivity=sens)


# ---------------------------------------------------------------- LMPT
LMPT_COMMIT = "test-time-training/ttt-lm-pytorch@cd831db10c8c9a0f6340f02da5613316a8a92b67"


LMPT_DIR = None


def lmpt_import():
    # LMPT's module is a top-level ttt.py, which would shadow VDIT's `ttt` package: load it by path.
    import importlib.util
    if "lmpt_ttt" in sys.modules:
        return sys.modules["lmpt_ttt"]
    spec = importlib.util.spec_from_file_location("lmpt_ttt", os.path.join(LMPT_DIR, "ttt.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["lmpt_ttt"] = mod
    spec.loader.exec_module(mod)
    return mod


def lmpt_module(mlp, D, H, b, base_lr, theta, seed):
    lm = lmpt_import()
    torch.manual_seed(seed)
    cfg = lm.TTTConfig(hidden_size=D, num_attention_heads=H, mini_batch_size=b, ttt_base_lr=base_lr,
                       ttt_layer_type="mlp" if mlp else "linear", use_gate=False, share_qk=False, pre_conv=False,
                       rope_theta=theta)
    m = (lm.TTTMLP if mlp else lm.TTTLinear)(cfg, layer_idx=0)
    r = gen(seed)
    d = D // H
    with torch.no_grad():
        m.ttt_norm_weight.copy_(1 + 0.2 * r(H, d))
        m.ttt_norm_bias.copy_(0.1 * r(H, d))
        m.learnable_ttt_lr_weight.copy_(0.3 * r(*m.learnable_ttt_lr_weight.shape))
        m.learnable_ttt_lr_bias.copy_(0.5 * r(*m.learnable_ttt_lr_bias.shape))
        m.learnable_token_idx.copy_(0.02 * r(b))
        m.post_norm.weight.copy_(1 + 0.2 * r(D))
        m.post_norm.bias.copy_(0.1 * r(D))
        m.W1.copy_(0.3 * r(*m.W1.shape))
        m.b1.copy_(0.1 * r(*m.b1.shape))
        if mlp:
            m.W2.copy_(0.15 * r(*m.W2.shape))
            m.b2.copy_(0.1 * r(*m.b2.shape))
    return lm, cfg, m, r


def bind(module_factory, params, Lv, dt):
    m = module_factory().to(dt)
    for k in params:
        mod, parts = m, k.split(".")
        for p in parts[:-1]:
            mod = getattr(mod, p)
        delattr(mod, parts[-1])
        setattr(mod, parts[-1], Lv[k])
    return m


def lmpt_dual(out, mlp, seed, B, H, d, b, NC, base_lr):
    D = H * d
    L = NC * b
    lm, cfg, m, r = lmpt_module(mlp, D, H, b, base_lr, 10000.0, seed)
    params = {k: v.detach().float().clone() for k, v in m.named_parameters()
              if not k.split(".")[0] in ("q_proj", "k_proj", "v_proj", "o_proj", "post_norm")}
    inp = {"in.XQ": r(B, H, L, d), "in.XK": r(B, H, L, d), "in.XV": r(B, H, L, d), "in.X": r(B, L, D), **params}
    G = r(B, L, D)

    def factory():
        torch.manual_seed(seed)
        return (lm.TTTMLP if mlp else lm.TTTLinear)(cfg, layer_idx=0)

    def run(Lv, dt, scale=1.0):
        mm = bind(factory, params, Lv, dt)
        ins = {"XQ": Lv["in.XQ"], "XK": Lv["in.XK"], "XV": Lv["in.XV"], "X": Lv["in.X"]}
        ti = mm.get_ttt_inputs(ins, b, None)
        if scale != 1.0:
            ti["eta"] = ti["eta"] * scale
        y, last = mm.ttt(ti, mini_batch_size=b, last_mini_batch_params_dict=None, cache_params=None)
        outs = {"XQW": y, "eta": ti["eta"], "token_eta": ti["token_eta"], "ttt_lr_eta": ti["ttt_lr_eta"]}
        for n in (["W1", "b1", "W2", "b2"] if mlp else ["W1", "b1"]):
            outs["final_" + n] = last[n + "_states"]
        return outs, (y * G.to(dt)).sum()

    with torch.no_grad():
        y = run({k: v.double() for k, v in inp.items()}, torch.float64)[0]["XQW"]
        y0 = run({k: v.double() for k, v in inp.items()}, torch.float64, 1e-30)[0]["XQW"]
        sens = f"||XQW - XQW(eta->0)||/||XQW|| = {((y - y0).norm() / y.norm()).item():.4f}"
    res = run_both(run, inp)
    kind = "mlp" if mlp else "linear"
    cls = "TTTMLP" if mlp else "TTTLinear"
    name = f"lmpt_ttt_{kind}_dual_odd"
    meta = {
        "case": name,
        "reference": f"{LMPT_COMMIT}:ttt.py {cls}.ttt (dual form, use_dual_form=True because cache_params=None) after TTTBase.get_ttt_inputs",
        "call": f"m.ttt(m.get_ttt_inputs({{XQ,XK,XV,X}}, mini_batch_size={b}, None), mini_batch_size={b}, last_mini_batch_params_dict=None, cache_params=None)",
        "config": f"TTTConfig(hidden_size={D}, num_attention_heads={H}, mini_batch_size={b}, ttt_base_lr={base_lr}, ttt_layer_type={kind}, use_gate=False, share_qk=False, pre_conv=False)",
        "shapes": f"B={B} H={H} d={d} D={D} b={b} NC={NC} L={L}",
        "layout": "in.XQ/XK/XV [B,H,L,d] (= projections after RoPE, as TTTBase.forward passes them); in.X [B,L,D] hidden states (only used for the learnable lr gate); out.XQW [B,L,D] (before post_norm/o_proj); out.eta [B,H,NC,b,b] = token_eta*ttt_lr_eta (tril is applied inside the op); out.final_* = final inner states [B,H,...]",
        "token_idx": "buffer token_idx[i] = 1/(i+1), i=0..b-1; learnable_token_idx (stored) is added, then clamp_min(0)",
        "eta_formula": "eta[i,j] = max(0, 1/(i+1)+tau_i) * base_lr * sigmoid(X_j . w_h + c_h) / d",
        "inner_ln_eps": "1e-6 (LMPT ln_fwd / ln_fused_l2_bwd)",
        "loss_for_grads": "sum(out.XQW * cot.G); grads w.r.t. in.* and the stored TTT parameters",
        "seed": seed,
    }
    write(os.path.join(out, name + ".safetensors"), meta, {**inp, "cot.G": G}, res, sensitivity=sens)


def lmpt_layer(out, mlp, seed, B, L, H, d, b, base_lr, theta):
    D = H * d
    lm, cfg, m, r = lmpt_module(mlp, D, H, b, base_lr, theta, seed)
    params = {k: v.detach().float().clone() for k, v in m.named_parameters()}
    inp = {"in.x": r(B, L, D), **params}
    G = r(B, L, D)

    def factory():
        torch.manual_seed(seed)
        return (lm.TTTMLP if mlp else lm.TTTLinear)(cfg, layer_idx=0)

    def run(Lv, dt, zero=False):
        mm = bind(factory, params, Lv, dt)
        if zero:
            orig = mm.get_ttt_inputs

            def gti(*a, **k):
                o = orig(*a, **k)
                o["eta"] = o["eta"] * 0
                return o
            mm.get_ttt_inputs = gti
        pos = torch.arange(L).unsqueeze(0).expand(B, L)
        y = mm(Lv["in.x"], position_ids=pos)
        return {"y": y}, (y * G.to(dt)).sum()

    with torch.no_grad():
        y = run({k: v.double() for k, v in inp.items()}, torch.float64)[0]["y"]
        y0 = run({k: v.double() for k, v in inp.items()}, torch.float64, True)[0]["y"]
        sens = f"||y - y(eta=0)||/||y|| = {((y - y0).norm() / y.norm()).item():.4f}"
    res = run_both(run, inp)
    kind = "mlp" if mlp else "linear"
    cls = "TTTMLP" if mlp else "TTTLinear"
    rem = L % b
    name = f"lmpt_ttt_{kind}_layer" + ("_remainder" if rem else "") + "_odd"
    meta = {
        "case": name,
        "reference": f"{LMPT_COMMIT}:ttt.py {cls}.forward (TTTBase.forward: q/k/v proj, RoPE with position_ids % b, dual-form ttt, post_norm, o_proj)",
        "config": f"TTTConfig(hidden_size={D}, num_attention_heads={H}, mini_batch_size={b}, ttt_base_lr={base_lr}, ttt_layer_type={kind}, use_gate=False, share_qk=False, pre_conv=False, rope_theta={theta})",
        "shapes": f"B={B} L={L} D={D} H={H} d={d} b={b} full_mini_batches={L // b} remainder={rem}",
        "position_ids": "arange(L) for every batch row (RoPE uses position_ids % b; cos/sin built in fp32)",
        "remainder": ("the last L % b tokens are processed by a second dual-form call with mini_batch_size=L%b, token_idx[0:L%b], starting from the final states of the full mini-batches" if rem else "none"),
        "params": "stored under the module's state_dict names (q_proj.weight, ..., learnable_token_idx, W1, ...)",
        "loss_for_grads": "sum(out.y * cot.G); grads w.r.t. in.x and every parameter",
        "seed": seed,
    }
    write(os.path.join(out, name + ".safetensors"), meta, {**inp, "cot.G": G}, res, sensitivity=sens)


# ---------------------------------------------------------------- LN reconstruction target (3 variants)
FORK_COMMIT = "AlufRon/claude-web@f5e977ac4b24571499fe37a6eae11e7fc6d9f83e"


def ln_target(out, seed, B, L, H, d):
    from ttt.models.ssm import ttt_layer as vtl
    import moshi_ttt.ttt_layer as legacy
    import moshi_ttt.models.ssm.ttt_layer as current
    r = gen(seed)
    XV = r(B, L, H, d) + 0.5  # raw projection, non-zero mean
    XK = F.normalize(r(B, L, H, d), dim=-1)
    inp = {"in.XV": XV, "in.XK": XK, "in.ttt_norm_weight": 1 + 0.2 * r(H, d), "in.ttt_norm_bias": 0.1 * r(H, d)}
    G = r(B, L, H, d)
    fns = {"vdit": vtl.TTTBase.ln_reconstruction_target, "fork_legacy": legacy.TTTBase.ln_reconstruction_target,
           "fork_current": current.TTTBase.ln_reconstruction_target}
    res = {torch.float64: ({}, {}), torch.float32: ({}, {})}
    for v, fn in fns.items():
        def run(Lv, dt, fn=fn):
            self_ = types.SimpleNamespace(ttt_norm_weight=Lv["in.ttt_norm_weight"], ttt_norm_bias=Lv["in.ttt_norm_bias"])
            xv = fn(self_, Lv["in.XV"], Lv["in.XK"])
            return {"XV_out": xv, "target": xv - Lv["in.XK"]}, (xv * G.to(dt)).sum()
        rv = run_both(run, inp)
        for dt in rv:
            o, gr = rv[dt]
            res[dt][0].update({v + "." + k: t for k, t in o.items()})
            res[dt][1].update({"in." + v + "." + k[3:]: t for k, t in gr.items()})
    name = "ln_reconstruction_target_odd"
    meta = {
        "case": name,
        "reference.vdit": f"{VDIT_COMMIT}:ttt/models/ssm/ttt_layer.py TTTBase.ln_reconstruction_target (L219-235): D=XV-XK, mean, UNBIASED std, (D-mean)/(std+1e-8), *gamma+beta, returns that + XK",
        "reference.fork_legacy": f"{FORK_COMMIT}:moshi_ttt_try/moshi-finetune/moshi_ttt/ttt_layer.py TTTBase.ln_reconstruction_target (L463-478): F.layer_norm(XV per head, eps 1e-6, biased var) with gamma/beta; XK neither subtracted nor added back (BUGGY)",
        "reference.fork_current": f"{FORK_COMMIT}:moshi_ttt_try/moshi-finetune/moshi_ttt/models/ssm/ttt_layer.py TTTBase.ln_reconstruction_target (L287-297): like VDIT but eps 1e-5",
        "layout": "in.XV, in.XK [B,L,H,d] (XK already L2-normalised); ttt_norm_weight/bias [H,d]; out.<variant>.XV_out = what the method returns; out.<variant>.target = XV_out - XK",
        "shapes": f"B={B} L={L} H={H} d={d}",
        "loss_for_grads": "per variant: sum(out.<variant>.XV_out * cot.G); grads w.r.t. XV, XK, ttt_norm_weight/bias",
        "seed": seed,
    }
    write(os.path.join(out, name + ".safetensors"), meta, {**inp, "cot.G": G}, res)


# ---------------------------------------------------------------- SSM gating (fork clamp vs VDIT)
def ssm_gating(out, seed, B, L, D):
    import moshi_ttt.ssm_gating as fg
    from ttt.models.cogvideo import dit
    r = gen(seed)
    alpha = 0.8 * r(D)
    alpha[0:4] = torch.tensor([0.1, -3.5, 4.0, 3.0])
    if D > 5:
        alpha[4] = -3.0
    inp = {"in.x": r(B, L, D), "gating_alpha": alpha}
    G = r(B, L, D)
    res = {torch.float64: ({}, {}), torch.float32: ({}, {})}

    def mk_fork(dt):
        return fg.SSMGating(types.SimpleNamespace(model_dim=D, gating_alpha_init=0.1)).to(dt)

    def mk_vdit(dt):
        cfg = types.SimpleNamespace(model_dim=D, gating_alpha_init=0.1)
        return dit.SSMGating(cfg).to(dt)

    for v, mk in (("fork", mk_fork), ("vdit", mk_vdit)):
        def run(Lv, dt, mk=mk):
            m = mk(dt)
            del m.gating_alpha
            m.gating_alpha = Lv["gating_alpha"]
            y = m(Lv["in.x"])
            return {"y": y}, (y * G.to(dt)).sum()
        rv = run_both(run, inp)
        for dt in rv:
            o, gr = rv[dt]
            res[dt][0].update({v + "." + k: t for k, t in o.items()})
            res[dt][1].update({"in." + v + "." + grad_name(k): t for k, t in gr.items()})
    name = "ssm_gating_odd"
    meta = {
        "case": name,
        "reference.fork": f"{FORK_COMMIT}:moshi_ttt_try/moshi-finetune/moshi_ttt/ssm_gating.py SSMGating.forward: tanh(clamp(alpha,-3,3)) * x  (the clamp is a fork addition)",
        "reference.vdit": f"{VDIT_COMMIT}:ttt/models/cogvideo/dit.py SSMGating (L90-103): tanh(alpha) * x, no clamp",
        "layout": "in.x [B,L,D]; gating_alpha [D] (alpha[0:5] = 0.1, -3.5, 4.0, 3.0, -3.0: init value, both clamp sides and both clamp edges); out.<fork|vdit>.y [B,L,D]",
        "clamp_gradient_note": "torch.clamp passes gradient at the boundary value (alpha=+-3.0 exactly) and zero strictly outside [-3,3]",
        "loss_for_grads": "sum(out.<which>.y * cot.G)",
        "shapes": f"B={B} L={L} D={D}",
        "seed": seed,
    }
    write(os.path.join(out, name + ".safetensors"), meta, {**inp, "cot.G": G}, res)


# ---------------------------------------------------------------- fork hybrid TTT path
def fork_hybrid(out, seed, B, L, D, H, b, base_lr, use_rope, rope_theta=10000.0):
    import moshi_ttt.hybrid_layer as hl
    from moshi_ttt.config import TTTConfig
    torch.manual_seed(seed)
    cfg = TTTConfig(model_dim=D, num_heads=H, ttt_base_lr=base_lr, mini_batch_size=b, gating_alpha_init=0.1,
                    use_rope=use_rope, rope_theta=rope_theta)

    class _Orig(torch.nn.Module):
        def set_streaming_detached(self, v):
            pass

    def make(dt):
        torch.manual_seed(seed)
        blk = hl.HybridSeqModelingBlock(_Orig(), cfg, persistent_states=False, layer_id=None)
        blk.train()
        return blk.to(dt)

    blk = make(torch.float32)
    r = gen(seed)
    d = D // H
    with torch.no_grad():
        t = blk.ttt_layer.ttt
        t.ttt_norm_weight.copy_(1 + 0.2 * r(H, d))
        t.ttt_norm_bias.copy_(0.1 * r(H, d))
        t.learnable_ttt_lr_weight.copy_(0.3 * r(*t.learnable_ttt_lr_weight.shape))
        t.learnable_ttt_lr_bias.copy_(0.5 * r(*t.learnable_ttt_lr_bias.shape))
        t.post_norm.weight.copy_(1 + 0.2 * r(D))
        t.post_norm.bias.copy_(0.1 * r(D))
        for lin in (t.wq, t.wk, t.wv, t.wo):
            lin.weight.copy_(r(*lin.weight.shape) / D ** 0.5)
            lin.bias.copy_(0.1 * r(D))
        t.W1.copy_(0.3 * r(*t.W1.shape))
        t.b1.copy_(0.1 * r(*t.b1.shape))
        t.W2.copy_(0.15 * r(*t.W2.shape))
        t.b2.copy_(0.1 * r(*t.b2.shape))
        blk.forward_ssm_gating.gating_alpha.copy_(0.1 + 0.3 * r(D))
        blk.backward_ssm_gating.gating_alpha.copy_(0.1 + 0.3 * r(D))
    params = {k: v.detach().float().clone() for k, v in blk.named_parameters()
              if k.startswith("ttt_layer.") or "ssm_gating" in k}
    inp = {"in.x": r(B, L, D), **params}
    G = r(B, L, D)

    def run(Lv, dt, zero=False):
        m = make(dt)
        for k in params:
            mod, parts = m, k.split(".")
            for p in parts[:-1]:
                mod = getattr(mod, p)
            delattr(mod, parts[-1])
            setattr(mod, parts[-1], Lv[k])
        cap = {}
        orig = m._apply_ttt_processing

        def ap(*a, **k):
            o = orig(*a, **k)
            cap["ttt_out"] = o
            return o
        m._apply_ttt_processing = ap
        if zero:
            pi = m.ttt_layer.ttt.process_input

            def pz(*a, **k):
                o = pi(*a, **k)
                o["eta"] = o["eta"] * 0
                return o
            m.ttt_layer.ttt.process_input = pz
        y = m._ttt_forward(Lv["in.x"])
        return {"y": y, "ttt_out": cap["ttt_out"]}, (y * G.to(dt)).sum()

    with torch.no_grad():
        y = run({k: v.double() for k, v in inp.items()}, torch.float64)[0]["y"]
        y0 = run({k: v.double() for k, v in inp.items()}, torch.float64, True)[0]["y"]
        sens = f"||y - y(eta=0)||/||y|| = {((y - y0).norm() / y.norm()).item():.4f} (measured on the gated residual output)"
    res = run_both(run, inp)
    pad = (b - L % b) % b
    name = "fork_hybrid_ttt_path" + ("_rope" if use_rope else "") + "_odd"
    meta = {
        "case": name,
        "reference": f"{FORK_COMMIT}:moshi_ttt_try/moshi-finetune/moshi_ttt/hybrid_layer.py HybridSeqModelingBlock._ttt_forward (L281-319) -> _apply_ttt_processing_impl (L325-348, zero right-pad to a multiple of b, trim) -> models/ssm/ttt_layer.py TTTWrapper.forward (L80-117: process_input + ttt, NO post_norm / wo) -> ops/ttt_mlp.py (fp32 inside) -> x + tanh(clamp(alpha_f,-3,3)) * ttt_out",
        "not_included": "Moshi attention (_sa_block) and FFN (_ff_block); in.x plays the role of the attention block's output",
        "config": f"moshi_ttt.config.TTTConfig(model_dim={D}, num_heads={H}, ttt_base_lr={base_lr}, mini_batch_size={b}, gating_alpha_init=0.1, use_rope={use_rope}, rope_theta={rope_theta}); persistent_states=False; train() mode",
        "shapes": f"B={B} L={L} D={D} H={H} d={d} b={b}; padded to {L + pad} tokens ({pad} zero pad tokens that take part in the inner updates)",
        "precision_note": "the fork's compute_mini_batch casts every operand to float32, so the F64 run's out.* / grad.* are only fp32-accurate inside the scan",
        "params": "stored under HybridSeqModelingBlock.state_dict() names (ttt_layer.ttt.W1, forward_ssm_gating.gating_alpha, ...)",
        "unused_parameters_zero_grad": "ttt_layer.ttt.wo.weight, ttt_layer.ttt.wo.bias, ttt_layer.ttt.post_norm.weight, ttt_layer.ttt.post_norm.bias, backward_ssm_gating.gating_alpha",
        "outputs": "out.y [B,L,D] = residual + gated TTT; out.ttt_out [B,L,D] = TTT output before gating",
        "loss_for_grads": "sum(out.y * cot.G)",
        "seed": seed,
    }
    write(os.path.join(out, name + ".safetensors"), meta, {**inp, "cot.G": G}, res, sensitivity=sens)


# ---------------------------------------------------------------- In-Place TTT (TTTGating, train mode)
IPMOSHI_COMMIT = "AlufRon/moshi_in_place@d2e94758115e63793bd12c8e4149c837895fc2f8"


def inplace(out, tag, seed, B, T, D, dff, chunk, lr, clip, k, init, act="gelu"):
    from moshi.modules.ttt_module import TTTGating
    act_fn = {"gelu": F.gelu, "silu": F.silu}[act]
    ttt_cfg = {"enabled": True, "chunk_size": chunk, "learning_rate": lr, "conv_kernel_size": k,
               "delta_clip_fro_norm": clip}

    def make(dt):
        torch.manual_seed(seed)
        m = TTTGating(act_fn, D, dff, ttt_config=ttt_cfg)
        m.w_down = torch.nn.Parameter(torch.empty(m.linear_out.weight.shape))
        return m.to(dt).train()

    m = make(torch.float32)
    hidden = m.linear_out.weight.shape[1]
    r = gen(seed)
    with torch.no_grad():
        m.linear_in.weight.copy_(r(*m.linear_in.weight.shape) / D ** 0.5)
        m.linear_out.weight.copy_(r(*m.linear_out.weight.shape) / hidden ** 0.5)
        m.w_down.copy_(m.linear_out.weight)
        cw = m.target_generator.conv1d.conv.weight
        tw = m.target_generator.W_target.weight
        if init == "zero":
            cw.zero_(); tw.zero_()
        elif init == "random":
            cw.copy_(1e-2 * r(*cw.shape)); tw.copy_(1e-2 * r(*tw.shape))
        elif init == "official":
            cw.zero_(); tw.copy_(torch.diag(0.02 * r(D)))
        elif init == "large":
            cw.copy_(r(*cw.shape) / (D * k) ** 0.5); tw.copy_(r(*tw.shape) / D ** 0.5)
    names = ["linear_in.weight", "linear_out.weight", "w_down", "target_generator.conv1d.conv.weight",
             "target_generator.W_target.weight"]
    sd = dict(m.named_parameters())
    params = {n: sd[n].detach().float().clone() for n in names}
    inp = {"in.x": r(B, T, D), "in.token_embeddings": r(B, T, D), **params}
    G = r(B, T, D)

    def run(Lv, dt, lr_override=None):
        mm = make(dt)
        if lr_override is not None:
            mm.ttt_lr = lr_override
        for kname in params:
            mod, parts = mm, kname.split(".")
            for p in parts[:-1]:
                mod = getattr(mod, p)
            delattr(mod, parts[-1])
            setattr(mod, parts[-1], Lv[kname])
        cap = {}
        orig = mm._parallel_ttt_update

        def pu(Z, V):
            cap["V_hat"] = V
            return orig(Z, V)
        mm._parallel_ttt_update = pu
        y = mm(Lv["in.x"], Lv["in.token_embeddings"])
        return {"y": y, "V_hat": cap["V_hat"]}, (y * G.to(dt)).sum()

    with torch.no_grad():
        y = run({kk: v.double() for kk, v in inp.items()}, torch.float64)[0]["y"]
        y0 = run({kk: v.double() for kk, v in inp.items()}, torch.float64, 0.0)[0]["y"]
        sens = f"||y - y(lr=0)||/||y|| = {((y - y0).norm() / y.norm()).item():.3e}"
    res = run_both(run, inp)
    gn = lambda dt: "; ".join(f"{n}={res[dt][1][n].norm().item():.6e}" for n in names)
    name = f"inplace_ttt_{tag}_odd"
    act_txt = "F.gelu" if act == "gelu" else "F.silu"
    n_chunks = -(-T // chunk) if T > chunk else 1
    meta = {
        "case": name,
        "reference": f"{IPMOSHI_COMMIT}:moshi/moshi/moshi/modules/ttt_module.py TTTGating.forward -> _ttt_forward (train mode): Z = act(x W_gate) * (x W_up); V_hat = target_generator(emb) per chunk (T > chunk); _parallel_ttt_update: deltas_i = V_hat_i^T Z_i, Frobenius clip, exclusive prefix sum, O_i = Z_i (w_down + lr*S_i)^T",
        "config": f"TTTGating(activation={act_txt}, dim={D}, dim_feedforward={dff} -> hidden={hidden}, ttt_config={ttt_cfg!r}); train() mode",
        "init": {"zero": "target_generator.conv1d.conv.weight = 0 and target_generator.W_target.weight = 0",
                 "random": "conv and W_target ~ N(0, 1e-2)",
                 "official": "conv = 0, W_target = diag(N(0, 0.02))",
                 "large": "conv ~ N(0, 1/(D k)), W_target ~ N(0, 1/D) (an update that moves the output)"}[init],
        "shapes": f"B={B} T={T} D={D} hidden={hidden} chunk={chunk} n_chunks={n_chunks}",
        "lr": lr,
        "delta_clip_fro_norm": clip,
        "precision_note": "_parallel_ttt_update casts Z, V_hat and w_down to float32, so the F64 run is only fp32-accurate after the gated MLP",
        "outputs": "out.y [B,T,D]; out.V_hat [B,T,D] (target generator output, per-chunk conv)",
        "dead_parameter": "linear_out.weight gets zero gradient: with TTT enabled the output uses w_down",
        "loss_for_grads": "sum(out.y * cot.G)",
        "seed": seed,
    }
    meta["grad_norms_f64"] = gn(torch.float64)
    meta["grad_norms_f32"] = gn(torch.float32)
    write(os.path.join(out, name + ".safetensors"), meta, {**inp, "cot.G": G}, res, sensitivity=sens)


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vdit", required=True)
    ap.add_argument("--lmpt", required=True)
    ap.add_argument("--fork", required=True, help="folder holding moshi_ttt/ (moshi_ttt_try/moshi-finetune)")
    ap.add_argument("--inplace", required=True, help="folder holding the moshi package (moshi/moshi)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    install_shims()
    global LMPT_DIR
    LMPT_DIR = os.path.abspath(a.lmpt)
    for p in (a.vdit, a.fork, a.inplace):
        sys.path.insert(0, os.path.abspath(p))
    # The fork's format_utils / moshi_metadata import `config` as a top-level module.
    sys.path.insert(0, os.path.join(os.path.abspath(a.fork), "moshi_ttt"))
    os.makedirs(a.out, exist_ok=True)
    o = a.out
    # VDIT op: b not a power of two, NC = 1 and NC = 7, H = 1, d = 12.
    vdit_op(o, True, False, 2001, B=3, H=1, NC=7, b=5, d=12, cgs=3, base_lr=0.7)
    vdit_op(o, False, False, 2002, B=1, H=3, NC=1, b=6, d=10, cgs=0, base_lr=1.0)
    vdit_op(o, True, True, 2003, B=2, H=2, NC=3, b=3, d=12, cgs=2, base_lr=1.0)
    vdit_op(o, False, True, 2004, B=3, H=1, NC=4, b=7, d=6, cgs=1, base_lr=1.0)
    # VDIT layer: H = 3, b = 5, base_lr != 1, checkpoint group 1 / 0 (RoPE needs d % 16 == 0 in VDIT).
    vdit_layer(o, True, False, 2005, B=1, L=15, D=30, H=3, b=5, base_lr=0.6, cgs=1)
    vdit_layer(o, True, True, 2006, B=1, L=10, D=48, H=3, b=5, base_lr=1.3, cgs=0)
    vdit_layer(o, False, True, 2007, B=3, L=6, D=32, H=1, b=3, base_lr=0.9, cgs=2)
    # LMPT dual: NC = 1, b = 5 / 3.
    lmpt_dual(o, True, 2009, B=1, H=3, d=8, b=5, NC=1, base_lr=0.8)
    lmpt_dual(o, False, 2010, B=3, H=1, d=12, b=3, NC=4, base_lr=1.0)
    # LMPT layer: remainders, L < b, rope_theta != 1e4.
    lmpt_layer(o, True, 2011, B=2, L=12, H=3, d=8, b=4, base_lr=0.7, theta=500.0)
    lmpt_layer(o, False, 2012, B=1, L=11, H=2, d=6, b=4, base_lr=1.0, theta=10000.0)
    lmpt_layer(o, True, 2013, B=2, L=3, H=1, d=10, b=5, base_lr=1.0, theta=10000.0)
    ln_target(o, 2008, B=3, L=5, H=3, d=10)
    ssm_gating(o, 2015, B=1, L=5, D=7)
    fork_hybrid(o, 2016, B=1, L=13, D=30, H=3, b=5, base_lr=0.5, use_rope=False)
    fork_hybrid(o, 2021, B=2, L=9, D=24, H=2, b=4, base_lr=1.0, use_rope=True, rope_theta=2000.0)
    inplace(o, "zero_init", 2017, B=1, T=13, D=12, dff=40, chunk=5, lr=1e-3, clip=1e-5, k=2, init="zero")
    inplace(o, "random_init", 2018, B=2, T=11, D=8, dff=32, chunk=3, lr=1e-3, clip=1e-5, k=3, init="random")
    inplace(o, "large_noclip", 2019, B=2, T=13, D=12, dff=40, chunk=4, lr=0.5, clip=None, k=2, init="large")
    inplace(o, "official_init", 2020, B=1, T=4, D=8, dff=32, chunk=6, lr=1e-3, clip=1e-5, k=2, init="official")
    inplace(o, "silu_clip", 2022, B=2, T=9, D=8, dff=24, chunk=3, lr=0.3, clip=0.05, k=2, init="large", act="silu")


if __name__ == "__main__":
    main()
