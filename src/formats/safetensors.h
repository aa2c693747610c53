/* safetensors.h - reading (memory-mapped, fully validated) and writing the
 * safetensors format: u64 header length, JSON header, then tensor bytes. */
#ifndef TL_SAFETENSORS_H
#define TL_SAFETENSORS_H

#include <stdint.h>

#include "common.h"
#include "dtype.h"

#define TL_ST_MAX_DIMS 8

typedef struct {
    char *name;
    tl_dtype dtype;
    int ndim;
    int64_t shape[TL_ST_MAX_DIMS];
    size_t numel;
    size_t begin, end; /* byte offsets relative to the start of the data section */
} tl_st_tensor;

typedef struct {
    char path[1024];
    uint8_t *map;
    size_t map_len;
    size_t data_start;
    int n;
    tl_st_tensor *tensors;
} tl_safetensors;

/* Maps and validates a file: header size and JSON, known dtypes, shapes whose
 * byte size matches the offsets, offsets inside the file, tensors tiling the
 * data section exactly (no gaps, no overlap), no duplicate names. */
int tl_st_open(tl_safetensors *st, const char *path, tl_error *err);
void tl_st_close(tl_safetensors *st);
const tl_st_tensor *tl_st_find(const tl_safetensors *st, const char *name);
const void *tl_st_data(const tl_safetensors *st, const tl_st_tensor *t);
/* Converts a float tensor (F32/F16/BF16/F64) or integer tensor to fp32; n must equal numel. */
int tl_st_read_f32(const tl_safetensors *st, const tl_st_tensor *t, float *out, size_t n, tl_error *err);
/* Reads an integer tensor (I32/I64) as int; n must equal numel. */
int tl_st_read_i32(const tl_safetensors *st, const tl_st_tensor *t, int *out, size_t n, tl_error *err);

typedef struct {
    const char *name;
    tl_dtype dtype;
    int ndim;
    int64_t shape[TL_ST_MAX_DIMS];
    const void *data;
} tl_st_entry;

/* Writes entries (in order) atomically to path (temp file + fsync + rename).
 * metadata: optional NULL-terminated key, value, key, value... list. */
int tl_st_write(const char *path, const tl_st_entry *entries, int n, const char *const *metadata,
                tl_error *err);

#endif
