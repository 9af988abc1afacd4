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
        int64_t j = 0;
        int finite = 1;
        for (int64_t i = 0; i < classes; i++) {
            if (!isfinite(y[i])) finite = 0;
            if (isnan(y[j])) continue;
            if (isnan(y[i]) || y[i] > y[j]) j = i;
        }
        top[r] = j;
        if (!finite) {
            radius[r] = -INFINITY;
            certified[r] = 0;
            continue;
        }
        const double *k = lipschitz + j * classes, *o = offsets + j * classes;
        double best = y[j], smallest = INFINITY;
        for (int64_t i = 0; i < classes && !isnan(smallest); i++) {
            if (i == j) continue;
            double gap = best - (double)y[i];
            double low = gap - o[i];
            low = low - slack * (fabs(gap) + fabs(low));
            double ratio = low / k[i];
            if (isfinite(ratio)) ratio = ratio - fabs(ratio) * DBL_EPSILON - DBL_TRUE_MIN; /* below its rounding */
            if (isnan(ratio) || ratio < smallest) smallest = ratio;
        }
        radius[r] = smallest;
        certified[r] = smallest >= epsilon;
    }
    return 0;
}
