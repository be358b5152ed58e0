/* tquant: fused dequant-matmul over any 4-bit codebook (C ABI of the tquant-kernels crate).
 *
 * Link the static library the crate builds (libtquant_kernels.a) and the system libraries
 * Rust's standard library needs: -lpthread -ldl -lm (and -lgcc_s -lutil -lrt on some systems).
 *
 * Layout of a quantized matrix W [rows, cols] (out x in), as tquant writes it:
 * - codes: each row in (cols + 1) / 2 bytes; element 2j of a row in the LOW nibble of byte j,
 *   element 2j + 1 in the high nibble.
 * - scales: row-major [rows, (cols + block - 1) / block], one per block of `block` elements
 *   along a row (the last block of a row is short when cols % block != 0), little-endian
 *   TQ_SCALE_* values.
 * - table: the codebook in code order, 1 to 16 floats; codes past its end decode to 0.
 * Element (r, c) is table[code(r, c)] * scale(r, c / block).
 *
 * Every function returns TQ_OK (0) or a negative TQ_ERR_* status and checks every length
 * against the shape; it never writes past y_len floats. Threads: the kernels run on Rust's
 * rayon pool (all cores; set RAYON_NUM_THREADS to limit them).
 */
#ifndef TQUANT_H
#define TQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TQ_OK 0
#define TQ_ERR_NULL (-1)     /* a null pointer with a non-zero length */
#define TQ_ERR_SIZE (-2)     /* a buffer length does not match the shape */
#define TQ_ERR_TABLE (-3)    /* the table is empty, longer than 16, or not finite */
#define TQ_ERR_ARG (-4)      /* unknown scale dtype, mode or format name, or block 0 */
#define TQ_ERR_INTERNAL (-5) /* a bug; the output is unspecified */

/* Scale dtypes. */
#define TQ_SCALE_F32 0
#define TQ_SCALE_F16 1
#define TQ_SCALE_BF16 2
#define TQ_SCALE_E8M0 3 /* OCP MX: 2^(byte - 127), 255 is NaN */

/* Modes. EXACT: f32 table and accumulation, |y - exact| <= (cols / 8 + 32) * 2^-24 * sum |w x|.
 * FAST: int8 table, activations quantized to int8 per 32 elements, int32 dot products;
 * about 0.5-0.8% RMS error on Gaussian data. */
#define TQ_MODE_EXACT 0
#define TQ_MODE_FAST 1

/* y = x W^T: x is [n, cols] (x_len = n * cols), y is [n, rows] (y_len = n * rows),
 * codes_len = rows * ((cols + 1) / 2), scales_len = rows * blocks_per_row * scale size. */
int tq_matmul(size_t rows, size_t cols, size_t block,
              const uint8_t *codes, size_t codes_len,
              const uint8_t *scales, size_t scales_len, int scale_dtype,
              const float *table, size_t table_len,
              const float *x, size_t x_len, size_t n,
              float *y, size_t y_len, int mode);

/* Dense y = x W^T for f32 W [rows, cols] (w_len = rows * cols). */
int tq_matmul_f32(const float *w, size_t w_len, size_t rows, size_t cols,
                  const float *x, size_t x_len, size_t n,
                  float *y, size_t y_len);

/* The table of a named format ("nf4", "e2m1", "sf4:nu=3", ...): out has room for 16 floats,
 * *len receives the number of values. */
int tq_format_table(const char *name, float *out, size_t *len);

/* The kernel path in use on this CPU: "avx512", "avx2" or "scalar" (a static string). */
const char *tq_isa(void);

#ifdef __cplusplus
}
#endif

#endif /* TQUANT_H */
