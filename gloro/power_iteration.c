/* The power iteration x <- AᵀAx of gloro's Linear and im2col Conv2d bounds, in float32 on one CPU core.

   gloro/native.py compiles this file with the machine's C compiler and calls it through ctypes; the
   PyTorch loops in gloro/lipschitz.py compute the same iterates and stay the reference (and the path on
   GPUs, in other precisions, or without a compiler). At batch size 1 each PyTorch op costs more in
   dispatch and in separate passes over memory than in arithmetic; here a whole advance is one call, the
   im2col gathers feed the products directly, and the products keep their vector sums in registers.

   Both entry points scale A by its Frobenius norm and rescale the iterate only every `rescale_every`
   steps, exactly as the PyTorch loops do, and write the unit direction into `out` (the conv one also the
   gradient of the training estimate). They return 1 when it was written, 0 when the iterate has no finite
   direction (a zero or non-finite operator: the caller keeps its old iterate) and -1 when memory ran out. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The vector is the processor's own register (LANES floats), and a block of the product keeps ROWS × 2 of
   them as running sums: as many as the register file holds beside the operands. A vector wider than the
   registers would be split by the compiler and its sums spilled to memory, many times slower. */
#if defined(__AVX512F__)
#define LANES 16
#define ROWS 8
#elif defined(__AVX__)
#define LANES 8
#define ROWS 6
#elif defined(__aarch64__)
#define LANES 4
#define ROWS 8
#else
#define LANES 4
#define ROWS 6
#endif

typedef float vec __attribute__((vector_size(4 * LANES)));

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }

/* Element (i, p) of the left factor: a[i·k + p], or a[at[i·k + p]] when the factor is gathered from a. */
#define A(i, p) (at ? a[at[(i) * k + (p)]] : a[(i) * k + (p)])

/* c[:, 0:2·LANES] of c[m×n] = a[m×k] · b[k×·] (row strides n and ldb): blocks of ROWS rows keep 2·ROWS
   independent vector sums, enough to hide the latency of fused multiply-adds. */
static void columns_wide(const float *a, const int32_t *at, const float *b, int64_t ldb, float *c, int64_t n,
                         int64_t m, int64_t k) {
    int64_t i = 0;
    for (; i + ROWS <= m; i += ROWS) {
        vec left[ROWS] = {0}, right[ROWS] = {0};
        for (int64_t p = 0; p < k; p++) {
            vec b0 = load(b + p * ldb), b1 = load(b + p * ldb + LANES);
            for (int r = 0; r < ROWS; r++) {
                float s = A(i + r, p);
                left[r] += s * b0;
                right[r] += s * b1;
            }
        }
        for (int r = 0; r < ROWS; r++) {
            store(c + (i + r) * n, left[r]);
            store(c + (i + r) * n + LANES, right[r]);
        }
    }
    for (; i < m; i++) {
        vec left = {0}, right = {0};
        for (int64_t p = 0; p < k; p++) {
            left += A(i, p) * load(b + p * ldb);
            right += A(i, p) * load(b + p * ldb + LANES);
        }
        store(c + i * n, left);
        store(c + i * n + LANES, right);
    }
}

/* c[:, 0:width] (width ≤ LANES) of the same product, from LANES columns of b; only `width` are stored. */
static void columns_narrow(const float *a, const int32_t *at, const float *b, int64_t ldb, float *c, int64_t n,
                           int64_t m, int64_t k, int64_t width) {
    int64_t i = 0;
    for (; i + 2 * ROWS <= m; i += 2 * ROWS) {
        vec sums[2 * ROWS] = {0};
        for (int64_t p = 0; p < k; p++) {
            vec bv = load(b + p * ldb);
            for (int r = 0; r < 2 * ROWS; r++) sums[r] += A(i + r, p) * bv;
        }
        for (int r = 0; r < 2 * ROWS; r++) memcpy(c + (i + r) * n, &sums[r], sizeof(float) * width);
    }
    for (; i < m; i++) {
        vec sum = {0};
        for (int64_t p = 0; p < k; p++) sum += A(i, p) * load(b + p * ldb);
        memcpy(c + i * n, &sum, sizeof(float) * width);
    }
}

/* c[m×n] = a[m×k] · b[k×n], all row-major. The last n mod LANES columns of b are first copied into
   `scratch` (k × LANES floats) beside zeros, so that they too are computed with whole vectors. */
static void matmul(const float *a, const int32_t *at, const float *b, float *c, int64_t m, int64_t k, int64_t n,
                   float *scratch) {
    int64_t j = 0;
    for (; j + 2 * LANES <= n; j += 2 * LANES) columns_wide(a, at, b + j, n, c + j, n, m, k);
    for (; j + LANES <= n; j += LANES) columns_narrow(a, at, b + j, n, c + j, n, m, k, LANES);
    if (j < n) {
        memset(scratch, 0, sizeof(float) * k * LANES);
        for (int64_t p = 0; p < k; p++) memcpy(scratch + p * LANES, b + p * n + j, sizeof(float) * (n - j));
        columns_narrow(a, at, scratch, LANES, c + j, n, m, k, n - j);
    }
}

