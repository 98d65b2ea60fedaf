// Validation of the C API's arguments and their normalisation into backend params (docs/semantics.md).
//
// Host-visible values are checked completely here. Device-resident metadata (cu_seqlens, seqused_k,
// cache_seqlens, cache_batch_idx, cache_leftpad, block_table) is checked by check_metadata(): always on the
// CPU, and on the GPU in check mode (it needs a synchronising copy).
#pragma once

#include "core/backend.h"
#include "core/params.h"
#include "core/tensor_check.h"
#include "flashattn/flashattn.h"

namespace flashattn {

// A validated call: the params, the device and the metadata-check request.
template <typename P>
struct Validated {
  P params;
  Device device;
  bool check_metadata = false;
};

Validated<FwdParams> validate_fwd(const flashattn_fwd_args* args, bool require_varlen);
Validated<BwdParams> validate_bwd(const flashattn_bwd_args* args, bool require_varlen);
Validated<FwdParams> validate_kvcache(const flashattn_kvcache_args* args);
Validated<CombineParams> validate_combine(const flashattn_combine_args* args);

// Checks per-sequence metadata read through host pointers (the CPU's own, or host copies of device
// metadata). Throws Error(BAD_METADATA) naming the argument and index.
void check_metadata(const FwdParams& p);

// Runs check_metadata on device-resident metadata: copies each array to the host (a sync), checks it.
void check_device_metadata(const FwdParams& p, void* stream);

}  // namespace flashattn
