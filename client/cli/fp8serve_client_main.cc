// fp8serve-client: infer, bench, health, metadata and config against a KServe v2 / Triton gRPC
// server. The subcommand comes first; absl flags are global, so each subcommand's flags are parsed
// by ParseCommandLineWithUsage, then checked against the list the subcommand takes.
#include <cctype>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "client/cli/common.h"
#include "tools/cli/cli.h"

namespace {

using fp8serve::client::cli::Command;

// Single-letter spellings of common flags: absl would read "-u" as a flag named "u".
const std::map<std::string, std::string> kShortFlags = {{"-u", "--url"},   {"-m", "--model"},       {"-i", "--input"},
                                                        {"-b", "--batch"}, {"-c", "--concurrency"}, {"-k", "--top_k"}};

bool IsHelp(const std::string& a) { return a == "--help" || a == "-h" || a == "--helpfull" || a == "-help"; }

}  // namespace

int main(int argc, char** argv) {
  namespace cli = fp8serve::client::cli;
  // Debian builds abseil with absl::Mutex's deadlock detection on, which gRPC's locks pay for too:
  // a graph update per lock, several percent of a load generator's CPU. The client's locking is
  // covered by the tests' builds; here it only costs.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (argc < 2) {
    std::fputs(cli::GeneralHelp().c_str(), stderr);
    return cli::kExitUsage;
  }
  const std::string name = argv[1];
  if (name == "help" || IsHelp(name)) {
    if (argc > 2 && name == "help") {
      const Command* c = cli::FindCommand(argv[2]);
      if (c == nullptr) return cli::UsageError("help", absl::StrCat("unknown command '", argv[2], "'"));
      std::fputs(cli::CommandHelp(*c).c_str(), stdout);
    } else {
      std::fputs(cli::GeneralHelp().c_str(), stdout);
    }
    return cli::kExitOk;
  }
  const Command* command = cli::FindCommand(name);
  if (command == nullptr) {
    return cli::UsageError(name, "unknown command (infer, bench, health, metadata, config; see fp8serve-client help)");
  }

  // argv for absl: the program named after the subcommand, short flags spelled out, help answered
  // here so that it lists this subcommand's flags only.
  std::vector<std::string> args = {absl::StrCat("fp8serve-client ", name)};
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (; i < argc; ++i) args.emplace_back(argv[i]);
      break;
    }
    if (IsHelp(a)) {
      std::fputs(cli::CommandHelp(*command).c_str(), stdout);
      return cli::kExitOk;
    }
    if (auto it = kShortFlags.find(a); it != kShortFlags.end()) a = it->second;
    for (const auto& [short_flag, long_flag] : kShortFlags) {
      if (a.rfind(short_flag + "=", 0) == 0) a = long_flag + a.substr(short_flag.size());
    }
    args.push_back(std::move(a));
  }
  // Check the flags before absl sees them: an unknown flag, or one of another subcommand, is a usage
  // error with a one-line message (a value that follows a flag is skipped, so --show -1 stays).
  const auto all = absl::GetAllFlags();
  for (size_t i = 1; i < args.size() && args[i] != "--"; ++i) {
    const std::string& a = args[i];
    if (a.size() < 2 || a[0] != '-' || std::isdigit(static_cast<unsigned char>(a[1])) || a[1] == '.') continue;
    const size_t begin = a[1] == '-' ? 2 : 1;
    const size_t eq = a.find('=');
    std::string flag =
        absl::StrReplaceAll(a.substr(begin, eq == std::string::npos ? std::string::npos : eq - begin), {{"-", "_"}});
    if (!all.contains(flag) && flag.rfind("no", 0) == 0 && all.contains(flag.substr(2))) flag = flag.substr(2);
    auto it = all.find(flag);
    if (it == all.end())
      return cli::UsageError(name, absl::StrCat("unknown flag ", a, " (see fp8serve-client ", name, " --help)"));
    if (absl::StrContains(it->second->Filename(), "absl/")) continue;  // --flagfile and friends
    bool allowed = false;
    for (const char* f : command->flags) allowed |= flag == f;
    if (!allowed) {
      return cli::UsageError(name, absl::StrCat("--", absl::StrReplaceAll(flag, {{"_", "-"}}),
                                                " does not apply here (see fp8serve-client ", name, " --help)"));
    }
    // Its value, checked here so that a bad one is a usage error like the others (absl would exit 1).
    const std::string spelled = absl::StrCat("--", absl::StrReplaceAll(flag, {{"_", "-"}}));
    std::string value;
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (it->second->IsOfType<bool>()) {
      continue;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return cli::UsageError(name, absl::StrCat(spelled, " needs a value"));
    }
    if (std::string error; !it->second->ParseFrom(value, &error)) {
      return cli::UsageError(name, absl::StrCat(spelled, " ", value, ": ", error));
    }
  }
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  std::vector<std::string> positional =
      fp8serve::ParseCommandLineWithUsage(command->usage, static_cast<int>(cargs.size()), cargs.data());
  positional.erase(positional.begin());  // the program name
  return command->run(positional);
}
