/* The certificate of gloro/margin.py's certify_logits in one pass over the logits, for float32 logits on
   the CPU. It does the same float64 operations in the same order (no fused multiply-adds), so its radii are
   the same bits; one call replaces a dozen batch-wide PyTorch ops, which after a large forward pass cost as
   much as 3% of it. */

#include <float.h>
#include <math.h>
#include <stdint.h>

#ifdef __clang__
#pragma clang fp contract(off)
#define NO_CONTRACT
#else
#define NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#endif

/* For each of `count` rows of `classes` logits y: top, the first index of the largest logit (the first NaN
   if there is one, as torch.argmax gives); radius, the minimum over i ≠ top of
   (y_top − y_i − O[top][i]) / K[top][i], each step pushed below its rounding (NaN if any quotient is NaN, +inf with
   a single class, −inf for a row with a non-finite logit); certified, radius ≥ epsilon. Returns 0, or 2 for
   a head without classes. */
NO_CONTRACT int64_t gloro_certify(const float *logits, int64_t count, int64_t classes, const double *lipschitz,
                                  const double *offsets, double epsilon, int64_t *top, double *radius,
                                  uint8_t *certified) {
    if (classes < 1) return 2;
    const double slack = 2 * DBL_EPSILON; /* 4u: the rounding of the gap and of its difference with O */
    for (int64_t r = 0; r < count; r++) {
        const float *y = logits + r * classes;
        int finite = 1;
        for (int64_t i = 0; i < classes; i++) finite &= isfinite(y[i]) != 0;
        int64_t j = 0;
        if (finite) { /* branch-free selects: the top class of random logits is not predictable */
            for (int64_t i = 1; i < classes; i++) j = y[i] > y[j] ? i : j;
        } else {
            for (int64_t i = 0; i < classes; i++) {
                if (isnan(y[j])) break;
                if (isnan(y[i]) || y[i] > y[j]) j = i;
            }
            top[r] = j;
            radius[r] = -INFINITY;
            certified[r] = 0;
            continue;
        }
        top[r] = j;
        const double *k = lipschitz + j * classes, *o = offsets + j * classes;
        const double best = y[j];
        double smallest = INFINITY;
        int nan = 0;
        for (int64_t i = 0; i < classes; i++) { /* every class, then the top one masked: the loop vectorizes */
            double gap = best - (double)y[i];
            double low = gap - o[i];
            low = low - slack * (fabs(gap) + fabs(low));
            double ratio = low / k[i];
            double below = ratio - fabs(ratio) * DBL_EPSILON - DBL_TRUE_MIN; /* below its rounding */
            ratio = isfinite(ratio) ? below : ratio;
            ratio = i == j ? INFINITY : ratio;
            nan |= isnan(ratio) != 0;
            smallest = ratio < smallest ? ratio : smallest;
        }
        radius[r] = nan ? NAN : smallest;
        certified[r] = !nan && smallest >= epsilon;
    }
    return 0;
}
