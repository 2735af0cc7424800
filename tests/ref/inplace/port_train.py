"""Runs the In-Place TTT port's own train.py (train.train(config)) on CPU under shims.py.

usage: port_train.py PORT_DIR CONFIG_YAML DATA_SEED
PORT_DIR holds the port checkout (moshi/moshi = its modified moshi package, moshi-finetune =
its train.py and finetune/). Called once per case by make_refs.py, in a fresh process so the
port's module-level caches (finetune.distributed's lru_cache, torch.distributed) start clean.
"""
import json
import os
import sys
from pathlib import Path


def main() -> None:
    port_dir, config_path, data_seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    sys.path[:0] = [str(port_dir / "moshi" / "moshi"), str(port_dir / "moshi-finetune"),
                    str(Path(__file__).resolve().parent)]
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    import shims

    shims.install_cuda_to_cpu()
    shims.init_single_process_group()
    shims.install_no_mimi()

    import train as port_train  # the port's moshi-finetune/train.py
    import yaml

    cfg = yaml.safe_load(config_path.read_text())
    lm_config = json.loads(Path(cfg["moshi_paths"]["config_path"]).read_text())
    shims.install_codes_loader(port_train, lm_config, data_seed)
    port_train.train(str(config_path))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
