/* Calls every function of the tquant C API that owns its matrices (quantize, multiply, shape,
 * format, dequantize, free; open a checkpoint and take its tensors; version, last error) with
 * good and bad arguments. Usage: api CHECKPOINT_DIR DOWN_PROJ_F32 BNB_DIR (the checkpoint the
 * test converted, the raw f32 weights of its model.layers.0.mlp.down_proj.weight [48, 80], and
 * the same model converted to bitsandbytes' layout).
 * Prints "ok" and exits 0 when everything agrees. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tquant.h"

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL line %d: ", __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)
#define HAS(text) (strstr(tquant_last_error(), text) != NULL)

static unsigned lcg_state = 777u;
static float uniform(void) {
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return (float)(lcg_state >> 8) / 16777216.0f * 2.0f - 1.0f;
}

/* Checks y = x W^T against the dequantized W in doubles: exact mode within its documented
 * budget; fast mode (E2M1: an exact int8 table) within the activations' int8 rounding. */
static int check_product(tquant_matrix *m, size_t n, int mode, size_t threads, const char *what) {
    size_t rows = 0, cols = 0;
    if (tquant_matrix_shape(m, &rows, &cols) != TQUANT_OK) return 1;
    float *w = malloc(rows * cols * sizeof *w), *x = malloc(n * cols * sizeof *x),
          *y = malloc(n * rows * sizeof *y);
    for (size_t i = 0; i < n * cols; i++) x[i] = uniform();
    int bad = 0;
    int st = tquant_matrix_dequantize(m, w, rows * cols);
    CHECK(st == TQUANT_OK, "%s: dequantize %d %s", what, st, tquant_last_error());
    st = tquant_matmul(m, x, n * cols, n, y, n * rows, mode, threads);
    CHECK(st == TQUANT_OK, "%s: matmul %d %s", what, st, tquant_last_error());
    CHECK(strcmp(tquant_last_error(), "") == 0, "%s: message after success", what);
    for (size_t j = 0; j < n; j++)
        for (size_t r = 0; r < rows; r++) {
            double want = 0, mag = 0, wsum = 0, xmax = 0;
            for (size_t c = 0; c < cols; c++) {
                double p = (double)w[r * cols + c] * x[j * cols + c];
                want += p;
                mag += fabs(p);
                wsum += fabs(w[r * cols + c]);
                if (fabs(x[j * cols + c]) > xmax) xmax = fabs(x[j * cols + c]);
            }
            double budget = mode == TQUANT_MODE_EXACT
                                ? (double)(cols / 8 + 32) * ldexp(1.0, -24) * mag
                                : wsum * xmax / 254.0 * 1.001 + 1e-5 * mag;
            if (fabs(y[j * rows + r] - want) > budget) {
                if (bad++ < 3)
                    printf("FAIL %s: y[%zu,%zu] = %.9g, want %.9g\n", what, j, r, y[j * rows + r], want);
            }
        }
    failures += bad != 0;
    free(w);
    free(x);
    free(y);
    return bad;
}

