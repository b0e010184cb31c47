// What every fuzz target shares: how it reports a broken promise, and where it puts its input when
// the code under test reads files (one private folder per process, removed at exit, with paths
// that stay the same from run to run).
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace fp8serve::fuzz {

// A broken promise: says which target (the program's name) and what, then aborts, which libFuzzer
// records as a crash together with the input.
[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, what.c_str());
  std::abort();
}
[[noreturn]] inline void Fail(const std::string& what, const std::string& detail) { Fail(what + ": " + detail); }

inline const std::filesystem::path& ScratchDir() {
  static const std::filesystem::path dir = [] {
    // mkdtemp replaces the trailing XXXXXX with a unique suffix.
    std::string tmpl = (std::filesystem::temp_directory_path() / "fp8serve-fuzz-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(ScratchDir(), ec); });
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

// Writes `size` bytes to `relative` under the scratch folder (making its parents) and returns the
// full path. Aborts when it cannot write: a fuzz target without its input tests nothing.
inline std::string WriteScratchFile(const std::string& relative, const uint8_t* data, size_t size) {
  const std::filesystem::path p = ScratchDir() / relative;
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  if (size > 0) out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) std::abort();
  return p.string();
}

}  // namespace fp8serve::fuzz
