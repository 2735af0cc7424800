#!/usr/bin/env python3
"""Plain op-by-op PyTorch implementation of the TTT inner loop (dual form, docs/ttt.md §2) used by
bench/ttt_bench.cpp as the Python baseline: the same math as lib/ttt/ttt_scan.cpp's reference path
(TTT-MLP or TTT-Linear, causal tril'ed eta or VDIT's identical rows), forward and forward+backward
through autograd. Prints one JSON object. Reference only: never part of the product."""
import argparse
import json
import time

import torch


def gelu(z):
    return 0.5 * z * (1.0 + torch.tanh(0.79788456 * (z + 0.044715 * z ** 3)))


def gelu_bwd(z):
    t = torch.tanh(0.79788456 * z * (1 + 0.044715 * z * z))
    return 0.5 * z * ((1 - t * t) * (0.79788456 + 0.1070322243 * z * z)) + 0.5 * (1 + t)


def ln_fwd(z, g, b, eps):
    mu = z.mean(-1, keepdim=True)
    var = z.var(-1, keepdim=True, unbiased=False)
    return g * ((z - mu) / torch.sqrt(var + eps)) + b


def ln_fused_l2_bwd(z, target, g, b, eps):
    D = z.shape[-1]
    mu = z.mean(-1, keepdim=True)
    var = z.var(-1, keepdim=True, unbiased=False)
    std = torch.sqrt(var + eps)
    zhat = (z - mu) / std
    gh = (g * zhat + b - target) * g
    return (1.0 / D) * (D * gh - gh.sum(-1, keepdim=True) - zhat * (gh * zhat).sum(-1, keepdim=True)) / std


def step(XQ, XK, XV, eta, g, b, W, B, eps):
    n = len(W)
    target = XV - XK
    X, Z = [], []
    h = XK
    for k in range(n):
        X.append(h)
        Z.append(h @ W[k] + B[k])
        if k + 1 < n:
            h = gelu(Z[k])
    G = [None] * n
    G[n - 1] = ln_fused_l2_bwd(Z[n - 1], target, g, b, eps)
    for k in range(n - 2, -1, -1):
        G[k] = (G[k + 1] @ W[k + 1].transpose(-1, -2)) * gelu_bwd(Z[k])
    xb = XQ
    for k in range(n):
        A = xb @ X[k].transpose(-1, -2)
        zb = xb @ W[k] - (eta * A) @ G[k] + B[k] - eta @ G[k]
        if k + 1 < n:
            xb = gelu(zb)
    out = XQ + ln_fwd(zb, g, b, eps)
    e = eta[..., -1, :].unsqueeze(-1)
    W2 = [W[k] - (e * X[k]).transpose(-1, -2) @ G[k] for k in range(n)]
    B2 = [B[k] - (e * G[k]).sum(-2, keepdim=True) for k in range(n)]
    return out, W2, B2


def scan(XQ, XK, XV, eta, g, b, W, B, eps):
    # unbind, not XQ[:, :, i]: autograd's SelectBackward would materialise a full-size zero gradient
    # per mini-batch (quadratic in the number of mini-batches, 5-10x the whole backward at L 2048).
    outs = []
    for q, k, v, e in zip(XQ.unbind(2), XK.unbind(2), XV.unbind(2), eta.unbind(2)):
        o, W, B = step(q, k, v, e, g, b, W, B, eps)
        outs.append(o)
    return torch.stack(outs, 2), W, B


