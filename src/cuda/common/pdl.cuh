// Programmatic dependent launch (sm90): the split-KV combine starts its CTAs while the attention grid
// is still running instead of after it, which takes the launch gap between the two out of a decode step.
//   - The producer grid calls allow_dependent_launch() once its CTAs run; when every CTA has called it (or
//     exited), the next kernel in the stream, if launched with the programmatic-serialization attribute,
//     may start.
//   - That kernel calls wait_for_prerequisite_grid() before reading anything the producer wrote: it
//     returns once the producer grid has completed and its memory operations are visible.
// Both compile to nothing below sm90, so the host sets the launch attribute only where the loaded SASS is
// sm90 or newer (combine.cu), never on a device that would run the wait-free code.
#pragma once

#include "core/platform.h"

namespace flashattn {
namespace kern {

FLASHATTN_DEVICE void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

FLASHATTN_DEVICE void wait_for_prerequisite_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace kern
}  // namespace flashattn
