// Division by a divisor known only at run time but fixed for a whole kernel (a page size), without the
// ~25-instruction integer division sequence: one multiply-high, one add and one shift per quotient.
// Round-up method (Granlund-Montgomery): with s = ceil(log2(d)) and m = floor(2^32 (2^s - d) / d) + 1,
// n / d = (umulhi(n, m) + n) >> s for every 0 <= n < 2^31 (the sum stays below 2^32). Plain C++ on the
// host, so the host tests check it against `/` (tests/cpp/test_fast_divmod.cpp).
#pragma once

#include <cstdint>

#include "core/platform.h"

namespace flashattn {

struct FastDivmod {
  int divisor = 1;
  uint32_t multiplier = 1;
  uint32_t shift = 0;

  FastDivmod() = default;
  // d >= 1.
  FLASHATTN_HOST_DEVICE explicit FastDivmod(int d) : divisor(d) {
    while ((1u << shift) < static_cast<uint32_t>(d)) ++shift;
    const uint64_t two32 = uint64_t(1) << 32;
    multiplier = static_cast<uint32_t>(two32 * ((uint64_t(1) << shift) - static_cast<uint64_t>(d)) /
                                       static_cast<uint64_t>(d) + 1);
  }

  // n / divisor for 0 <= n < 2^31.
  FLASHATTN_HOST_DEVICE int div(int n) const {
    const uint32_t un = static_cast<uint32_t>(n);
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(un, multiplier);
#else
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(un) * multiplier) >> 32);
#endif
    return static_cast<int>((hi + un) >> shift);
  }

  // n % divisor for 0 <= n < 2^31.
  FLASHATTN_HOST_DEVICE int mod(int n) const { return n - div(n) * divisor; }
};

}  // namespace flashattn