def make_inputs(a, requires_grad):
    torch.manual_seed(0)
    Bt, H, d, bsz, L = a.batch, a.heads, a.head_dim, a.mini_batch, a.seq_len
    NC = L // bsz
    hid = d if a.inner == "linear" else 4 * d
    dims = [d, d] if a.inner == "linear" else [d, hid, d]
    XQ = torch.nn.functional.normalize(torch.randn(Bt, H, NC, bsz, d), dim=-1)
    XK = torch.nn.functional.normalize(torch.randn(Bt, H, NC, bsz, d), dim=-1)
    XV = torch.randn(Bt, H, NC, bsz, d)
    lr = torch.sigmoid(torch.randn(Bt, H, NC, 1, bsz)) / d
    if a.eta == "causal":
        tok = 1.0 / torch.arange(1, bsz + 1, dtype=torch.float32)
        eta = torch.tril(tok.view(1, 1, 1, bsz, 1) * lr)
    else:
        eta = (lr / bsz).expand(Bt, H, NC, bsz, bsz).contiguous()
    g = (1 + 0.1 * torch.randn(H, d)).view(1, H, 1, d)
    bb = (0.1 * torch.randn(H, d)).view(1, H, 1, d)
    W = [0.02 * torch.randn(H, dims[k], dims[k + 1]) for k in range(len(dims) - 1)]
    B = [torch.zeros(H, 1, dims[k + 1]) for k in range(len(dims) - 1)]
    leaves = [XQ, XK, XV, g, bb] + W + B
    if requires_grad:
        for t in leaves:
            t.requires_grad_(True)
    Wb = [w.unsqueeze(0).expand(Bt, *w.shape) for w in W]
    Bb = [x.unsqueeze(0).expand(Bt, *x.shape) for x in B]
    return XQ, XK, XV, eta, g, bb, Wb, Bb, leaves


def timeit(fn, warmup, iters):
    """Median wall seconds, median process CPU seconds (all threads) and minimum wall seconds of fn."""
    for _ in range(warmup):
        fn()
    ts, cs = [], []
    for _ in range(iters):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    ts.sort()
    cs.sort()
    return ts[len(ts) // 2], cs[len(cs) // 2], ts[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--mini-batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--inner", choices=["mlp", "linear"], default="mlp")
    p.add_argument("--eta", choices=["causal", "dit"], default="causal")
    p.add_argument("--eps", type=float, default=1e-6)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    XQ, XK, XV, eta, g, bb, W, B, _ = make_inputs(a, False)
    XQ, XK, XV, eta, g, bb = [t.to(dev) for t in (XQ, XK, XV, eta, g, bb)]
    W = [w.to(dev) for w in W]
    B = [x.to(dev) for x in B]

    def fwd():
        with torch.no_grad():
            scan(XQ, XK, XV, eta, g, bb, W, B, a.eps)
        sync()

    t_fwd, c_fwd, m_fwd = timeit(fwd, a.warmup, a.iters)

    XQ2, XK2, XV2, eta2, g2, bb2, W2, B2, leaves = make_inputs(a, True)
    moved = [t.detach().to(dev).requires_grad_(True) for t in leaves]
    nW = len(W2)
    XQ2, XK2, XV2, g2, bb2 = moved[:5]
    Wl, Bl = moved[5:5 + nW], moved[5 + nW:]
    eta2 = eta2.to(dev)
    Gc = torch.randn(XQ2.shape, device=dev)

    def fwdbwd():
        Wb = [w.unsqueeze(0).expand(a.batch, *w.shape) for w in Wl]
        Bb = [x.unsqueeze(0).expand(a.batch, *x.shape) for x in Bl]
        out, _, _ = scan(XQ2, XK2, XV2, eta2, g2, bb2, Wb, Bb, a.eps)
        (out * Gc).sum().backward()
        for t in moved:
            t.grad = None
        sync()

    t_fb, c_fb, m_fb = timeit(fwdbwd, a.warmup, a.iters)
    tokens = a.batch * a.seq_len
    print(json.dumps({"impl": "python", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "fwd_s": t_fwd, "fwdbwd_s": t_fb, "fwd_cpu_s": c_fwd, "fwdbwd_cpu_s": c_fb,
                      "fwd_min_s": m_fwd, "fwdbwd_min_s": m_fb,
                      "fwd_tokens_per_s": tokens / t_fwd,
                      "fwdbwd_tokens_per_s": tokens / t_fb}))


if __name__ == "__main__":
    main()
