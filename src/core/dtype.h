/* dtype.h - tensor element types (as safetensors names them) and the bf16/f16
 * conversions every kernel and file format shares. */
#ifndef TL_DTYPE_H
#define TL_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { TL_DT_F32, TL_DT_F16, TL_DT_BF16, TL_DT_I32, TL_DT_I64, TL_DT_F64 } tl_dtype;

const char *tl_dtype_name(tl_dtype dt);
size_t tl_dtype_size(tl_dtype dt);
/* The type of a safetensors dtype name ("F32", "BF16", ...); -1 if unknown. */
int tl_dtype_parse(const char *name);

/* bf16/f16 conversions (round-to-nearest-even for bf16). */
float tl_bf16_to_f32(uint16_t h);
uint16_t tl_f32_to_bf16(float f);
float tl_f16_to_f32(uint16_t h);

#endif
