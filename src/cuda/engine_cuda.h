/* engine_cuda.h - the CUDA engine as a tl_engine factory (CUDA build only). */
#ifndef TL_ENGINE_CUDA_H
#define TL_ENGINE_CUDA_H

#include "engine.h"

/* user: a const tl_cuda_opts* (NULL: defaults, bf16 mixed precision).  With
 * several ranks the gradients are summed on the host over the job's collectives
 * (ZeRO stage 0; stages 1-3 are refused for now). */
tl_engine *tl_engine_cuda_create(tl_model *m, float *opt_m, float *opt_v, int B, int T, const tl_engine_job *job,
                                 void *user, tl_error *err);
/* 1 if a CUDA GPU is usable */
int tl_engine_cuda_available(void);

#endif
