"""PyTorch's fp32 matmul at the shapes of scripts/bench_gemm.c (same names and
output lines, backend=pytorch), for scripts/bench_gemm.sh.
Usage: bench_gemm_torch.py ROUND SECONDS [SHAPE SET: tinyllama-1.1b or gqa-40m]"""
import sys
import time

import torch

SHAPES = [  # name, transpose A, transpose B, M, N, K (as bench_gemm.c)
    ("fwd_qo_512x2048x2048_NT", 0, 1, 512, 2048, 2048),
    ("fwd_kv_512x256x2048_NT", 0, 1, 512, 256, 2048),
    ("fwd_gateup_512x5632x2048_NT", 0, 1, 512, 5632, 2048),
    ("fwd_down_512x2048x5632_NT", 0, 1, 512, 2048, 5632),
    ("dx_qo_512x2048x2048_NN", 0, 0, 512, 2048, 2048),
    ("dx_gateup_512x2048x5632_NN", 0, 0, 512, 2048, 5632),
    ("dx_down_512x5632x2048_NN", 0, 0, 512, 5632, 2048),
    ("dW_qo_2048x2048x512_TN", 1, 0, 2048, 2048, 512),
    ("dW_kv_256x2048x512_TN", 1, 0, 256, 2048, 512),
    ("dW_gateup_5632x2048x512_TN", 1, 0, 5632, 2048, 512),
    ("dW_down_2048x5632x512_TN", 1, 0, 2048, 5632, 512),
    ("attn_qk_64x512x64_NT", 0, 1, 64, 512, 64),
    ("attn_pv_64x64x512_NN", 0, 0, 64, 64, 512),
    ("attn_dk_512x64x64_TN", 1, 0, 512, 64, 64),
    ("square_2048_NN", 0, 0, 2048, 2048, 2048),
]

SHAPES_GQA = [  # bench_gemm.c's shapes_gqa: a gqa-40m training step at batch 4 x 256
    ("fwd_qo_1024x512x512_NT", 0, 1, 1024, 512, 512),
    ("fwd_kv_1024x256x512_NT", 0, 1, 1024, 256, 512),
    ("fwd_gateup_1024x1376x512_NT", 0, 1, 1024, 1376, 512),
    ("fwd_down_1024x512x1376_NT", 0, 1, 1024, 512, 1376),
    ("dx_qo_1024x512x512_NN", 0, 0, 1024, 512, 512),
    ("dx_kv_1024x512x256_NN", 0, 0, 1024, 512, 256),
    ("dx_gateup_1024x512x1376_NN", 0, 0, 1024, 512, 1376),
    ("dx_down_1024x1376x512_NN", 0, 0, 1024, 1376, 512),
    ("dW_qo_512x512x1024_TN", 1, 0, 512, 512, 1024),
    ("dW_kv_256x512x1024_TN", 1, 0, 256, 512, 1024),
    ("dW_gateup_1376x512x1024_TN", 1, 0, 1376, 512, 1024),
    ("dW_down_512x1376x1024_TN", 1, 0, 512, 1376, 1024),
    ("head_fwd_256x32000x512_NT", 0, 1, 256, 32000, 512),
    ("head_dx_256x512x32000_NN", 0, 0, 256, 512, 32000),
    ("head_dW_32000x512x256_TN", 1, 0, 32000, 512, 256),
    ("attn_qk_64x256x64_NT", 0, 1, 64, 256, 64),
    ("attn_pv_64x64x256_NN", 0, 0, 64, 64, 256),
    ("attn_dk_256x64x64_TN", 1, 0, 256, 64, 64),
]


def run(ta, tb, M, N, K, secs):
    # stored as the C benchmark stores them; .t() gives the transposed view
    a = torch.rand(K, M) if ta else torch.rand(M, K)
    b = torch.rand(N, K) if tb else torch.rand(K, N)
    a = a.t() if ta else a
    b = b.t() if tb else b
    c = torch.empty(M, N)
    torch.matmul(a, b, out=c)
    n, t0 = 0, time.perf_counter()
    while True:
        torch.matmul(a, b, out=c)
        n += 1
        t = time.perf_counter() - t0
        if t >= secs:
            return 2.0 * M * N * K * n / t / 1e9


def main():
    r, secs = int(sys.argv[1]), float(sys.argv[2])
    shapes = SHAPES_GQA if len(sys.argv) > 3 and sys.argv[3] == "gqa-40m" else SHAPES
    for th in (1, 2):
        torch.set_num_threads(th)
        for name, ta, tb, M, N, K in shapes:
            g = run(ta, tb, M, N, K, secs)
            print(f"RESULT round={r} threads={th} shape={name} backend=pytorch gflops={g:.1f}", flush=True)


if __name__ == "__main__":
    main()
