// C ABI contract: struct sizes and struct_size handling, defaults from the init functions, absent
// optional tensors, status strings, versions and build info.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <set>
#include <string>
#include <thread>

#include "util.h"

namespace {

using fatest::HostTensor;

TEST(Abi, VersionsAgree) {
  EXPECT_EQ(flashattn_abi_version(), FLASHATTN_ABI_VERSION);
  const std::string v = flashattn_version();
  EXPECT_FALSE(v.empty());
  EXPECT_NE(v.find('.'), std::string::npos) << "version " << v;
  flashattn_build_info bi;
  std::memset(&bi, 0x5A, sizeof(bi));
  bi.struct_size = sizeof(bi);
  ASSERT_EQ(flashattn_build_info_get(&bi), FLASHATTN_STATUS_OK) << flashattn_last_error();
  EXPECT_EQ(std::string(bi.version), v);
  EXPECT_EQ(bi.abi_version, FLASHATTN_ABI_VERSION);
  EXPECT_TRUE(bi.cuda_enabled == 0 || bi.cuda_enabled == 1);
  // Strings are NUL-terminated within their fields.
  EXPECT_LT(strnlen(bi.archs, sizeof(bi.archs)), sizeof(bi.archs));
  EXPECT_LT(strnlen(bi.dtypes, sizeof(bi.dtypes)), sizeof(bi.dtypes));
  EXPECT_LT(strnlen(bi.head_dims, sizeof(bi.head_dims)), sizeof(bi.head_dims));
  EXPECT_LT(strnlen(bi.features, sizeof(bi.features)), sizeof(bi.features));
  EXPECT_GE(bi.num_kernels, 0);
  if (!bi.cuda_enabled) {
    EXPECT_EQ(bi.num_kernels, 0);
  }
}

TEST(Abi, BuildInfoStructSizeTooSmall) {
  flashattn_build_info bi;
  bi.struct_size = 8;
  EXPECT_EQ(flashattn_build_info_get(&bi), FLASHATTN_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flashattn_last_error()).find("struct_size"), std::string::npos) << flashattn_last_error();
}

TEST(Abi, StatusStringsAreDistinctAndNonEmpty) {
  std::set<std::string> seen;
  for (int s = FLASHATTN_STATUS_OK; s <= FLASHATTN_STATUS_INTERNAL; ++s) {
    const char* str = flashattn_status_string(static_cast<flashattn_status>(s));
    ASSERT_NE(str, nullptr);
    EXPECT_GT(std::strlen(str), 0u);
    EXPECT_TRUE(seen.insert(str).second) << "duplicate status string " << str;
  }
  const char* unknown = flashattn_status_string(static_cast<flashattn_status>(1234));
  ASSERT_NE(unknown, nullptr);  // unknown values still give a string, never NULL
}

TEST(Abi, StructLayoutIsStable) {
  // The ABI is the header's layout: these are the sizes that version 1 promises on LP64.
  EXPECT_EQ(sizeof(flashattn_tensor), 8u + 4 * 4 + 2 * 8 * FLASHATTN_MAX_NDIM);
  EXPECT_EQ(offsetof(flashattn_fwd_args, struct_size), 0u);
  EXPECT_EQ(offsetof(flashattn_bwd_args, struct_size), 0u);
  EXPECT_EQ(offsetof(flashattn_kvcache_args, struct_size), 0u);
  EXPECT_EQ(offsetof(flashattn_combine_args, struct_size), 0u);
  EXPECT_EQ(offsetof(flashattn_plan_info, struct_size), 0u);
  EXPECT_EQ(offsetof(flashattn_build_info, struct_size), 0u);
  EXPECT_EQ(offsetof(flashattn_tensor, data), 0u);
}

