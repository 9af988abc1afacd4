/* Whether frozen weights are still what they were: one pass of memcmp over every parameter against its
   copy, for gloro/gloro_net.py's check after freeze(). One call replaces a PyTorch comparison per
   parameter, whose dispatch costs more than the bytes compared on a small net. */

#include <stdint.h>
#include <string.h>

/* 1 when each of the `count` byte ranges current[k] and frozen[k] (sizes[k] bytes) are equal, else 0. */
int64_t gloro_unchanged(const void *const *current, const void *const *frozen, const int64_t *sizes,
                        int64_t count) {
    for (int64_t k = 0; k < count; k++)
        if (memcmp(current[k], frozen[k], (size_t)sizes[k]) != 0) return 0;
    return 1;
}
