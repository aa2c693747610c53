#!/usr/bin/env python3
"""Largest absolute and relative difference between the F32 tensors of two
safetensors files (same names and shapes).  Prints "max_abs REL max_rel REL".
Usage: st_diff.py A.safetensors B.safetensors"""
import array
import json
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {info['dtype']}, not F32")
        a, b = info["data_offsets"]
        v = array.array("f")
        v.frombytes(data[base + a:base + b])
        out[name] = v
    return out


x, y = load(sys.argv[1]), load(sys.argv[2])
if sorted(x) != sorted(y):
    sys.exit("different tensor names")
max_abs = max_rel = 0.0
for name in x:
    if len(x[name]) != len(y[name]):
        sys.exit(f"{name}: different sizes")
    for p, q in zip(x[name], y[name]):
        d = abs(p - q)
        if d != d:
            sys.exit(f"{name}: NaN")
        max_abs = max(max_abs, d)
        max_rel = max(max_rel, d / max(abs(q), 1e-3))
print(f"max_abs {max_abs:.3e} max_rel {max_rel:.3e}")