TEST(Abi, InitFunctionsSetSizeAndDefaults) {
  flashattn_fwd_args f;
  std::memset(&f, 0x33, sizeof(f));
  flashattn_fwd_args_init(&f);
  EXPECT_EQ(f.struct_size, sizeof(f));
  EXPECT_EQ(f.q.data, nullptr);
  EXPECT_EQ(f.lse.data, nullptr);
  EXPECT_EQ(f.opt.window_left, -1);
  EXPECT_EQ(f.opt.window_right, -1);
  EXPECT_EQ(f.opt.causal, 0);
  EXPECT_EQ(f.opt.softcap, 0.0f);
  EXPECT_EQ(f.opt.dropout_p, 0.0f);
  EXPECT_EQ(f.opt.num_splits, 0);
  EXPECT_EQ(f.opt.alibi_slopes.data, nullptr);
  EXPECT_EQ(f.opt.sinks.data, nullptr);
  flashattn_bwd_args b;
  std::memset(&b, 0x33, sizeof(b));
  flashattn_bwd_args_init(&b);
  EXPECT_EQ(b.struct_size, sizeof(b));
  EXPECT_EQ(b.dsinks.data, nullptr);
  EXPECT_EQ(b.opt.window_left, -1);
  flashattn_kvcache_args k;
  std::memset(&k, 0x33, sizeof(k));
  flashattn_kvcache_args_init(&k);
  EXPECT_EQ(k.struct_size, sizeof(k));
  EXPECT_EQ(k.k_new.data, nullptr);
  EXPECT_EQ(k.rotary_cos.data, nullptr);
  EXPECT_EQ(k.opt.window_right, -1);
  flashattn_combine_args c;
  std::memset(&c, 0x33, sizeof(c));
  flashattn_combine_args_init(&c);
  EXPECT_EQ(c.struct_size, sizeof(c));
  EXPECT_EQ(c.sinks.data, nullptr);
  flashattn_options o;
  std::memset(&o, 0x33, sizeof(o));
  flashattn_options_init(&o);
  EXPECT_EQ(o.window_left, -1);
  EXPECT_EQ(o.deterministic, 0);
  const flashattn_tensor none = flashattn_tensor_none();
  EXPECT_EQ(none.data, nullptr);
}

struct Small {
  HostTensor q{FLASHATTN_DTYPE_FP16, {1, 4, 2, 8}}, k{FLASHATTN_DTYPE_FP16, {1, 6, 2, 8}},
      v{FLASHATTN_DTYPE_FP16, {1, 6, 2, 8}}, out{FLASHATTN_DTYPE_FP16, {1, 4, 2, 8}};
  Small() {
    std::mt19937_64 rng(2);
    q.fill_normal(rng);
    k.fill_normal(rng);
    v.fill_normal(rng);
    out.poison();
  }
  void fill(flashattn_fwd_args* a) const {
    a->q = q.desc();
    a->k = k.desc();
    a->v = v.desc();
    a->out = out.desc();
  }
};

flashattn_status run(const flashattn_fwd_args* a) {
  size_t ws = 0;
  flashattn_status st = flashattn_fwd_workspace_size(a, &ws);
  if (st != FLASHATTN_STATUS_OK) return st;
  std::vector<uint8_t> w(ws + 64);
  return flashattn_fwd(a, w.data(), ws, nullptr);
}

