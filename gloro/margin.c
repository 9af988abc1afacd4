/* The certificate of gloro/margin.py's certify_logits in one pass over the logits, for float32 logits on
   the CPU. It does the same float64 operations in the same order, so its radii are the same bits; one call
   replaces eight batch-wide PyTorch ops, which after a large forward pass cost as much as 3% of it. */

#include <math.h>
#include <stdint.h>

/* For each of `count` rows of `classes` logits y: top, the first index of the largest logit; radius, the
   minimum over i ≠ top of (y_top − y_i) / K[top][i] in float64 (NaN if any quotient is NaN, as torch.min
   gives; +inf with a single class); certified, radius ≥ epsilon. Returns 0, or 1 as soon as a logit is
   not finite: the caller then computes the whole certificate with PyTorch, whose NaN rules apply. */
int64_t gloro_certify(const float *logits, int64_t count, int64_t classes, const double *lipschitz,
                      double epsilon, int64_t *top, double *radius, uint8_t *certified) {
    for (int64_t r = 0; r < count; r++) {
        const float *y = logits + r * classes;
        int64_t j = 0;
        for (int64_t i = 0; i < classes; i++) {
            if (!isfinite(y[i])) return 1;
            if (y[i] > y[j]) j = i;
        }
        const double *row = lipschitz + j * classes;
        double best = y[j], smallest = INFINITY;
        for (int64_t i = 0; i < classes && !isnan(smallest); i++) {
            if (i == j) continue;
            double gap = (best - (double)y[i]) / row[i];
            if (isnan(gap) || gap < smallest) smallest = gap;
        }
        top[r] = j;
        radius[r] = smallest;
        certified[r] = smallest >= epsilon;
    }
    return 0;
}