/* ‖x‖₂, with four vector sums side by side (one running sum would wait on each addition) */
static double norm(const float *x, int64_t n) {
    vec sums[4] = {0};
    int64_t i = 0;
    for (; i + 4 * LANES <= n; i += 4 * LANES)
        for (int r = 0; r < 4; r++) {
            vec v = load(x + i + LANES * r);
            sums[r] += v * v;
        }
    double sum = 0;
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < LANES; l++) sum += sums[r][l];
    for (; i < n; i++) sum += (double)x[i] * x[i];
    return sqrt(sum);
}

static void scale(float *x, int64_t n, float factor) {
    for (int64_t i = 0; i < n; i++) x[i] *= factor;
}

/* Write x/‖x‖ into out; 0 (out untouched) when x has no finite direction. */
static int64_t unit_direction(const float *x, int64_t n, float *out) {
    double length = norm(x, n);
    if (!(length > 0) || !isfinite(length)) return 0;
    for (int64_t i = 0; i < n; i++) out[i] = (float)(x[i] / length);
    return 1;
}

/* One 64-byte aligned allocation split into `count` parts of the given sizes (each rounded up to 16 floats);
   free() the first part to release it. NULL when memory ran out. */
static float *aligned_floats(const int64_t *sizes, float **parts, int count) {
    int64_t total = 0;
    for (int i = 0; i < count; i++) total += (sizes[i] + 15) / 16 * 16;
    float *block = aligned_alloc(64, sizeof(float) * (size_t)total);
    if (!block) return NULL;
    int64_t offset = 0;
    for (int i = 0; i < count; i++) {
        parts[i] = block + offset;
        offset += (sizes[i] + 15) / 16 * 16;
    }
    return block;
}

static int rescale_now(int64_t step, int64_t iterations, int64_t rescale_every) {
    return step % rescale_every == 0 && step != iterations;  /* the last step is normalised anyway */
}

/* Linear, A = w (rows × cols): y = (w x)/‖w‖², x = wᵀy. Four rows at a time share each load of x. The
   scaling goes on y, twice by 1/‖w‖, so that w itself is never copied. */
int64_t gloro_linear_advance(const float *start, float *out, const float *w, int64_t rows, int64_t cols,
                             int64_t iterations, int64_t rescale_every) {
    double frobenius = norm(w, rows * cols);
    if (!(frobenius > 0) || !isfinite(frobenius)) return 0;
    float inverse = (float)(1.0 / frobenius);
    int64_t sizes[2] = {cols, rows};
    float *parts[2];
    float *x = aligned_floats(sizes, parts, 2);
    if (!x) return -1;
    float *y = parts[1];
    int64_t vectors = cols / LANES * LANES;
    memcpy(x, start, sizeof(float) * cols);
    for (int64_t step = 1; step <= iterations; step++) {
        int64_t o = 0;
        for (; o + 4 <= rows; o += 4) {
            const float *r0 = w + o * cols, *r1 = r0 + cols, *r2 = r1 + cols, *r3 = r2 + cols;
            vec s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
            for (int64_t i = 0; i < vectors; i += LANES) {
                vec xv = load(x + i);
                s0 += load(r0 + i) * xv;
                s1 += load(r1 + i) * xv;
                s2 += load(r2 + i) * xv;
                s3 += load(r3 + i) * xv;
            }
            float t[4] = {0, 0, 0, 0};
            for (int l = 0; l < LANES; l++) {
                t[0] += s0[l];
                t[1] += s1[l];
                t[2] += s2[l];
                t[3] += s3[l];
            }
            for (int64_t i = vectors; i < cols; i++) {
                t[0] += r0[i] * x[i];
                t[1] += r1[i] * x[i];
                t[2] += r2[i] * x[i];
                t[3] += r3[i] * x[i];
            }
            for (int r = 0; r < 4; r++) y[o + r] = t[r] * inverse * inverse;
        }
        for (; o < rows; o++) {
            float t = 0;
            for (int64_t i = 0; i < cols; i++) t += w[o * cols + i] * x[i];
            y[o] = t * inverse * inverse;
        }
        memset(x, 0, sizeof(float) * cols);
        for (o = 0; o + 4 <= rows; o += 4) {
            const float *r0 = w + o * cols, *r1 = r0 + cols, *r2 = r1 + cols, *r3 = r2 + cols;
            float y0 = y[o], y1 = y[o + 1], y2 = y[o + 2], y3 = y[o + 3];
            for (int64_t i = 0; i < vectors; i += LANES)
                store(x + i, load(x + i) + y0 * load(r0 + i) + y1 * load(r1 + i) + y2 * load(r2 + i) +
                                 y3 * load(r3 + i));
            for (int64_t i = vectors; i < cols; i++) x[i] += y0 * r0[i] + y1 * r1[i] + y2 * r2[i] + y3 * r3[i];
        }
        for (; o < rows; o++)
            for (int64_t i = 0; i < cols; i++) x[i] += y[o] * w[o * cols + i];
        if (rescale_now(step, iterations, rescale_every)) scale(x, cols, (float)(1.0 / norm(x, cols)));
    }
    int64_t written = unit_direction(x, cols, out);
    free(x);
    return written;
}

