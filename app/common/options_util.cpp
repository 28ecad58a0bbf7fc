// Implementation of the option helpers (see options_util.h).
#include "common/options_util.h"

#include <charconv>
#include <iostream>

#include "core/error.h"
#include "core/format.h"

namespace po = boost::program_options;

namespace qwen3 {

bool parse_command_line(int argc, char** argv, const po::options_description& desc, po::variables_map& vm,
                        const po::positional_options_description* positional, const std::string& help_epilogue) {
  try {
    po::command_line_parser parser(argc, argv);
    // No abbreviations: "--over" must not silently mean "--overwrite".
    parser.options(desc).style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n" << help_epilogue;
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()) + " (see --help)");
  }
  return true;
}

po::typed_value<double>* number_value(double* field) {
  return po::value(field)->default_value(*field, format_shortest(*field));
}

std::vector<std::int64_t> parse_positive_list(const std::string& option, const std::string& text) {
  const std::string hint = " (expected positive integers separated by commas, e.g. 1024,2048)";
  std::vector<std::int64_t> values;
  std::size_t start = 0;
  while (true) {
    const auto comma = text.find(',', start);
    const auto part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    std::int64_t value = 0;
    const char* end = part.data() + part.size();
    auto [ptr, ec] = std::from_chars(part.data(), end, value);
    if (part.empty() || ec != std::errc() || ptr != end || part[0] == '-' || part[0] == '+')
      throw UsageError(option + " '" + text + "' has an invalid entry '" + part + "'" + hint);
    if (value <= 0) throw UsageError(option + " '" + text + "' has a non-positive entry '" + part + "'" + hint);
    values.push_back(value);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return values;
}

}  // namespace qwen3
