// Command-line setup shared by fp8serve's programs: --help lists the program's own flags (absl's
// default filter expects the source file to be named after the binary, which ours are not).
#pragma once

#include <string>
#include <vector>

namespace fp8serve {

// Sets the usage text, parses flags (exits on --help or a bad flag, as absl does) and returns the
// positional arguments, argv[0] first. Flags may be spelled --flag-name or --flag_name.
std::vector<std::string> ParseCommandLineWithUsage(const char* usage, int argc, char** argv);

}  // namespace fp8serve
