// The `cuda::` backend of a build without CUDA: every GPU request fails with NOT_BUILT.
#ifndef FLASHATTN_WITH_CUDA

#include "core/backend.h"
#include "core/error.h"

namespace flashattn {
namespace cuda {

namespace {
[[noreturn]] void not_built() {
  fail(FLASHATTN_STATUS_NOT_BUILT,
       "device: CUDA tensors given, but this libflashattn was built without CUDA (configure with nvcc and the "
       "CUTLASS headers present: tools/setup.sh, then -DFLASHATTN_CUDA=ON)");
}
}  // namespace

bool built() { return false; }
int device_arch(int) { not_built(); }
Plan plan_fwd(const FwdParams&, int) { not_built(); }
void fwd(const FwdParams&, const Plan&, void*, size_t, void*) { not_built(); }
Plan plan_bwd(const BwdParams&, int) { not_built(); }
void bwd(const BwdParams&, const Plan&, void*, size_t, void*) { not_built(); }
void combine(const CombineParams&, void*) { not_built(); }
void copy_metadata_to_host(const int32_t*, int64_t, int32_t*, void*) { not_built(); }
int num_kernels() { return 0; }

}  // namespace cuda
}  // namespace flashattn

#endif  // FLASHATTN_WITH_CUDA
