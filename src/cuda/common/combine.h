// Host-callable launcher of the split-KV combine kernel (combine.cu). Plain C++: host code includes it.
#pragma once

#include "core/backend.h"

namespace flashattn {
namespace kern {
// Enqueues the merge on `stream`; returns the launch's cudaError_t as int (0 = success).
int launch_combine(const CombineParams& p, void* stream);
}  // namespace kern
}  // namespace flashattn
