/* tquant: 4-bit weight formats and fused dequant-matmul on the CPU, from C.
 *
 * Build the libraries with `cargo build --release -p tquant-capi`:
 *   target/release/libtquant_capi.so  (shared: cc prog.c -Iinclude -Ltarget/release -ltquant_capi)
 *   target/release/libtquant_capi.a   (static: add -lpthread -ldl -lm, and -lgcc_s -lutil -lrt
 *                                      on some systems, for Rust's standard library)
 *
 * Errors: every function that can fail returns TQUANT_OK (0) or a negative TQUANT_ERR_* status
 * and checks every pointer and length against the shape; tquant_last_error() then describes
 * the failure (it is "" after a success). Nothing panics or unwinds into C.
 *
 * Threads: all functions may be called from any thread; a tquant_matrix and a
 * tquant_checkpoint may be shared between threads for reading (tquant_matmul) but must not be
 * freed while in use.
 *
 * Before this library the product was tq_matmul in libtquant_kernels.a, with TQ_* constants;
 * the same functions are now tquant_matmul_raw, tquant_matmul_f32, tquant_format_table and
 * tquant_isa, with the same arguments and TQUANT_* constants of the same values.
 */
#ifndef TQUANT_H
#define TQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header; tquant_version() returns the library's. */
#define TQUANT_VERSION "0.1.0"

/* Status codes. */
#define TQUANT_OK 0
#define TQUANT_ERR_NULL (-1)        /* a required pointer is NULL */
#define TQUANT_ERR_SIZE (-2)        /* a buffer length does not match the shape */
#define TQUANT_ERR_TABLE (-3)       /* a codebook table is empty, longer than 16, or not finite */
#define TQUANT_ERR_ARG (-4)         /* unknown format, scale dtype or mode; a zero block; NaN weights; ... */
#define TQUANT_ERR_INTERNAL (-5)    /* a bug in tquant; outputs are unspecified */
#define TQUANT_ERR_FILE (-6)        /* a file cannot be read or is not a valid checkpoint */
#define TQUANT_ERR_NOT_FOUND (-7)   /* the checkpoint has no tensor of that name */
#define TQUANT_ERR_UNSUPPORTED (-8) /* the tensor is not quantized, or in a layout the kernels do not read */

/* Scale dtypes. */
#define TQUANT_SCALE_F32 0
#define TQUANT_SCALE_F16 1
#define TQUANT_SCALE_BF16 2
#define TQUANT_SCALE_E8M0 3 /* OCP MX: 2^(byte - 127), 255 is NaN */
#define TQUANT_SCALE_E4M3 4 /* OCP FP8 E4M3 (float8_e4m3fn): bias 7, max 448, 0x7F/0xFF NaN */

/* Modes of the product.
 * EXACT: f32 table and accumulation; every output is within
 *   (cols / 8 + 32) * 2^-24 * sum_k |w_k x_k|
 *   of the exact product with the dequantized weights (tquant_matrix_dequantize).
 * FAST: int8 table, activations quantized to int8 per 32 elements, int32 dot products;
 *   about 0.5-0.8% RMS error on Gaussian data. */
#define TQUANT_MODE_EXACT 0
#define TQUANT_MODE_FAST 1

/* The library's version, "MAJOR.MINOR.PATCH" (a static string). */
const char *tquant_version(void);

/* The message of the last call on this thread that returns a status: "" after a success.
 * Valid until the next tquant call on this thread; never NULL. */
const char *tquant_last_error(void);

/* The kernel path in use on this CPU: "avx512", "avx2" or "scalar" ("reference" when the
 * environment variable TQUANT_ISA names it); a static string. */
const char *tquant_isa(void);

/* ---- Quantized matrices owned by the library ---- */

/* A quantized matrix W [rows, cols] (out x in). */
typedef struct tquant_matrix tquant_matrix;

/* Quantizes the row-major f32 matrix w [rows, cols] (w_len = rows * cols) to `format`, any
 * name of tquant's catalog ("nf4", "sf4" (nu fitted to w), "sf4:nu=5", "int4", "e2m1",
 * "apot4", ...), with blocks of `block` elements along each row (0: one block per row) and
 * TQUANT_SCALE_* scales. On success *out receives a matrix to free with tquant_matrix_free. */