static void quantize_and_multiply(void) {
    enum { ROWS = 37, COLS = 100 };
    static float w[ROWS * COLS], y[3 * ROWS], y1[3 * ROWS], x[3 * COLS];
    for (int i = 0; i < ROWS * COLS; i++) w[i] = uniform();
    for (int i = 0; i < 3 * COLS; i++) x[i] = uniform();

    const char *formats[] = {"nf4", "sf4", "sf4:nu=5", "int4", "e2m1", "apot4", "int3"};
    const int dtypes[] = {TQUANT_SCALE_F32, TQUANT_SCALE_F16, TQUANT_SCALE_BF16, TQUANT_SCALE_E8M0};
    for (size_t f = 0; f < sizeof formats / sizeof *formats; f++)
        for (int d = 0; d < 4; d++) {
            const size_t blocks[] = {32, 64, 0};
            size_t block = blocks[(f + (size_t)d) % 3];
            tquant_matrix *m = NULL;
            int st = tquant_quantize(w, ROWS * COLS, ROWS, COLS, formats[f], block, dtypes[d], &m);
            char what[64];
            snprintf(what, sizeof what, "%s block %zu dtype %d", formats[f], block, dtypes[d]);
            CHECK(st == TQUANT_OK && m != NULL, "%s: %d %s", what, st, tquant_last_error());
            if (!m) continue;
            size_t rows = 0, cols = 0;
            CHECK(tquant_matrix_shape(m, &rows, &cols) == TQUANT_OK && rows == ROWS && cols == COLS,
                  "%s: shape %zu x %zu", what, rows, cols);
            const char *name = tquant_matrix_format(m);
            CHECK(name && strncmp(name, formats[f], 3) == 0, "%s: format %s", what, name ? name : "NULL");
            if (strcmp(formats[f], "sf4") == 0)
                CHECK(strstr(name, "nu=") != NULL, "sf4 names its fitted nu: %s", name);
            /* The quantized weights are close to the originals (4-bit: under 20% RMS). */
            static float wq[ROWS * COLS];
            CHECK(tquant_matrix_dequantize(m, wq, ROWS * COLS) == TQUANT_OK, "%s: dequantize", what);
            double err = 0, ref = 0;
            for (int i = 0; i < ROWS * COLS; i++) {
                err += (wq[i] - w[i]) * (double)(wq[i] - w[i]);
                ref += (double)w[i] * w[i];
            }
            /* Power-of-two (E8M0) scales and 3 bits are coarser. */
            double limit = strcmp(formats[f], "int3") == 0 || dtypes[d] == TQUANT_SCALE_E8M0 ? 0.45 : 0.2;
            CHECK(sqrt(err / ref) < limit, "%s: relative RMS error %g", what, sqrt(err / ref));
            check_product(m, 1, TQUANT_MODE_EXACT, 0, what);
            check_product(m, 5, TQUANT_MODE_EXACT, 2, what);
            if (strcmp(formats[f], "e2m1") == 0) {
                check_product(m, 1, TQUANT_MODE_FAST, 0, what);
                check_product(m, 4, TQUANT_MODE_FAST, 3, what);
            }
            /* The number of threads does not change the result. */
            tquant_matmul(m, x, 3 * COLS, 3, y, 3 * ROWS, TQUANT_MODE_FAST, 0);
            tquant_matmul(m, x, 3 * COLS, 3, y1, 3 * ROWS, TQUANT_MODE_FAST, 1);
            CHECK(memcmp(y, y1, sizeof y) == 0, "%s: 1 thread differs from all", what);
            tquant_matrix_free(m);
        }

    /* Errors: a status, a message, nothing written to *out. */
    tquant_matrix *m = (tquant_matrix *)0, *sentinel = (tquant_matrix *)&failures;
    m = sentinel;
    CHECK(tquant_quantize(w, ROWS * COLS, ROWS, COLS, "nf5", 64, TQUANT_SCALE_F16, &m) == TQUANT_ERR_ARG
              && HAS("nf5") && m == sentinel, "unknown format: %s", tquant_last_error());
    CHECK(tquant_quantize(w, ROWS * COLS, ROWS, COLS, NULL, 64, TQUANT_SCALE_F16, &m) == TQUANT_ERR_NULL
              && HAS("format"), "NULL format: %s", tquant_last_error());
    CHECK(tquant_quantize(NULL, ROWS * COLS, ROWS, COLS, "nf4", 64, TQUANT_SCALE_F16, &m) == TQUANT_ERR_NULL
              && HAS("w"), "NULL w: %s", tquant_last_error());
    CHECK(tquant_quantize(w, ROWS * COLS, ROWS, COLS, "nf4", 64, TQUANT_SCALE_F16, NULL) == TQUANT_ERR_NULL
              && HAS("out"), "NULL out: %s", tquant_last_error());
    CHECK(tquant_quantize(w, ROWS * COLS - 1, ROWS, COLS, "nf4", 64, TQUANT_SCALE_F16, &m) == TQUANT_ERR_SIZE
              && m == sentinel, "short w: %s", tquant_last_error());
    CHECK(tquant_quantize(w, ROWS * COLS, COLS, ROWS + 1, "nf4", 64, TQUANT_SCALE_F16, &m) == TQUANT_ERR_SIZE,
          "wrong shape: %s", tquant_last_error());
    CHECK(tquant_quantize(w, 0, 0, COLS, "nf4", 64, TQUANT_SCALE_F16, &m) == TQUANT_ERR_ARG,
          "no rows: %s", tquant_last_error());
    CHECK(tquant_quantize(w, ROWS * COLS, ROWS, COLS, "nf4", 64, 9, &m) == TQUANT_ERR_ARG
              && HAS("scale dtype"), "scale dtype 9: %s", tquant_last_error());
    CHECK(tquant_quantize(w, ROWS * COLS, ROWS, COLS, "nf4", 64, -1, &m) == TQUANT_ERR_ARG,
          "scale dtype -1: %s", tquant_last_error());
    w[5] = NAN;
    CHECK(tquant_quantize(w, ROWS * COLS, ROWS, COLS, "nf4", 64, TQUANT_SCALE_F16, &m) == TQUANT_ERR_ARG
              && HAS("NaN"), "NaN weight: %s", tquant_last_error());
    w[5] = 0.5f;
    CHECK(m == sentinel, "*out untouched on failure");

    CHECK(tquant_quantize(w, ROWS * COLS, ROWS, COLS, "nf4", 64, TQUANT_SCALE_F16, &m) == TQUANT_OK, "nf4");
    CHECK(tquant_matmul(NULL, x, COLS, 1, y, ROWS, TQUANT_MODE_EXACT, 0) == TQUANT_ERR_NULL
              && HAS("matrix"), "NULL matrix: %s", tquant_last_error());
    CHECK(tquant_matmul(m, NULL, COLS, 1, y, ROWS, TQUANT_MODE_EXACT, 0) == TQUANT_ERR_NULL, "NULL x");
    CHECK(tquant_matmul(m, x, COLS, 1, NULL, ROWS, TQUANT_MODE_EXACT, 0) == TQUANT_ERR_NULL, "NULL y");
    CHECK(tquant_matmul(m, x, COLS - 1, 1, y, ROWS, TQUANT_MODE_EXACT, 0) == TQUANT_ERR_SIZE
              && HAS("x"), "short x: %s", tquant_last_error());
    CHECK(tquant_matmul(m, x, 2 * COLS, 2, y, ROWS, TQUANT_MODE_EXACT, 0) == TQUANT_ERR_SIZE,
          "short y: %s", tquant_last_error());
    CHECK(tquant_matmul(m, x, COLS, 1, y, ROWS, 7, 0) == TQUANT_ERR_ARG && HAS("mode"),
          "mode 7: %s", tquant_last_error());
    CHECK(tquant_matmul(m, x, COLS, 1, y, ROWS, TQUANT_MODE_EXACT, 5000) == TQUANT_ERR_ARG
              && HAS("threads"), "5000 threads: %s", tquant_last_error());
    CHECK(tquant_matmul(m, x, 0, 0, y, 0, TQUANT_MODE_EXACT, 0) == TQUANT_OK, "n = 0");
    size_t rows = 0, cols = 0;
    CHECK(tquant_matrix_shape(NULL, &rows, &cols) == TQUANT_ERR_NULL, "shape of NULL");
    CHECK(tquant_matrix_shape(m, NULL, &cols) == TQUANT_ERR_NULL, "shape into NULL rows");
    CHECK(tquant_matrix_shape(m, &rows, NULL) == TQUANT_ERR_NULL, "shape into NULL cols");
    CHECK(tquant_matrix_format(NULL) == NULL, "format of NULL");
    CHECK(tquant_matrix_dequantize(m, w, ROWS * COLS - 1) == TQUANT_ERR_SIZE, "short dequantize");
    CHECK(tquant_matrix_dequantize(m, NULL, ROWS * COLS) == TQUANT_ERR_NULL, "dequantize to NULL");
    CHECK(tquant_matrix_dequantize(NULL, w, ROWS * COLS) == TQUANT_ERR_NULL, "dequantize NULL");
    tquant_matrix_free(m);
    tquant_matrix_free(NULL);
}

