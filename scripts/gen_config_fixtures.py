#!/usr/bin/env python3
"""Writes config.json files as transformers (>= 5) saves them, for tests/test_validate.c:
tests/fixtures/hf5_config/{rope500k,llama3_scaling}/config.json.

transformers 5 writes `rope_parameters: {rope_theta, rope_type}` instead of
`rope_theta` and `dtype` instead of `torch_dtype`.  Needs only `transformers`
(no torch): pip install transformers
"""
import json
import os
import sys

from transformers import LlamaConfig

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "hf5_config")
major = int(__import__("transformers").__version__.split(".")[0])
if major < 5:
    sys.exit("need transformers >= 5 (it writes rope_parameters); have " + __import__("transformers").__version__)

common = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
# a rope_theta that differs from the 10000 default, so a reader that misses the
# nested field is caught; and a dtype that is not float32
cases = {
    "rope500k": LlamaConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                            dtype="bfloat16"),
    # Llama 3.1's frequency scaling, which we do not implement: must be refused
    "llama3_scaling": LlamaConfig(**common, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}, dtype="bfloat16"),
}
for name, cfg in cases.items():
    d = os.path.join(OUT, name)
    cfg.save_pretrained(d)
    with open(os.path.join(d, "config.json")) as f:
        print(name, json.load(f).get("rope_parameters"))
