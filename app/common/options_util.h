// Boost.ProgramOptions helpers shared by the mains: parse into UsageError (one line, exit 2), --help, choices, lists.
#pragma once
#include <boost/program_options.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace qwen3 {

// Parses argv (and positional arguments when given); prints desc and returns false on --help.
// Any Boost error (unknown option, missing value, bad number) becomes a UsageError naming the option.
bool parse_command_line(int argc, char** argv, const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm,
                        const boost::program_options::positional_options_description* positional = nullptr);

// Throws UsageError "--opt: invalid value 'x' (valid: a, b, c)" unless value is one of choices.
void require_choice(const std::string& option, const std::string& value, const std::vector<std::string>& choices);

// "1024,2048" → {1024, 2048}; every element a positive integer, else UsageError naming the option.
std::vector<std::int64_t> parse_positive_list(const std::string& option, const std::string& text);

// "--opt must be positive, got x" style checks.
void require_positive(const std::string& option, double value);

}  // namespace qwen3
