#include "tools/cli/cli.h"

#include <algorithm>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace fp8serve {

std::vector<std::string> ParseCommandLineWithUsage(const char* usage, int argc, char** argv) {
  absl::FlagsUsageConfig config;
  // Our flags live in our sources; absl's own (--flagfile, --fromenv, ...) stay under --helpfull.
  config.contains_help_flags = [](absl::string_view path) { return !absl::StrContains(path, "absl/"); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  // Accept --flag-name as well as absl's --flag_name (Triton's and most CLIs' spelling).
  std::vector<std::string> normalized(argv, argv + argc);
  for (size_t i = 1; i < normalized.size(); ++i) {
    std::string& a = normalized[i];
    if (a == "--") break;
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') continue;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t k = 2; k < end; ++k) {
      if (a[k] == '-') a[k] = '_';
    }
  }
  std::vector<char*> args;
  for (std::string& a : normalized) args.push_back(a.data());
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  return {rest.begin(), rest.end()};
}

}  // namespace fp8serve
