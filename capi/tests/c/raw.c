/* Calls the buffer-level functions of the tquant C ABI (tquant_matmul_raw, tquant_matmul_f32,
 * tquant_format_table, tquant_isa) on small quantized matrices built here by hand and checks the
 * results against plain double-precision loops. Prints "ok" and exits 0 when everything agrees. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tquant.h"

static unsigned lcg_state = 12345u;
static unsigned lcg(void) { lcg_state = lcg_state * 1664525u + 1013904223u; return lcg_state; }
static float uniform(void) { return (float)(lcg() >> 8) / 16777216.0f * 2.0f - 1.0f; }

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL: " __VA_ARGS__); printf("\n"); } } while (0)

enum { ROWS = 5, COLS = 70, BLOCK = 32, N = 3 };
enum { ROW_BYTES = (COLS + 1) / 2, BLOCKS = (COLS + BLOCK - 1) / BLOCK };

int main(void) {
    float table[16];
    size_t table_len = 0;
    CHECK(tquant_format_table("e2m1", table, &table_len) == TQUANT_OK && table_len == 16, "e2m1 table");
    CHECK(table[7] == 6.0f && table[9] == -0.5f, "e2m1 values %g %g", table[7], table[9]);
    CHECK(tquant_format_table("no-such-format", table, &table_len) == TQUANT_ERR_ARG, "unknown format");
    CHECK(strstr(tquant_last_error(), "no-such-format") != NULL, "message: %s", tquant_last_error());
    CHECK(tquant_format_table(NULL, table, &table_len) == TQUANT_ERR_NULL, "null name");
    CHECK(tquant_format_table("nf4", NULL, &table_len) == TQUANT_ERR_NULL, "null out");
    CHECK(tquant_format_table("nf4", table, NULL) == TQUANT_ERR_NULL, "null len");
    CHECK(tquant_format_table("e2m1", table, &table_len) == TQUANT_OK, "e2m1 table again");

    uint8_t codes[ROWS * ROW_BYTES];
    unsigned char code_of[ROWS][COLS];
    memset(codes, 0, sizeof codes);
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < COLS; c++) {
            unsigned code = (lcg() >> 20) & 15u;
            code_of[r][c] = (unsigned char)code;
            codes[r * ROW_BYTES + c / 2] |= (uint8_t)(c % 2 == 0 ? code : code << 4);
        }
    /* f32 scales (little-endian on every target this runs on) and E8M0 scales 2^(e - 127). */
    float scales_f32[ROWS * BLOCKS];
    uint8_t scales_e8m0[ROWS * BLOCKS];
    for (int i = 0; i < ROWS * BLOCKS; i++) {
        scales_f32[i] = 0.01f * (float)(1 + i % 5) * (i % 3 == 0 ? -1.0f : 1.0f);
        scales_e8m0[i] = (uint8_t)(120 + i % 6);
    }
    float x[N * COLS], y[N * ROWS];
    for (int i = 0; i < N * COLS; i++) x[i] = uniform();

    for (int variant = 0; variant < 2; variant++) {
        const uint8_t *scales = variant == 0 ? (const uint8_t *)scales_f32 : scales_e8m0;
        size_t scales_len = variant == 0 ? sizeof scales_f32 : sizeof scales_e8m0;
        int dtype = variant == 0 ? TQUANT_SCALE_F32 : TQUANT_SCALE_E8M0;
        for (int mode = TQUANT_MODE_EXACT; mode <= TQUANT_MODE_FAST; mode++) {
            int st = tquant_matmul_raw(ROWS, COLS, BLOCK, codes, sizeof codes, scales, scales_len, dtype,
                               table, table_len, x, N * COLS, N, y, N * ROWS, mode);
            CHECK(st == TQUANT_OK, "tquant_matmul_raw status %d", st);
            for (int j = 0; j < N; j++)
                for (int r = 0; r < ROWS; r++) {
                    double want = 0, mag = 0, wsum = 0, xmax = 0;
                    for (int c = 0; c < COLS; c++) {
                        int b = r * BLOCKS + c / BLOCK;
                        double s = variant == 0 ? scales_f32[b] : ldexp(1.0, scales_e8m0[b] - 127);
                        double w = table[code_of[r][c]] * s;
                        want += w * x[j * COLS + c];
                        mag += fabs(w * x[j * COLS + c]);
                        wsum += fabs(w);
                        if (fabs(x[j * COLS + c]) > xmax) xmax = fabs(x[j * COLS + c]);
                    }
                    /* exact: f32 rounding; fast: E2M1 is exact in int8, so only the activations'
                     * rounding (half a step of amax / 127 per element) adds error. */
                    double budget = mode == TQUANT_MODE_EXACT ? 1e-5 * mag + 1e-9
                                                          : wsum * xmax / 254.0 * 1.001 + 1e-5 * mag;
                    double got = y[j * ROWS + r];
                    CHECK(fabs(got - want) <= budget, "variant %d mode %d y[%d,%d] = %.9g, want %.9g",
                          variant, mode, j, r, got, want);
                }
        }
    }

    /* Bad sizes, null pointers and unknown enums are errors, never crashes. */
    CHECK(tquant_matmul_raw(ROWS, COLS, BLOCK, codes, sizeof codes - 1, (const uint8_t *)scales_f32,
                    sizeof scales_f32, TQUANT_SCALE_F32, table, 16, x, N * COLS, N, y, N * ROWS,
                    TQUANT_MODE_EXACT) == TQUANT_ERR_SIZE, "short codes");
    CHECK(tquant_matmul_raw(ROWS, COLS, BLOCK, codes, sizeof codes, (const uint8_t *)scales_f32,
                    sizeof scales_f32, TQUANT_SCALE_F16, table, 16, x, N * COLS, N, y, N * ROWS,
                    TQUANT_MODE_EXACT) == TQUANT_ERR_SIZE, "scales of the wrong dtype");
    CHECK(tquant_matmul_raw(ROWS, COLS, BLOCK, codes, sizeof codes, (const uint8_t *)scales_f32,
                    sizeof scales_f32, TQUANT_SCALE_F32, table, 16, x, N * COLS, N, y, N * ROWS - 1,
                    TQUANT_MODE_EXACT) == TQUANT_ERR_SIZE, "short output");
    CHECK(tquant_matmul_raw(ROWS, COLS, BLOCK, NULL, sizeof codes, (const uint8_t *)scales_f32,
                    sizeof scales_f32, TQUANT_SCALE_F32, table, 16, x, N * COLS, N, y, N * ROWS,
                    TQUANT_MODE_EXACT) == TQUANT_ERR_NULL, "null codes");
    CHECK(tquant_matmul_raw(ROWS, COLS, BLOCK, codes, sizeof codes, (const uint8_t *)scales_f32,
                    sizeof scales_f32, TQUANT_SCALE_F32, table, 17, x, N * COLS, N, y, N * ROWS,
                    TQUANT_MODE_EXACT) == TQUANT_ERR_TABLE, "17-entry table");
    CHECK(tquant_matmul_raw(ROWS, COLS, BLOCK, codes, sizeof codes, (const uint8_t *)scales_f32,
                    sizeof scales_f32, 9, table, 16, x, N * COLS, N, y, N * ROWS,
                    TQUANT_MODE_EXACT) == TQUANT_ERR_ARG, "unknown scale dtype");
    CHECK(tquant_matmul_raw(ROWS, COLS, BLOCK, codes, sizeof codes, (const uint8_t *)scales_f32,
                    sizeof scales_f32, TQUANT_SCALE_F32, table, 16, x, N * COLS, N, y, N * ROWS,
                    7) == TQUANT_ERR_ARG, "unknown mode");

    /* The dense f32 path. */
    float w[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) w[i] = uniform();
    CHECK(tquant_matmul_f32(w, ROWS * COLS, ROWS, COLS, x, N * COLS, N, y, N * ROWS) == TQUANT_OK, "f32");
    for (int j = 0; j < N; j++)
        for (int r = 0; r < ROWS; r++) {
            double want = 0, mag = 0;
            for (int c = 0; c < COLS; c++) {
                want += (double)w[r * COLS + c] * x[j * COLS + c];
                mag += fabs((double)w[r * COLS + c] * x[j * COLS + c]);
            }
            CHECK(fabs(y[j * ROWS + r] - want) <= 1e-5 * mag + 1e-9, "f32 y[%d,%d]", j, r);
        }
    CHECK(tquant_matmul_f32(w, ROWS * COLS - 1, ROWS, COLS, x, N * COLS, N, y, N * ROWS) == TQUANT_ERR_SIZE,
          "f32 short weights");

    const char *isa = tquant_isa();
    CHECK(isa != NULL && strlen(isa) > 0, "isa name");
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok (%s)\n", isa);
    return 0;
}
