// Host-callable launcher of the KV-cache preparation kernel (kvcache_prepare.cu): appends k_new/v_new into
// the cache in place (k rotated when rotary is on) and writes the rotated q into the workspace. Plain C++.
#pragma once

#include "core/params.h"

namespace flashattn {
namespace kern {
// q_rot: (total_q, nheads, head_dim) contiguous in p.dtype, or null when rotary is off. Enqueues one kernel
// on `stream` (nothing when there is nothing to append or rotate); returns the launch's cudaError_t as int.
int launch_kvcache_prepare(const FwdParams& p, void* q_rot, void* stream);
}  // namespace kern
}  // namespace flashattn