TEST(Abi, NullOptionalTensorsAreAccepted) {
  Small s;
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  s.fill(&a);  // no lse, no alibi, no sinks, no metadata: all optional
  ASSERT_EQ(run(&a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  for (int64_t i = 0; i < s.out.numel(); ++i) ASSERT_FALSE(std::isnan(s.out.get_flat(i)));
  // An absent tensor is recognised by data == NULL alone, whatever the other fields hold.
  a.lse.ndim = 3;
  a.lse.dtype = FLASHATTN_DTYPE_FP16;
  a.opt.sinks.ndim = 7;
  ASSERT_EQ(run(&a), FLASHATTN_STATUS_OK) << flashattn_last_error();
}

TEST(Abi, LargerStructFromNewerHeader) {
  // A newer caller's struct is larger; zero trailing bytes are accepted, a set unknown field is refused.
  Small s;
  std::vector<uint8_t> buf(sizeof(flashattn_fwd_args) + 64, 0);
  auto* a = reinterpret_cast<flashattn_fwd_args*>(buf.data());
  flashattn_fwd_args_init(a);
  s.fill(a);
  a->struct_size = buf.size();
  EXPECT_EQ(run(a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  buf[sizeof(flashattn_fwd_args) + 10] = 1;
  EXPECT_EQ(run(a), FLASHATTN_STATUS_NOT_SUPPORTED) << flashattn_last_error();
  EXPECT_NE(std::string(flashattn_last_error()).find("struct_size"), std::string::npos);
}

TEST(Abi, LastErrorIsPerCallAndPerThread) {
  Small s;
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  s.fill(&a);
  a.opt.window_left = -7;
  EXPECT_EQ(run(&a), FLASHATTN_STATUS_INVALID_ARGUMENT);
  const std::string msg = flashattn_last_error();
  EXPECT_NE(msg.find("window_left"), std::string::npos);
  EXPECT_NE(msg.find("-7"), std::string::npos) << "the message gives the value: " << msg;
  // Another thread has its own (empty) message.
  std::string other = "unset";
  std::thread t([&] { other = flashattn_last_error(); });
  t.join();
  EXPECT_EQ(other, "");
}

TEST(Abi, PlanInfoOnCpu) {
  Small s;
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  s.fill(&a);
  flashattn_plan_info info;
  std::memset(&info, 0, sizeof(info));
  info.struct_size = sizeof(info);
  ASSERT_EQ(flashattn_fwd_plan(&a, &info), FLASHATTN_STATUS_OK) << flashattn_last_error();
  EXPECT_EQ(info.path, FLASHATTN_PATH_CPU);
  EXPECT_GE(info.num_splits, 1);
  EXPECT_LT(strnlen(info.kernel, sizeof(info.kernel)), sizeof(info.kernel));
  size_t ws = 0;
  ASSERT_EQ(flashattn_fwd_workspace_size(&a, &ws), FLASHATTN_STATUS_OK);
  EXPECT_EQ(info.workspace_bytes, ws);
  a.opt.num_splits = 3;
  ASSERT_EQ(flashattn_fwd_plan(&a, &info), FLASHATTN_STATUS_OK) << flashattn_last_error();
  // The CPU backend runs no split-KV (each thread owns whole rows), so it may report 1; a GPU path must
  // report exactly the requested count.
  if (info.path == FLASHATTN_PATH_CPU) {
    EXPECT_TRUE(info.num_splits == 1 || info.num_splits == 3) << info.num_splits;
  } else {
    EXPECT_EQ(info.num_splits, 3) << "an explicit num_splits is honoured";
  }
  info.struct_size = 4;
  EXPECT_EQ(flashattn_fwd_plan(&a, &info), FLASHATTN_STATUS_INVALID_ARGUMENT);
}

TEST(Abi, ZeroSizedBatchIsNotAnError) {
  // Empty tensors (batch 0 or seqlen 0) are valid and do nothing.
  HostTensor q(FLASHATTN_DTYPE_FP16, {1, 0, 2, 8}), k(FLASHATTN_DTYPE_FP16, {1, 5, 2, 8}),
      v(FLASHATTN_DTYPE_FP16, {1, 5, 2, 8}), out(FLASHATTN_DTYPE_FP16, {1, 0, 2, 8});
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  a.q = q.desc();
  a.k = k.desc();
  a.v = v.desc();
  a.out = out.desc();
  EXPECT_EQ(run(&a), FLASHATTN_STATUS_OK) << flashattn_last_error();
}

TEST(Abi, EmptyKeysGiveZeroOutputAndInfLse) {
  // seqlen_k = 0: every row sees nothing: out 0, LSE +inf (FA2 convention), no NaN.
  std::mt19937_64 rng(3);
  HostTensor q(FLASHATTN_DTYPE_BF16, {2, 3, 2, 8}), k(FLASHATTN_DTYPE_BF16, {2, 0, 2, 8}),
      v(FLASHATTN_DTYPE_BF16, {2, 0, 2, 8}), out(FLASHATTN_DTYPE_BF16, {2, 3, 2, 8}), lse(FLASHATTN_DTYPE_FP32, {2, 2, 3});
  q.fill_normal(rng);
  out.poison();
  lse.poison();
  flashattn_fwd_args a;
  flashattn_fwd_args_init(&a);
  a.q = q.desc();
  a.k = k.desc();
  a.v = v.desc();
  a.out = out.desc();
  a.lse = lse.desc();
  ASSERT_EQ(run(&a), FLASHATTN_STATUS_OK) << flashattn_last_error();
  for (int64_t i = 0; i < out.numel(); ++i) EXPECT_EQ(out.get_flat(i), 0.0);
  for (int64_t i = 0; i < lse.numel(); ++i) EXPECT_EQ(lse.get_flat(i), INFINITY);
}

}  // namespace
