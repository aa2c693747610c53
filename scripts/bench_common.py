"""Shared by the PyTorch peer scripts: the model config of one of our presets,
taken from `tinyllama info --preset NAME` so both sides build the same model."""
import json
import subprocess

from transformers import LlamaConfig


def preset_config(binary, preset):
    out = subprocess.run([binary, "info", "--preset", preset], capture_output=True, text=True, check=True).stdout
    cfg = json.loads(out[: out.rindex("}") + 1])
    return LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")},
                       attn_implementation="sdpa")
