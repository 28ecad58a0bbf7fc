// qwen3-dataset: writes (synthetic, pack) and describes (info) the HDF5 token datasets the trainer reads.
#include <boost/program_options.hpp>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/help.h"
#include "common/main_wrapper.h"
#include "common/options_util.h"
#include "core/error.h"
#include "io/dataset.h"

namespace po = boost::program_options;
using namespace qwen3;

namespace {

constexpr const char* kProgram = "qwen3-dataset";

constexpr const char* kToolHelp =
    "usage: qwen3-dataset <subcommand> [options]\n"
    "\n"
    "Writes and describes the HDF5 token datasets read by qwen3-pretrain (format: docs/datasets.md).\n"
    "\n"
    "subcommands:\n"
    "  synthetic   write a learnable synthetic dataset (seeded Markov chain over the vocabulary)\n"
    "  pack        bucket tokens by sequence length: a .npy or flat binary file (plus optional document offsets),\n"
    "              or a Megatron-LM/NeMo indexed dataset (--megatron PREFIX: PREFIX.idx + PREFIX.bin)\n"
    "  info FILE   print a dataset's format, vocabulary, source and documents per length (--format json: for tools)\n"
    "\n"
    "Run 'qwen3-dataset <subcommand> --help' for its options.\n\n";

// The exit codes of every subcommand, for --help.
std::string dataset_exit_codes() {
  return exit_codes_help({{ExitCode::ok},
                          {ExitCode::internal},
                          {ExitCode::usage},
                          {ExitCode::input, "pack: a bad tokens, offsets or Megatron .idx/.bin file; info: not a valid "
                                            "dataset"},
                          {ExitCode::output},
                          {ExitCode::out_of_memory}});
}

void require_positive_option(const po::variables_map& vm, const char* name) {
  const auto v = vm[name].as<std::int64_t>();
  if (v <= 0) throw UsageError(std::string("--") + name + " must be positive (got " + std::to_string(v) + ")");
}

// Parses one subcommand's arguments into vm. Returns false when --help was asked for (and printed).
bool parse(const std::string& sub, const std::vector<std::string>& args, const po::options_description& options,
           const po::positional_options_description& positional, po::variables_map& vm) {
  try {
    const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    po::store(po::command_line_parser(args).options(options).positional(positional).style(style).run(), vm);
    if (vm.count("help")) {
      std::cout << options << "\n" << dataset_exit_codes();
      return false;
    }
    po::notify(vm);  // checks required options
  } catch (const po::error& e) {
    throw UsageError(sub + ": " + e.what() + " (see 'qwen3-dataset " + sub + " --help')");
  }
  return true;
}

// One line saying what was written, from the file itself.
void report_written(const std::string& path) {
  const auto summary = inspect_dataset(path);
  std::string buckets;
  std::int64_t documents = 0;
  for (const auto& [len, n] : summary.documents_per_length) {
    buckets += (buckets.empty() ? "" : ", ") + std::to_string(len) + ": " + std::to_string(n);
    documents += n;
  }
  std::printf("%s: wrote %s: %zu buckets, %lld documents (length: documents %s), vocab size %lld\n", kProgram,
              path.c_str(), summary.documents_per_length.size(), static_cast<long long>(documents), buckets.c_str(),
              static_cast<long long>(summary.vocab_size));
}

int run_synthetic(const std::vector<std::string>& args) {
  po::options_description options(
      "usage: qwen3-dataset synthetic --out F --vocab-size V --lengths L1,L2,... --documents N [options]\n\n"
      "Writes N documents of every length from a seeded first-order Markov chain (each token has 4 likely\n"
      "successors), so a few training steps visibly lower the loss. Same arguments => identical tokens.\n\noptions");
  options.add_options()
      ("help,h", "this help")
      ("out", po::value<std::string>()->required(), "output dataset file (.h5)")
      ("vocab-size", po::value<std::int64_t>()->required(), "vocabulary size; token ids are in [0, V)")
      ("lengths", po::value<std::string>()->required(), "comma-separated sequence lengths, e.g. 1024,2048")
      ("documents", po::value<std::int64_t>()->required(), "documents per length")
      ("seed", po::value<std::string>()->default_value("1234"), "random seed")
      ("overwrite", po::bool_switch(), "replace an existing output file");
  po::variables_map vm;
  if (!parse("synthetic", args, options, po::positional_options_description(), vm)) return 0;
  require_positive_option(vm, "vocab-size");
  require_positive_option(vm, "documents");
  const auto lengths = parse_positive_list("--lengths", vm["lengths"].as<std::string>());
  const auto seed = parse_seed("--seed", vm["seed"].as<std::string>());
  const auto out = vm["out"].as<std::string>();
  write_synthetic_dataset(out, vm["vocab-size"].as<std::int64_t>(), lengths, vm["documents"].as<std::int64_t>(), seed,
                          vm["overwrite"].as<bool>());
  report_written(out);
  return 0;
}

int run_pack(const std::vector<std::string>& args) {
  po::options_description options(
      "usage: qwen3-dataset pack --tokens F [--offsets F] --out F --vocab-size V --lengths L1,L2,... [options]\n"
      "       qwen3-dataset pack --megatron PREFIX --out F --vocab-size V --lengths L1,L2,... [options]\n\n"
      "Buckets a token file by sequence length: a NumPy .npy file (1-D, little-endian int32, int64, uint16 or\n"
      "uint32; known by its header) or flat little-endian ids of --dtype. Documents are given by an offsets file of\n"
      "little-endian int64 boundaries (N+1 values, first 0, last = token count); without it the file is one\n"
      "document. Or a Megatron-LM/NeMo indexed dataset (what preprocess_data.py writes: PREFIX.idx with the\n"
      "MMIDIDX header, PREFIX.bin): its index gives the dtype and the documents, each its sequences joined.\n"
      "Mode 'pack' concatenates the documents (eos after each with --eos-id) and cuts the stream into rows of L,\n"
      "dropping the remainder; mode 'crop' keeps the first L tokens of every document with >= L.\n"
      "\noptions");
  options.add_options()
      ("help,h", "this help")
      ("tokens", po::value<std::string>(), "token ids: a .npy file, or a flat binary file of --dtype")
      ("megatron", po::value<std::string>(), "a Megatron-LM/NeMo indexed dataset: PREFIX of PREFIX.idx and "
       "PREFIX.bin (a path ending .idx or .bin names the pair); instead of --tokens, --offsets and --dtype")
      ("offsets", po::value<std::string>()->default_value(""), "int64 document boundaries [N+1] (optional)")
      ("dtype", po::value<std::string>(), "raw token file element type: uint16, int32 (default), uint32; a .npy "
       "file's header gives its own")
      ("out", po::value<std::string>()->required(), "output dataset file (.h5)")
      ("vocab-size", po::value<std::int64_t>()->required(), "vocabulary size; every token must be < V")
      ("lengths", po::value<std::string>()->required(), "comma-separated sequence lengths, e.g. 1024,2048")
      ("max-documents", po::value<std::int64_t>()->default_value(0), "documents per bucket at most (0 = all)")
      ("mode", po::value<std::string>()->default_value("pack"), "pack or crop")
      ("eos-id", po::value<std::int64_t>()->default_value(-1), "token appended after every document in pack mode")
      ("overwrite", po::bool_switch(), "replace an existing output file");
  po::variables_map vm;
  if (!parse("pack", args, options, po::positional_options_description(), vm)) return 0;
  PackOptions o;
  o.tokens_path = vm.count("tokens") ? vm["tokens"].as<std::string>() : "";
  o.megatron = vm.count("megatron") ? vm["megatron"].as<std::string>() : "";
  o.offsets_path = vm["offsets"].as<std::string>();
  o.dtype = vm.count("dtype") ? vm["dtype"].as<std::string>() : "";
  o.out_path = vm["out"].as<std::string>();
  o.vocab_size = vm["vocab-size"].as<std::int64_t>();
  o.lengths = parse_positive_list("--lengths", vm["lengths"].as<std::string>());
  o.max_documents = vm["max-documents"].as<std::int64_t>();
  o.mode = vm["mode"].as<std::string>();
  o.eos_id = vm["eos-id"].as<std::int64_t>();
  o.overwrite = vm["overwrite"].as<bool>();
  require_positive_option(vm, "vocab-size");
  pack_dataset(o);  // checks every option first (check_pack_options), by these options' names
  report_written(o.out_path);
  return 0;
}

// The seed of a synthetic dataset, from its source attribute ("synthetic seed=1234 (...)", docs/datasets.md).
std::optional<std::uint64_t> synthetic_seed(const std::string& source) {
  const std::string prefix = "synthetic seed=";
  if (source.rfind(prefix, 0) != 0) return std::nullopt;
  std::uint64_t seed = 0;
  const char* begin = source.data() + prefix.size();
  const auto [end, ec] = std::from_chars(begin, source.data() + source.size(), seed);
  if (ec != std::errc() || end == begin) return std::nullopt;
  return seed;
}

// info --format json: one JSON object on one line (fields in info --help).
std::string info_json(const std::string& path, const DatasetSummary& s) {
  nlohmann::json buckets = nlohmann::json::array();
  std::int64_t documents = 0, tokens = 0;
  for (const auto& [len, n] : s.documents_per_length) {
    buckets.push_back({{"seq_len", len}, {"documents", n}, {"tokens", len * n}});
    documents += n;
    tokens += len * n;
  }
  const auto seed = synthetic_seed(s.source);
  return nlohmann::json{{"file", path},
                        {"format", kDatasetFormat},
                        {"format_version", kDatasetFormatVersion},
                        {"vocab_size", s.vocab_size},
                        {"source", s.source},
                        {"seed", seed ? nlohmann::json(*seed) : nlohmann::json(nullptr)},
                        {"created_utc", s.created_utc},
                        {"buckets", buckets},
                        {"documents", documents},
                        {"tokens", tokens}}
      .dump();
}

int run_info(const std::vector<std::string>& args) {
  po::options_description options(
      "usage: qwen3-dataset info FILE [--format text|json]\n\nPrints a dataset's format, version, vocabulary size, "
      "source and the number\nof documents per sequence length (format and bucket shapes are checked; token ids are "
      "not scanned).\n\noptions");
  options.add_options()("help,h", "this help")("file", po::value<std::string>()->required(), "dataset file (.h5)")(
      "format", po::value<std::string>()->default_value("text"),
      "text (for people) or json: one JSON object on one line, for tools such as qwen3-sweep: file, format, "
      "format_version, vocab_size, source, seed (a synthetic dataset's; null otherwise), created_utc, buckets "
      "[{seq_len, documents, tokens}] in increasing length, documents, tokens (totals)");
  po::positional_options_description positional;
  positional.add("file", 1);
  po::variables_map vm;
  if (!parse("info", args, options, positional, vm)) return 0;
  const auto format = vm["format"].as<std::string>();
  require_choice("--format", format, {"text", "json"});
  const auto path = vm["file"].as<std::string>();
  const auto s = inspect_dataset(path);
  if (format == "json") {
    std::printf("%s\n", info_json(path, s).c_str());
    return 0;
  }
  std::printf("file:           %s\n", path.c_str());
  std::printf("format:         %s\n", kDatasetFormat);
  std::printf("format_version: %lld\n", static_cast<long long>(kDatasetFormatVersion));
  std::printf("vocab_size:     %lld\n", static_cast<long long>(s.vocab_size));
  std::printf("source:         %s\n", s.source.c_str());
  std::printf("created_utc:    %s\n", s.created_utc.c_str());
  std::printf("%12s %12s %16s\n", "seq_len", "documents", "tokens");
  std::int64_t documents = 0, tokens = 0;
  for (const auto& [len, n] : s.documents_per_length) {
    std::printf("%12lld %12lld %16lld\n", static_cast<long long>(len), static_cast<long long>(n),
                static_cast<long long>(len * n));
    documents += n;
    tokens += len * n;
  }
  std::printf("%12s %12lld %16lld\n", "total", static_cast<long long>(documents), static_cast<long long>(tokens));
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 2) throw UsageError("missing subcommand (valid: synthetic, pack, info; see 'qwen3-dataset --help')");
  const std::string sub = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::cout << kToolHelp << dataset_exit_codes();
    return 0;
  }
  if (sub == "synthetic") return run_synthetic(args);
  if (sub == "pack") return run_pack(args);
  if (sub == "info") return run_info(args);
  throw UsageError("unknown subcommand '" + sub + "' (valid: synthetic, pack, info)");
}

}  // namespace

int main(int argc, char** argv) {
  return run_main(kProgram, [&] { return run(argc, argv); });
}
