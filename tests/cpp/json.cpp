#include "json.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fatest {
namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  Json value() {
    ws();
    if (pos_ >= s_.size()) fail("unexpected end");
    const char c = s_[pos_];
    if (c == '{') return object();
    if (c == '[') return array();
    if (c == '"') {
      Json j;
      j.kind = Json::Kind::kString;
      j.str = string();
      return j;
    }
    if (literal("true")) return boolean(true);
    if (literal("false")) return boolean(false);
    if (literal("null")) return Json{};
    return number();
  }

  void finish() {
    ws();
    if (pos_ != s_.size()) fail("trailing characters");
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(pos_));
  }
  void ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool literal(const char* lit) {
    const std::string l(lit);
    if (s_.compare(pos_, l.size(), l) == 0) {
      pos_ += l.size();
      return true;
    }
    return false;
  }
  void expect(char c) {
    ws();
    if (pos_ >= s_.size() || s_[pos_] != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  static Json boolean(bool v) {
    Json j;
    j.kind = Json::Kind::kBool;
    j.b = v;
    return j;
  }
  Json number() {
    const char* begin = s_.c_str() + pos_;
    char* end = nullptr;
    const double v = std::strtod(begin, &end);
    if (end == begin) fail("bad value");
    pos_ += end - begin;
    Json j;
    j.kind = Json::Kind::kNumber;
    j.num = v;
    return j;
  }
  std::string string() {
    expect('"');
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size()) fail("bad escape");
        const char e = s_[pos_++];
        switch (e) {
          case 'n': c = '\n'; break;
          case 't': c = '\t'; break;
          case 'u': fail("\\u escapes are not used in the case table");
          default: c = e;
        }
      }
      out.push_back(c);
    }
    expect('"');
    return out;
  }
  Json array() {
    expect('[');
    Json j;
    j.kind = Json::Kind::kArray;
    ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return j;
    }
    for (;;) {
      j.arr.push_back(value());
      ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      expect(']');
      return j;
    }
  }
  Json object() {
    expect('{');
    Json j;
    j.kind = Json::Kind::kObject;
    ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return j;
    }
    for (;;) {
      ws();
      const std::string key = string();
      expect(':');
      j.obj[key] = value();
      ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      return j;
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

Json Json::parse(const std::string& text) {
  Parser p(text);
  Json j = p.value();
  p.finish();
  return j;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace fatest