static void bitsandbytes(const char *dir) {
    tquant_checkpoint *c = NULL;
    CHECK(tquant_checkpoint_open(dir, &c) == TQUANT_OK, "open %s: %s", dir, tquant_last_error());
    tquant_matrix *m = NULL;
    CHECK(tquant_checkpoint_matrix(c, "model.layers.0.mlp.down_proj.weight", 0, &m) == TQUANT_ERR_UNSUPPORTED
              && HAS("bitsandbytes") && m == NULL, "bitsandbytes layout: %s", tquant_last_error());
    tquant_checkpoint_free(c);
}

static void checkpoint(const char *dir, const char *down_proj_f32) {
    tquant_checkpoint *c = NULL;
    int st = tquant_checkpoint_open(dir, &c);
    CHECK(st == TQUANT_OK && c != NULL, "open %s: %d %s", dir, st, tquant_last_error());
    if (!c) return;

    tquant_matrix *down = NULL, *e0 = NULL, *e1 = NULL;
    st = tquant_checkpoint_matrix(c, "model.layers.0.mlp.down_proj.weight", 0, &down);
    CHECK(st == TQUANT_OK && down, "down_proj: %d %s", st, tquant_last_error());
    st = tquant_checkpoint_matrix(c, "model.layers.0.mlp.experts.down_proj", 0, &e0);
    CHECK(st == TQUANT_OK && e0, "expert 0: %d %s", st, tquant_last_error());
    st = tquant_checkpoint_matrix(c, "model.layers.0.mlp.experts.down_proj", 1, &e1);
    CHECK(st == TQUANT_OK && e1, "expert 1: %d %s", st, tquant_last_error());

    tquant_matrix *m = (tquant_matrix *)&failures;
    CHECK(tquant_checkpoint_matrix(c, "model.layers.9.nothing", 0, &m) == TQUANT_ERR_NOT_FOUND
              && HAS("model.layers.9.nothing") && m == (tquant_matrix *)&failures,
          "missing tensor: %s", tquant_last_error());
    CHECK(tquant_checkpoint_matrix(c, "model.norm.weight", 0, &m) == TQUANT_ERR_UNSUPPORTED
              && HAS("not quantized"), "dense tensor: %s", tquant_last_error());
    CHECK(tquant_checkpoint_matrix(c, "model.layers.0.mlp.experts.down_proj", 2, &m) == TQUANT_ERR_ARG
              && HAS("expert 2"), "expert 2 of 2: %s", tquant_last_error());
    CHECK(tquant_checkpoint_matrix(NULL, "model.norm.weight", 0, &m) == TQUANT_ERR_NULL, "NULL checkpoint");
    CHECK(tquant_checkpoint_matrix(c, NULL, 0, &m) == TQUANT_ERR_NULL, "NULL name");
    CHECK(tquant_checkpoint_matrix(c, "model.norm.weight", 0, NULL) == TQUANT_ERR_NULL, "NULL out");
    tquant_checkpoint *none = NULL;
    CHECK(tquant_checkpoint_open("/nonexistent/tquant-checkpoint", &none) == TQUANT_ERR_FILE
              && HAS("/nonexistent/tquant-checkpoint") && none == NULL,
          "missing directory: %s", tquant_last_error());
    CHECK(tquant_checkpoint_open(down_proj_f32, &none) == TQUANT_ERR_FILE && none == NULL,
          "not a checkpoint: %s", tquant_last_error());
    CHECK(tquant_checkpoint_open(NULL, &none) == TQUANT_ERR_NULL, "NULL path");
    CHECK(tquant_checkpoint_open(dir, NULL) == TQUANT_ERR_NULL, "NULL out");

    /* The matrices outlive their checkpoint. */
    tquant_checkpoint_free(c);
    tquant_checkpoint_free(NULL);
    if (!down || !e0 || !e1) return;

    size_t rows = 0, cols = 0;
    CHECK(tquant_matrix_shape(down, &rows, &cols) == TQUANT_OK && rows == 48 && cols == 80,
          "down_proj shape %zu x %zu", rows, cols);
    CHECK(tquant_matrix_shape(e1, &rows, &cols) == TQUANT_OK && rows == 32 && cols == 64,
          "expert shape %zu x %zu", rows, cols);
    CHECK(strncmp(tquant_matrix_format(down), "sf4:nu=", 7) == 0, "format %s", tquant_matrix_format(down));

    /* The stored weights are the converted ones. */
    float orig[48 * 80], wq[48 * 80];
    FILE *f = fopen(down_proj_f32, "rb");
    CHECK(f && fread(orig, sizeof orig, 1, f) == 1, "read %s", down_proj_f32);
    if (f) fclose(f);
    CHECK(tquant_matrix_dequantize(down, wq, 48 * 80) == TQUANT_OK, "dequantize down_proj");
    double err = 0, ref = 0;
    for (int i = 0; i < 48 * 80; i++) {
        err += (wq[i] - orig[i]) * (double)(wq[i] - orig[i]);
        ref += (double)orig[i] * orig[i];
    }
    CHECK(sqrt(err / ref) < 0.15, "down_proj relative RMS error %g", sqrt(err / ref));

    check_product(down, 1, TQUANT_MODE_EXACT, 0, "checkpoint down_proj");
    check_product(down, 6, TQUANT_MODE_EXACT, 2, "checkpoint down_proj GEMM");
    check_product(e1, 3, TQUANT_MODE_EXACT, 1, "checkpoint expert 1");
    float d0[32 * 64], d1[32 * 64];
    tquant_matrix_dequantize(e0, d0, 32 * 64);
    tquant_matrix_dequantize(e1, d1, 32 * 64);
    CHECK(memcmp(d0, d1, sizeof d0) != 0, "experts 0 and 1 differ");
    tquant_matrix_free(down);
    tquant_matrix_free(e0);
    tquant_matrix_free(e1);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s CHECKPOINT_DIR DOWN_PROJ_F32 BNB_DIR\n", argv[0]);
        return 2;
    }
    CHECK(strcmp(tquant_version(), TQUANT_VERSION) == 0, "library %s, header %s", tquant_version(),
          TQUANT_VERSION);
    CHECK(tquant_last_error() != NULL && strcmp(tquant_last_error(), "") == 0, "no error yet");
    quantize_and_multiply();
    checkpoint(argv[1], argv[2]);
    bitsandbytes(argv[3]);
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok (tquant %s, %s)\n", tquant_version(), tquant_isa());
    return 0;
}