int tquant_quantize(const float *w, size_t w_len, size_t rows, size_t cols,
                    const char *format, size_t block, int scale_dtype,
                    tquant_matrix **out);

/* y = x W^T: x is [n, cols] (x_len = n * cols), y is [n, rows] (y_len = n * rows), row-major;
 * n = 1 is a GEMV, n > 1 a GEMM. mode: TQUANT_MODE_EXACT or TQUANT_MODE_FAST. threads: 0 uses
 * all cores (or RAYON_NUM_THREADS), otherwise that many threads (at most 1024); the result
 * does not depend on it. */
int tquant_matmul(const tquant_matrix *m, const float *x, size_t x_len, size_t n,
                  float *y, size_t y_len, int mode, size_t threads);

/* The shape of m. */
int tquant_matrix_shape(const tquant_matrix *m, size_t *rows, size_t *cols);

/* The exact format of m's codebook ("nf4", "sf4:nu=4.237"), valid while m lives; NULL for a
 * NULL m. */
const char *tquant_matrix_format(const tquant_matrix *m);

/* Decodes m into row-major f32 out [rows, cols] (out_len = rows * cols): the weights every
 * product uses. */
int tquant_matrix_dequantize(const tquant_matrix *m, float *out, size_t out_len);

/* Frees m (NULL is allowed). */
void tquant_matrix_free(tquant_matrix *m);

/* ---- Quantized checkpoints (what `tquant convert` writes) ---- */

typedef struct tquant_checkpoint tquant_checkpoint;

/* Opens the checkpoint at `path` (a directory with model.safetensors or an index, or one
 * .safetensors file), memory-mapped; every header is validated here. */
int tquant_checkpoint_open(const char *path, tquant_checkpoint **out);

/* Matrix `expert` (0 for a 2-D tensor; 0 .. experts-1 for a fused [experts, rows, cols]
 * tensor) of the quantized tensor `name`, without copying. It stays valid after the
 * checkpoint is freed (it keeps the files mapped) until tquant_matrix_free. */
int tquant_checkpoint_matrix(const tquant_checkpoint *c, const char *name, size_t expert,
                             tquant_matrix **out);

/* Frees c (NULL is allowed). */
void tquant_checkpoint_free(tquant_checkpoint *c);

/* ---- Buffers owned by the caller ----
 *
 * Layout of a quantized matrix W [rows, cols], as tquant writes it:
 * - codes: each row in (cols + 1) / 2 bytes; element 2j of a row in the LOW nibble of byte j,
 *   element 2j + 1 in the high nibble.
 * - scales: row-major [rows, (cols + block - 1) / block], one per block of `block` elements
 *   along a row (the last block of a row is short when cols % block != 0), little-endian
 *   TQUANT_SCALE_* values.
 * - table: the codebook in code order, 1 to 16 floats; codes past its end decode to 0.
 * Element (r, c) is table[code(r, c)] * scale(r, c / block). */

/* y = x W^T as tquant_matmul, W given by its parts: codes_len = rows * ((cols + 1) / 2),
 * scales_len = rows * blocks_per_row * scale size. Runs on all cores (RAYON_NUM_THREADS). */
int tquant_matmul_raw(size_t rows, size_t cols, size_t block,
                      const uint8_t *codes, size_t codes_len,
                      const uint8_t *scales, size_t scales_len, int scale_dtype,
                      const float *table, size_t table_len,
                      const float *x, size_t x_len, size_t n,
                      float *y, size_t y_len, int mode);

/* Dense y = x W^T for f32 W [rows, cols] (w_len = rows * cols). */
int tquant_matmul_f32(const float *w, size_t w_len, size_t rows, size_t cols,
                      const float *x, size_t x_len, size_t n,
                      float *y, size_t y_len);

/* The table of a named format ("nf4", "e2m1", "sf4:nu=3", ...): out has room for 16 floats,
 * *len receives the number of values. */
int tquant_format_table(const char *name, float *out, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* TQUANT_H */
