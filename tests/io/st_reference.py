"""Test reference: the PyPI `safetensors` package (the format's reference implementation).

  st_reference.py dump <file>...    -> JSON {file: {"metadata": {...}, "tensors": {name: {dtype, shape, crc32}}}}
                                      (the reference reader validates each file; failure -> exit 3)
  st_reference.py write <file>      -> writes a file with every dtype, deterministic values
"""
import json
import sys
import zlib

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def dump_one(path):
    try:
        out = {"metadata": {}, "tensors": {}}
        with safe_open(path, framework="pt") as f:
            out["metadata"] = f.metadata() or {}
            for name in f.keys():
                sl = f.get_slice(name)
                t = f.get_tensor(name).contiguous().reshape(-1)
                raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
                out["tensors"][name] = {"dtype": sl.get_dtype(), "shape": list(sl.get_shape()),
                                        "crc32": zlib.crc32(raw)}
    except Exception as e:  # the reference rejected the file
        print(f"reference rejected {path}: {e}", file=sys.stderr)
        sys.exit(3)
    return out


def reference_tensors():
    # Values every test side can rebuild: arange(n) cast to the dtype, shape (2, 3, ...).
    base = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) - 11.5
    return {
        "f64": base.clone(),
        "f32": base.float(),
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": base.long(),
        "i32": base.int(),
        "i16": base.short(),
        "i8": base.to(torch.int8),
        "u8": (base + 11.5).to(torch.uint8),
        "bool": base > 0,
        "f8_e4m3": base.to(torch.float8_e4m3fn),
        "f8_e5m2": base.to(torch.float8_e5m2),
        "scalar": torch.tensor(3.25, dtype=torch.float32),
        "empty": torch.zeros(0, 5, dtype=torch.float32),
    }


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        print(json.dumps({p: dump_one(p) for p in sys.argv[2:]}))
    elif sys.argv[1] == "write":
        save_file(reference_tensors(), sys.argv[2], metadata={"writer": "python", "note": "héllo"})
    else:
        sys.exit(64)
