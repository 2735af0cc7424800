"""Shims that let the moshi-finetune TTT fork (AlufRon/claude-web, moshi_ttt_try/moshi-finetune @ f5e977ac)
train and load on one CPU process without a GPU, a cluster, Mimi weights or a text tokenizer.

Test dependency only. Nothing here touches the fork's math: every shim replaces an import or a call that
needs hardware or files we do not have. Each one is listed in README.md and in every case's meta.json.

  cuda_to_cpu()        TorchFunctionMode: `device="cuda"` in factory calls, `Tensor.cuda()` and
                       `Tensor.to("cuda")` stay on the CPU (train.py's loss accumulator, avg_aggregate's
                       buffer, get_fsdp_model's `model.cuda()`).
  init_single_process  a real torch.distributed process group (gloo, world size 1, rank 0) instead of
                       torchrun + NCCL; the fork's get_rank()/get_world_size()/barrier()/all_reduce run as is.
  no_mimi / no_spm     CheckpointInfo.get_mimi / get_text_tokenizer return stand-ins (frame_rate 12.5);
                       the fork only reads mimi.frame_rate and stores the tokenizer when no audio is read.
  random_codes_loader  replaces train.build_data_loader: yields the fork's own `Batch` of random codes
                       [batch_size, 1 + n_q, ceil(duration_sec * 12.5)] (what the fork's Mimi + Interleaver
                       pipeline would yield from audio + alignments).
  no Triton kernels    moshi_ttt.models.ssm.linear_triton (TritonLinear) is replaced by a stub module before
                       import: its @triton.autotune decorators need a GPU driver at import time, and the
                       fork only calls TritonLinear for TTTLinear(use_kernel=True), which TTTWrapper never
                       builds (TTTMLP / TTTMLPMultiLayer run the PyTorch ops in models/ssm/ops).
  dynamo disabled      TORCHDYNAMO_DISABLE=1: the fork's @torch.compile methods run eagerly (compile is a
                       speed feature; on CPU it would also need a C++ toolchain per run).
"""
import os

import torch
from torch.overrides import TorchFunctionMode


def _is_cuda(d) -> bool:
    if isinstance(d, torch.device):
        return d.type == "cuda"
    if isinstance(d, str):
        return d.startswith("cuda")
    return False


class CudaToCpu(TorchFunctionMode):
    """Keeps every tensor the fork asks to put on "cuda" on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu") + tuple(args[2:])
        return func(*args, **kwargs)


def cuda_to_cpu() -> CudaToCpu:
    return CudaToCpu()


def init_single_process(port: int = 29533) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    os.environ["RANK"] = "0"
    os.environ["WORLD_SIZE"] = "1"
    dist.init_process_group(backend="gloo", rank=0, world_size=1)


class _NoMimi:
    """What train.py reads from Mimi when the data loader does not encode audio."""

    frame_rate = 12.5

    def eval(self):
        return self

    def parameters(self):
        return iter(())


def install_model_file_shims() -> None:
    from moshi.models import loaders

    loaders.CheckpointInfo.get_mimi = lambda self, device="cpu", dtype=None: _NoMimi()
    loaders.CheckpointInfo.get_text_tokenizer = lambda self: None


def install_gpu_kernel_shims() -> None:
    import sys
    import types

    class TritonLinear(torch.autograd.Function):
        sharded_mode = False

        @staticmethod
        def forward(ctx, *args):
            raise RuntimeError("fork_shims: the Triton TTT-Linear kernel needs a GPU")

    stub = types.ModuleType("moshi_ttt.models.ssm.linear_triton")
    stub.TritonLinear = TritonLinear
    sys.modules[stub.__name__] = stub


def random_codes_loader(lm_config: dict, data_seed: int):
    """A stand-in for finetune.data.data_loader.build_data_loader with the same signature."""

    def build_data_loader(instruct_tokenizer, args, batch_size, seed, rank, world_size, is_eval):
        from finetune.data.interleaver import Batch

        g = torch.Generator().manual_seed(data_seed)
        T = instruct_tokenizer.num_audio_frames
        n_q, card, text_card = lm_config["n_q"], lm_config["card"], lm_config["text_card"]
        while True:
            text = torch.randint(0, text_card, (batch_size, 1, T), generator=g)
            audio = torch.randint(0, card, (batch_size, n_q, T), generator=g)
            yield Batch(torch.cat([text, audio], dim=1))

    return build_data_loader
