// Boost.ProgramOptions helpers shared by the mains: parse into UsageError (one line, exit 2), --help, choices, lists.
#pragma once
#include "core/parse.h"  // parse_seed, require_choice
#include <boost/program_options.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace qwen3 {

// Parses argv (and positional arguments when given); prints desc, then help_epilogue (e.g. exit_codes_help(...)
// of common/help.h), and returns false on --help.
// Any Boost error (unknown option, missing value, bad number) becomes a UsageError naming the option.
bool parse_command_line(int argc, char** argv, const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm,
                        const boost::program_options::positional_options_description* positional = nullptr,
                        const std::string& help_epilogue = "");

// A double option whose --help default prints as written (0.0003, not Boost's 0.00029999999999999997).
boost::program_options::typed_value<double>* number_value(double* field);

// "1024,2048" → {1024, 2048}. Strict: digits only, no sign, no empty parts, every value positive; else UsageError
// naming the option ("1024,abc", "0", "1024," are rejected).
std::vector<std::int64_t> parse_positive_list(const std::string& option, const std::string& text);


}  // namespace qwen3
