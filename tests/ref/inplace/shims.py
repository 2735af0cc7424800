"""Shims that let the In-Place TTT port's train.py run on one CPU process, offline.

Only what needs a GPU, a cluster or Mimi/Hugging Face is replaced; the port's model building
(get_fsdp_model), its train loop (train.train -> _train), its loss and its Checkpointer run
unchanged. Every shim is listed in SHIMS (written into each case's meta.json).

  1. cuda_to_cpu: a TorchFunctionMode turns device="cuda" arguments into "cpu"
     (torch.tensor([0.0], device="cuda") in _train, avg_aggregate's buffer), Tensor.cuda() and
     Module.cuda() return the object unchanged (model.cuda() in get_fsdp_model).
  2. single_process_group: a gloo process group of world size 1 (HashStore) is initialised
     before _train; LOCAL_RANK stays unset, so _train skips set_device() / NCCL and logs its
     "not correctly initialized" line. dist.barrier / all_reduce then run for real.
  3. no_mimi: CheckpointInfo.get_mimi returns a stub with Mimi's frame_rate (12.5 Hz, the
     port's _mimi_config) and get_text_tokenizer returns None: both are only handed to the
     Interleaver / InterleavedTokenizer constructors, which store them.
  4. codes_loader: train.build_data_loader is replaced by a generator of the port's own
     Batch.collate([Sample(codes, None, doc_id, segment_index)]) over seeded random codes
     [1, 1 + n_q, ceil(duration_sec * 12.5)] (text in [0, text_card) with padding ids 3/0
     mixed in, audio in [0, card)); one doc_id for the whole run, so reset_ttt_on_doc_switch
     resets the fast weight once, at step 1, as the real loader does for a single file.
"""
from __future__ import annotations

import math
import os
import typing as tp

import torch
from torch.overrides import TorchFunctionMode

SHIMS = {
    "cuda_to_cpu": "TorchFunctionMode maps device='cuda' kwargs to 'cpu'; Tensor.cuda()/Module.cuda() return self",
    "single_process_group": "torch.distributed gloo group, world_size 1, HashStore, before train._train; LOCAL_RANK unset",
    "no_mimi": "CheckpointInfo.get_mimi -> parameterless nn.Module stub(frame_rate=12.5); CheckpointInfo.get_text_tokenizer -> None",
    "codes_loader": "train.build_data_loader -> seeded random codes through the port's Batch.collate(Sample(...)), one doc_id",
}

MIMI_FRAME_RATE = 12.5  # moshi.models.loaders._mimi_config["frame_rate"]


def _to_cpu(dev: tp.Any) -> tp.Any:
    if isinstance(dev, str) and dev.startswith("cuda"):
        return "cpu"
    if isinstance(dev, torch.device) and dev.type == "cuda":
        return torch.device("cpu")
    return dev


class CudaToCpu(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if "device" in kwargs:
            kwargs["device"] = _to_cpu(kwargs["device"])
        return func(*args, **kwargs)


def install_cuda_to_cpu() -> CudaToCpu:
    torch.nn.Module.cuda = lambda self, device=None: self  # type: ignore[assignment]
    mode = CudaToCpu()
    mode.__enter__()
    return mode


def init_single_process_group() -> None:
    import torch.distributed as dist

    os.environ.pop("LOCAL_RANK", None)
    os.environ.pop("TORCHELASTIC_RESTART_COUNT", None)
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


class _MimiStub(torch.nn.Module):
    """No parameters; _train calls .eval() and .parameters() on it and reads frame_rate."""

    frame_rate = MIMI_FRAME_RATE


def install_no_mimi() -> None:
    from moshi.models import loaders

    loaders.CheckpointInfo.get_mimi = lambda self, device="cpu": _MimiStub()  # type: ignore[assignment]
    loaders.CheckpointInfo.get_text_tokenizer = lambda self: None  # type: ignore[assignment]


def random_codes(seed: int, batch: int, n_q: int, T: int, card: int, text_card: int,
                 pad_ids: tuple[int, int] = (3, 0)) -> torch.Tensor:
    """Codes [B, 1 + n_q, T] int64: text with ~40% padding (3) and ~10% end padding (0)."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(4, text_card, (batch, 1, T), generator=g)
    u = torch.rand((batch, 1, T), generator=g)
    text = torch.where(u < 0.4, torch.full_like(text, pad_ids[0]), text)
    text = torch.where((u >= 0.4) & (u < 0.5), torch.full_like(text, pad_ids[1]), text)
    audio = torch.randint(0, card, (batch, n_q, T), generator=g)
    return torch.cat([text, audio], dim=1)


def install_codes_loader(train_module, lm_config: dict, data_seed: int) -> None:
    from finetune.data.interleaver import Batch, Sample

    def build_data_loader(instruct_tokenizer, args, batch_size, seed, rank, world_size, is_eval):
        T = math.ceil(instruct_tokenizer.duration_sec * instruct_tokenizer.mimi.frame_rate)
        step = 0
        while True:
            samples = []
            for b in range(batch_size):
                codes = random_codes(data_seed * 1000 + step * batch_size + b, 1, lm_config["n_q"], T,
                                     lm_config["card"], lm_config["text_card"])
                samples.append(Sample(codes, None, doc_id="synthetic_doc_0.wav", segment_index=step))
            step += 1
            yield Batch.collate(samples)

    train_module.build_data_loader = build_data_loader
