// gemm.cu - row-major nn.Linear products through cuBLASLt.
//
// A row-major [r, c] matrix is a column-major [c, r] one, so with Wc = W^T etc.:
//   y  = x W^T   ->  yc[out,N]  = Wc^T xc        (A = W, op T;  B = x, op N)
//   dx = dy W    ->  dxc[in,N]  = Wc dyc         (A = W, op N;  B = dy, op N)
//   dW = dy^T x  ->  dWc[in,out] = xc dyc^T      (A = x, op N;  B = dy, op T)
// fp32 mode: all CUDA_R_32F with CUBLAS_COMPUTE_32F (true fp32, no TF32).
// bf16 mode: A, B bf16; C/D bf16 or fp32; fp32 compute and scale.
// Each distinct problem (shape, types, operand alignment, beta != 0) gets its
// descriptors and heuristic algorithm built once and cached in the handle.
#include <cublasLt.h>
#include <string.h>

#include "common.cuh"

enum { GEMM_CACHE = 128 };
static const size_t GEMM_WORKSPACE = (size_t)32 << 20;

typedef struct {
    int valid;
    int ta, tb, m, n, k, lda, ldb, ldc, abt, ct, beta_nz, al_a, al_b, al_c;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

struct tl_cuda_gemm {
    cublasLtHandle_t lt;
    void *workspace;
    int n_plans;
    gemm_plan plans[GEMM_CACHE];
};

static const char *lt_status(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "alloc failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "arch mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}

#define TL_LT(call, err)                                                                      \
    do {                                                                                      \
        cublasStatus_t s_ = (call);                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                      \
            return tl_fail((err), "cuBLASLt: %s: %s (%d)", #call, lt_status(s_), (int)s_);    \
    } while (0)

extern "C" tl_cuda_gemm *tl_cuda_gemm_create(tl_error *err) {
    tl_cuda_gemm *g = (tl_cuda_gemm *)calloc(1, sizeof *g);
    if (!g) {
        tl_fail(err, "out of memory");
        return NULL;
    }
    cublasStatus_t s = cublasLtCreate(&g->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        tl_fail(err, "cublasLtCreate: %s", lt_status(s));
        free(g);
        return NULL;
    }
    g->workspace = tl_cuda_malloc(GEMM_WORKSPACE, err);
    if (!g->workspace) {
        cublasLtDestroy(g->lt);
        free(g);
        return NULL;
    }
    return g;
}

static void plan_destroy(gemm_plan *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    memset(p, 0, sizeof *p);
}

extern "C" void tl_cuda_gemm_free(tl_cuda_gemm *g) {
    if (!g) return;
    for (int i = 0; i < g->n_plans; i++) plan_destroy(&g->plans[i]);
    tl_cuda_free(g->workspace);
    cublasLtDestroy(g->lt);
    free(g);
}

static int alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a % (uintptr_t)al)) al >>= 1;
    return al;
}

static cudaDataType_t cu_type(int dt) { return dt == TL_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

static int plan_build(tl_cuda_gemm *g, gemm_plan *p, tl_error *err) {
    TL_LT(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), err);
    cublasOperation_t ta = p->ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    TL_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), err);
    TL_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), err);
    // stored shapes (column-major): A is m x k (or k x m when transposed), B is k x n (or n x k)
    TL_LT(cublasLtMatrixLayoutCreate(&p->la, cu_type(p->abt), p->ta ? p->k : p->m, p->ta ? p->m : p->k, p->lda), err);
    TL_LT(cublasLtMatrixLayoutCreate(&p->lb, cu_type(p->abt), p->tb ? p->n : p->k, p->tb ? p->k : p->n, p->ldb), err);
    TL_LT(cublasLtMatrixLayoutCreate(&p->lc, cu_type(p->ct), p->m, p->n, p->ldc), err);
    cublasLtMatmulPreference_t pref;
    TL_LT(cublasLtMatmulPreferenceCreate(&pref), err);
    size_t ws = GEMM_WORKSPACE;
    uint32_t a = (uint32_t)p->al_a, b = (uint32_t)p->al_b, c = (uint32_t)p->al_c;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a, sizeof a);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b, sizeof b);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c, sizeof c);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c, sizeof c);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || found == 0)
        return tl_fail(err, "cuBLASLt: no algorithm for %s%s m=%d n=%d k=%d (types %d/%d): %s", p->ta ? "T" : "N",
                       p->tb ? "T" : "N", p->m, p->n, p->k, p->abt, p->ct, lt_status(s));
    p->algo = res.algo;
    p->valid = 1;
    return 0;
}

