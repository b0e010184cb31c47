#include "tools/cli/cli.h"

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
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  return {rest.begin(), rest.end()};
}

}  // namespace fp8serve
