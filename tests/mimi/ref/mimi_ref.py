"""Reference data for the C++ Mimi port (tests/mimi): builds a MimiModel from the PyPI `moshi`
package with random weights (fixed seed), saves its state dict under the real checkpoint names
and the model's outputs, so the C++ test can load the same weights with our loader and compare.

Run with the moshi reference venv (MTT_REF_PYTHON):
    python mimi_ref.py --config tiny|full --out DIR [--seed 1234]

Writes DIR/<config>_weights.safetensors (checkpoint names, docs/moshi.md §5.6: legacy fused
attention names `in_proj_weight`/`out_proj.weight` as in the released file) and
DIR/<config>_io.safetensors with:
  x_off [B,1,N]            offline input (N not a multiple of the frame size: exercises padding)
  codes_off [B,K,T]        mimi.encode(x_off)                     (int64)
  latent_off [B,D,T]       unquantized latent (encoder -> transformer -> downsample)
  dec_off [B,1,T*1920]     mimi.decode(codes_off)
  x_stream [B,1,F*1920]    streaming input
  codes_stream [B,K,F]     frame-by-frame mimi.encode inside mimi.streaming()  (upstream ring KV)
  dec_stream [B,1,F*1920]  frame-by-frame mimi.decode(codes_stream) inside mimi.streaming()
This is a test reference only; nothing in the product runs Python.
"""
import argparse
import math
import os

import torch

from moshi.models import loaders
from moshi.models.compression import MimiModel
from moshi.modules import SEANetDecoder, SEANetEncoder, transformer
from moshi.quantization import SplitResidualVectorQuantizer
from safetensors.torch import save_file


def tiny_config():
    # docs/moshi.md §7 "Smallest faithful config": every Mimi code path, tiny widths; context 5
    # so the streaming ring wraps within a few frames.
    seanet = dict(loaders._seanet_kwargs)
    seanet.update(dimension=32, n_filters=4)
    tr = dict(loaders._transformer_kwargs)
    tr.update(d_model=32, num_heads=2, num_layers=2, dim_feedforward=64, context=5,
              input_dimension=32, output_dimensions=[32])
    q = dict(loaders._quantizer_kwargs)
    q.update(dimension=16, n_q=4, bins=40, input_dimension=32, output_dimension=32)
    return dict(sample_rate=24000, channels=1, frame_rate=12.5, seanet=seanet, quantizer=q,
                transformer=tr), 3


def full_config():
    return loaders._mimi_config, 8


def build(cfg, num_codebooks):
    encoder = SEANetEncoder(**cfg["seanet"])
    decoder = SEANetDecoder(**cfg["seanet"])
    enc_tr = transformer.ProjectedTransformer(device="cpu", **cfg["transformer"])
    dec_tr = transformer.ProjectedTransformer(device="cpu", **cfg["transformer"])
    quantizer = SplitResidualVectorQuantizer(**cfg["quantizer"])
    model = MimiModel(encoder, decoder, quantizer, channels=cfg["channels"],
                      sample_rate=cfg["sample_rate"], frame_rate=cfg["frame_rate"],
                      encoder_frame_rate=cfg["sample_rate"] / encoder.hop_length, causal=True,
                      resample_method="conv", encoder_transformer=enc_tr,
                      decoder_transformer=dec_tr)
    model.eval()
    model.set_num_codebooks(num_codebooks)
    return model


@torch.no_grad()
def randomize(model, gen):
    """Non-trivial random values for everything the forward pass reads: convs keep PyTorch's
    default (seeded) init, norms/LayerScale/codebooks get random values so every path matters."""
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if name.endswith("layer_scale_1.scale") or name.endswith("layer_scale_2.scale"):
            p.copy_(torch.rand(p.shape, generator=gen) * 0.25 + 0.05)
        elif ".norm1." in name or ".norm2." in name:
            if name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        elif name.endswith("embedding_sum"):
            p.copy_(torch.randn(p.shape, generator=gen))
        elif name.endswith("cluster_usage"):
            p.copy_(torch.rand(p.shape, generator=gen) * 1.5 + 0.5)
        elif name.endswith("_initialized"):
            p.fill_(1.0)
        elif p.dtype.is_floating_point and ("conv" in name or "linear" in name or "proj" in name):
            fan_in = p[0].numel() if p.dim() > 1 else max(p.numel(), 1)
            bound = 1.0 / math.sqrt(fan_in)
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound * 1.5)


def checkpoint_state(model):
    """State dict under the released checkpoint's names (spec §5.6): fused legacy attention names."""
    out = {}
    for k, v in model.state_dict().items():
        k2 = k.replace(".self_attn.in_projs.0.weight", ".self_attn.in_proj_weight")
        k2 = k2.replace(".self_attn.out_projs.0.weight", ".self_attn.out_proj.weight")
        out[k2] = v.detach().contiguous().clone()
    return out


def signal(gen, batch, n):
    t = torch.arange(n, dtype=torch.float64) / 24000.0
    xs = []
    for b in range(batch):
        f = 110.0 * (b + 1)
        s = 0.3 * torch.sin(2 * math.pi * f * t) + 0.1 * torch.sin(2 * math.pi * 3.7 * f * t)
        s = s + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
        xs.append(s)
    return torch.stack(xs)[:, None].float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=["tiny", "full"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None, help="offline frames (input is a bit shorter)")
    ap.add_argument("--stream-frames", type=int, default=None)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    # scripts/test.sh runs tests side by side with OMP_NUM_THREADS=1; busy-waiting workers of two
    # processes on the same cores cost more than they gain.
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    gen = torch.Generator().manual_seed(args.seed)
    if args.config == "tiny":
        cfg, ncb = tiny_config()
        batch, frames, sframes = args.batch or 2, args.frames or 10, args.stream_frames or 9
    else:
        cfg, ncb = full_config()
        batch, frames, sframes = args.batch or 1, args.frames or 3, args.stream_frames or 3
    model = build(cfg, ncb)
    randomize(model, gen)
    fs = model.frame_size

    with torch.no_grad():
        x_off = signal(gen, batch, frames * fs - 700)
        latent = model._encode_to_unquantized_latent(x_off)
        codes = model.encode(x_off)
        dec = model.decode(codes)

        x_stream = signal(gen, batch, sframes * fs)
        scodes, sdec = [], []
        with model.streaming(batch):
            for f in range(sframes):
                scodes.append(model.encode(x_stream[:, :, f * fs:(f + 1) * fs]))
            sc = torch.cat(scodes, dim=-1)
            for f in range(sframes):
                sdec.append(model.decode(sc[:, :, f:f + 1]))
        sdec = torch.cat(sdec, dim=-1)

    os.makedirs(args.out, exist_ok=True)
    save_file(checkpoint_state(model), os.path.join(args.out, f"{args.config}_weights.safetensors"))
    save_file({
        "x_off": x_off.contiguous(), "codes_off": codes.contiguous(), "latent_off": latent.contiguous(),
        "dec_off": dec.contiguous(), "x_stream": x_stream.contiguous(),
        "codes_stream": sc.contiguous(), "dec_stream": sdec.contiguous(),
    }, os.path.join(args.out, f"{args.config}_io.safetensors"),
        metadata={"config": args.config, "seed": str(args.seed), "num_codebooks": str(ncb)})
    print(f"{args.config}: codes {tuple(codes.shape)} dec {tuple(dec.shape)} "
          f"stream codes equal offline: {bool((sc == model.encode(x_stream)).all())}")


if __name__ == "__main__":
    main()
