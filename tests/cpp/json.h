// A minimal JSON reader, enough for tests/cases.json (objects, arrays, numbers, strings, booleans, null).
// Kept tiny on purpose: the case table must stay plain JSON so Python reads it with the standard library.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace fatest {

struct Json {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = Kind::kNull;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::map<std::string, Json> obj;

  bool has(const std::string& key) const { return kind == Kind::kObject && obj.count(key) > 0; }
  const Json& at(const std::string& key) const { return obj.at(key); }

  static Json parse(const std::string& text);  // throws std::runtime_error with the offset on bad input
};

std::string read_file(const std::string& path);

}  // namespace fatest
