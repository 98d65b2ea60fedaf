// Internal error type: thrown by validation and backends, turned into a status + message at the C ABI.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

#include "flashattn/flashattn.h"

namespace flashattn {

class Error : public std::runtime_error {
 public:
  Error(flashattn_status status, const std::string& msg) : std::runtime_error(msg), status_(status) {}
  flashattn_status status() const { return status_; }

 private:
  flashattn_status status_;
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append_all(os, rest...);
}
}  // namespace detail

// Builds a message from its pieces: FLASHATTN_FAIL(INVALID_ARGUMENT, "q: expected ", a, ", got ", b).
template <typename... Args>
[[noreturn]] void fail(flashattn_status status, const Args&... args) {
  std::ostringstream os;
  detail::append_all(os, args...);
  throw Error(status, os.str());
}

template <typename... Args>
[[noreturn]] void fail_arg(const Args&... args) {
  fail(FLASHATTN_STATUS_INVALID_ARGUMENT, args...);
}

}  // namespace flashattn
