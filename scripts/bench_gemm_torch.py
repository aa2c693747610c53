"""PyTorch's fp32 matmul at the shapes of scripts/bench_gemm.c (same names and
output lines, backend=pytorch), for scripts/bench_gemm.sh.
Usage: bench_gemm_torch.py ROUND SECONDS"""
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
    for th in (1, 2):
        torch.set_num_threads(th)
        for name, ta, tb, M, N, K in SHAPES:
            g = run(ta, tb, M, N, K, secs)
            print(f"RESULT round={r} threads={th} shape={name} backend=pytorch gflops={g:.1f}", flush=True)


if __name__ == "__main__":
    main()
