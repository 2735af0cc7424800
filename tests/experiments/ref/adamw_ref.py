"""Reference for tests/experiments/trainer_test.cpp: torch.optim.AdamW + OneCycleLR on a least-squares
problem, with gradient clipping. Writes inputs and the parameter trajectory's end to a safetensors file."""
import sys

import torch
from safetensors.torch import save_file

out, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
W = torch.randn(4, 3, dtype=torch.float32)
bias = torch.randn(4, dtype=torch.float32)
x = torch.randn(16, 3)
y = torch.randn(16, 4)
tensors = {"init.W": W.clone(), "init.bias": bias.clone(), "x": x, "y": y}
W.requires_grad_(True)
bias.requires_grad_(True)
opt = torch.optim.AdamW([{"params": [W], "weight_decay": 0.1}, {"params": [bias], "weight_decay": 0.0}],
                        lr=0.05, betas=(0.9, 0.95), eps=1e-8)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps, pct_start=0.2)
lrs = []
for _ in range(steps):
    opt.zero_grad()
    loss = ((x @ W.T + bias - y) ** 2).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([W, bias], 0.5)
    lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
tensors["final.W"] = W.detach()
tensors["final.bias"] = bias.detach()
tensors["lrs"] = torch.tensor(lrs, dtype=torch.float64)
save_file(tensors, out)
