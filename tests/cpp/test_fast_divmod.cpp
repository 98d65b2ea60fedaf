// FastDivmod (cuda/common/fast_divmod.h, the paged K/V addressing's division by the page size) against
// the `/` and `%` operators: every divisor up to 4096 and the powers of two up to 2^30, numerators around
// each multiple of the divisor and near the 2^31 bound.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cuda/common/fast_divmod.h"

namespace flashattn {
namespace {

void check_divisor(int d) {
  const FastDivmod f(d);
  std::vector<int64_t> ns = {0, 1, 2, 3, d - 1, d, d + 1, 2 * int64_t(d) - 1, 2 * int64_t(d), 1 << 20,
                             (int64_t(1) << 31) - 1, (int64_t(1) << 31) - 2, (int64_t(1) << 31) - d};
  for (int64_t q = 1; q < (int64_t(1) << 31) / d; q = q * 3 + 1) {
    ns.push_back(q * d - 1);
    ns.push_back(q * d);
    ns.push_back(q * d + d - 1);
  }
  for (int64_t n64 : ns) {
    if (n64 < 0 || n64 >= (int64_t(1) << 31)) continue;
    const int n = static_cast<int>(n64);
    ASSERT_EQ(f.div(n), n / d) << "n " << n << " d " << d;
    ASSERT_EQ(f.mod(n), n % d) << "n " << n << " d " << d;
  }
}

TEST(FastDivmod, EveryDivisorUpTo4096) {
  for (int d = 1; d <= 4096; ++d) check_divisor(d);
}

TEST(FastDivmod, PowersOfTwoAndLargeDivisors) {
  for (int s = 0; s <= 30; ++s) check_divisor(1 << s);
  for (int d : {4097, 65535, 65536, 65537, 1000003, (1 << 30) + 1, (1 << 30) + 12345}) check_divisor(d);
}

TEST(FastDivmod, EveryNumeratorForSmallDivisors) {
  for (int d : {1, 3, 7, 16, 48, 100}) {
    const FastDivmod f(d);
    for (int n = 0; n < (1 << 20); ++n) {
      ASSERT_EQ(f.div(n), n / d) << "n " << n << " d " << d;
    }
  }
}

}  // namespace
}  // namespace flashattn
