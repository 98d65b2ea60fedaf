// CPU backend vs the fp64 reference over the case table (tests/cases.json) and the generated grids.
// Each case is its own ctest entry (value-parameterised, named after the case).
#include <gtest/gtest.h>

#include <ostream>

#include "cases.h"

namespace fatest {
// Printed by gtest when a case fails.
void PrintTo(const AttnCase& c, std::ostream* os) { *os << c.name; }
}  // namespace fatest

namespace {

using fatest::AttnCase;

std::string case_name(const ::testing::TestParamInfo<AttnCase>& i) { return i.param.name; }

class Fwd : public ::testing::TestWithParam<AttnCase> {};
TEST_P(Fwd, MatchesReference) { fatest::run_case(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cpu, Fwd, ::testing::ValuesIn(fatest::all_cases("fwd")), case_name);

class KvCache : public ::testing::TestWithParam<AttnCase> {};
TEST_P(KvCache, MatchesReference) { fatest::run_case(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cpu, KvCache, ::testing::ValuesIn(fatest::all_cases("kvcache")), case_name);

class Bwd : public ::testing::TestWithParam<AttnCase> {};
TEST_P(Bwd, MatchesReference) { fatest::run_case(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cpu, Bwd, ::testing::ValuesIn(fatest::all_cases("bwd")), case_name);

}  // namespace