/* Conv2d as im2col products on an input of n entries. w is (channels × patch), the flattened kernel.
   columns (positions × patch): the input entry each column entry reads, n for zero padding. fold
   (reads × n): for each input entry, the column entries (as positions·patch + index) that read it, padded
   with positions·patch, a zero. With through_gram (patch ≤ channels) one product by (wᵀw) replaces two.
   When the direction x is written, `gradient` (channels × patch) receives u xᵀ in the kernel's layout,
   u = A x / ‖A x‖: the gradient of ‖A x‖ in w, and Σ w ⊙ (u xᵀ) = ‖A x‖, so training can take the estimate
   as that sum instead of gathering the columns and multiplying again. */
int64_t gloro_conv_advance(const float *start, float *out, float *gradient, const float *w, int64_t channels,
                           int64_t patch, const int32_t *columns, int64_t positions, const int32_t *fold,
                           int64_t reads, int64_t n, int64_t through_gram, int64_t iterations,
                           int64_t rescale_every) {
    double frobenius = norm(w, channels * patch);
    if (!(frobenius > 0) || !isfinite(frobenius)) return 0;
    int64_t entries = positions * patch, widest = positions > patch ? positions : patch;
    widest = widest > channels ? widest : channels;
    /* x: the iterate and a zero for padding; matrix: w/‖w‖; transposed: its transpose; gram: (wᵀw)/‖w‖²;
       spread: the columns going back, and a zero for fold's padding; outputs: A x (positions × channels);
       across: outputs transposed; scratch: for matmul's last columns. Each part starts on a 64-byte
       boundary, where vector loads are fastest. */
    int64_t sizes[8] = {n + 1,     channels * patch,      patch * channels,      through_gram ? patch * patch : 0,
                        entries + 1, positions * channels, positions * channels, LANES * widest};
    float *parts[8];
    float *x = aligned_floats(sizes, parts, 8);
    if (!x) return -1;
    float *matrix = parts[1], *transposed = parts[2], *gram = parts[3], *spread = parts[4], *outputs = parts[5];
    float *across = parts[6], *scratch = parts[7];
    float inverse = (float)(1.0 / frobenius);
    for (int64_t e = 0; e < channels * patch; e++) matrix[e] = w[e] * inverse;
    for (int64_t o = 0; o < channels; o++)
        for (int64_t p = 0; p < patch; p++) transposed[p * channels + o] = matrix[o * patch + p];
    if (through_gram) matmul(transposed, NULL, matrix, gram, patch, channels, patch, scratch);
    memcpy(x, start, sizeof(float) * n);
    x[n] = 0;
    spread[entries] = 0;
    for (int64_t step = 1; step <= iterations; step++) {
        if (through_gram) {
            matmul(x, columns, gram, spread, positions, patch, patch, scratch);
        } else {
            matmul(x, columns, transposed, outputs, positions, patch, channels, scratch);
            matmul(outputs, NULL, matrix, spread, positions, channels, patch, scratch);
        }
        for (int64_t i = 0; i < n; i++) x[i] = spread[fold[i]];
        for (int64_t r = 1; r < reads; r++) {
            const int32_t *at = fold + r * n;
            for (int64_t i = 0; i < n; i++) x[i] += spread[at[i]];
        }
        if (rescale_now(step, iterations, rescale_every)) scale(x, n, (float)(1.0 / norm(x, n)));
    }
    int64_t written = unit_direction(x, n, out);
    if (written) {
        memcpy(x, out, sizeof(float) * n);
        for (int64_t e = 0; e < entries; e++) spread[e] = x[columns[e]];  /* the columns of the new x */
        matmul(spread, NULL, transposed, outputs, positions, patch, channels, scratch);
        double length = norm(outputs, positions * channels);  /* ‖A x‖/‖w‖, > 0 unless it underflowed */
        float unit = length > 0 ? (float)(1.0 / length) : 0;  /* a zero gradient then, as torch's norm gives */
        for (int64_t p = 0; p < positions; p++)
            for (int64_t o = 0; o < channels; o++) across[o * positions + p] = outputs[p * channels + o] * unit;
        matmul(across, NULL, spread, gradient, channels, positions, patch, scratch);
    }
    free(x);
    return written;
}
