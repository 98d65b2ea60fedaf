// Path selection shared by the C API and the GPU planner.
#pragma once

#include "flashattn/flashattn.h"

namespace flashattn {

// FLASHATTN_FORCE_PATH=cpu|sm75|sm80|sm90 (read once); FLASHATTN_PATH_AUTO when unset. An unknown value
// makes every call fail with a message naming the variable.
flashattn_path forced_path();

}  // namespace flashattn
