/* Quantizes a weight matrix to NF4, multiplies it by a batch of activations and checks the
 * product against a plain f32 product with the same (dequantized) weights. */
#include <math.h>
#include <stdio.h>
#include "tquant.h"

enum { ROWS = 64, COLS = 256, N = 4 };

static float w[ROWS * COLS], wq[ROWS * COLS], x[N * COLS], y[N * ROWS];

static float next_value(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.0f - 0.5f;
}

int main(void) {
    unsigned state = 1;
    for (int i = 0; i < ROWS * COLS; i++) w[i] = next_value(&state);
    for (int i = 0; i < N * COLS; i++) x[i] = next_value(&state);

    tquant_matrix *m = NULL;
    if (tquant_quantize(w, ROWS * COLS, ROWS, COLS, "nf4", 64, TQUANT_SCALE_F16, &m) != TQUANT_OK ||
        tquant_matmul(m, x, N * COLS, N, y, N * ROWS, TQUANT_MODE_EXACT, 0) != TQUANT_OK ||
        tquant_matrix_dequantize(m, wq, ROWS * COLS) != TQUANT_OK) {
        fprintf(stderr, "tquant: %s\n", tquant_last_error());
        return 1;
    }

    /* Exact mode's documented tolerance against the product with the dequantized weights. */
    int wrong = 0;
    for (int j = 0; j < N; j++)
        for (int r = 0; r < ROWS; r++) {
            double want = 0, magnitude = 0;
            for (int c = 0; c < COLS; c++) {
                want += (double)wq[r * COLS + c] * x[j * COLS + c];
                magnitude += fabs((double)wq[r * COLS + c] * x[j * COLS + c]);
            }
            double tolerance = (COLS / 8 + 32) * ldexp(1.0, -24) * magnitude;
            if (fabs(y[j * ROWS + r] - want) > tolerance) wrong++;
        }
    printf("%s [%d x %d] times %d activation rows on %s: %d outputs off\n",
           tquant_matrix_format(m), ROWS, COLS, N, tquant_isa(), wrong);
    tquant_matrix_free(m);

    /* A failure returns a status, and tquant_last_error() says why. */
    tquant_matrix *none = NULL;
    int status = tquant_quantize(w, ROWS * COLS, ROWS, COLS, "nf5", 64, TQUANT_SCALE_F16, &none);
    printf("asking for nf5: status %d, \"%s\"\n", status, tquant_last_error());

    return wrong == 0 && status == TQUANT_ERR_ARG && none == NULL ? 0 : 1;
}