// D = alpha op(A) op(B) + beta C, column-major, C == D.
static int gemm(tl_cuda_gemm *g, int ta, int tb, int m, int n, int k, int abt, int ct, const void *A, int lda,
                const void *B, int ldb, void *C, int ldc, float beta, cudaStream_t s, tl_error *err) {
    if (m <= 0 || n <= 0 || k <= 0) return 0;
    gemm_plan key;
    memset(&key, 0, sizeof key);
    key.ta = ta, key.tb = tb, key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldc = ldc;
    key.abt = abt, key.ct = ct, key.beta_nz = beta != 0.0f;
    key.al_a = alignment(A), key.al_b = alignment(B), key.al_c = alignment(C);
    gemm_plan *p = NULL, tmp;
    for (int i = 0; i < g->n_plans && !p; i++) {
        gemm_plan *q = &g->plans[i];
        if (q->ta == key.ta && q->tb == key.tb && q->m == m && q->n == n && q->k == k && q->lda == lda &&
            q->ldb == ldb && q->ldc == ldc && q->abt == abt && q->ct == ct && q->beta_nz == key.beta_nz &&
            q->al_a == key.al_a && q->al_b == key.al_b && q->al_c == key.al_c)
            p = q;
    }
    int temporary = 0;
    if (!p) {
        if (g->n_plans < GEMM_CACHE) p = &g->plans[g->n_plans];
        else {
            p = &tmp;
            temporary = 1;
        }
        *p = key;
        if (plan_build(g, p, err)) {
            plan_destroy(p);
            return -1;
        }
        if (!temporary) g->n_plans++;
    }
    const float alpha = 1.0f;
    cublasStatus_t st_ = cublasLtMatmul(g->lt, p->op, &alpha, A, p->la, B, p->lb, &beta, C, p->lc, C, p->lc,
                                        &p->algo, g->workspace, GEMM_WORKSPACE, s);
    if (temporary) plan_destroy(p);
    if (st_ != CUBLAS_STATUS_SUCCESS)
        return tl_fail(err, "cublasLtMatmul m=%d n=%d k=%d: %s", m, n, k, lt_status(st_));
    return 0;
}

extern "C" int tl_cuda_linear_forward(tl_cuda_gemm *g, int ab, int yt, void *y, const void *x, const void *W,
                                      int N, int in, int out, float beta, tl_cuda_stream s, tl_error *err) {
    return gemm(g, 1, 0, out, N, in, ab, yt, W, in, x, in, y, out, beta, s, err);
}

extern "C" int tl_cuda_linear_backward_dx(tl_cuda_gemm *g, int ab, int xt, void *dx, const void *dy,
                                          const void *W, int N, int in, int out, float beta, tl_cuda_stream s,
                                          tl_error *err) {
    return gemm(g, 0, 0, in, N, out, ab, xt, W, in, dy, out, dx, in, beta, s, err);
}

extern "C" int tl_cuda_linear_backward_dw(tl_cuda_gemm *g, int ab, float *dW, const void *dy, const void *x,
                                          int N, int in, int out, float beta, tl_cuda_stream s, tl_error *err) {
    return gemm(g, 0, 1, in, out, N, ab, TL_CUDA_F32, x, in, dy, out, dW, in, beta, s, err);
}
