// What every C++ tool's command line shows a person: exit codes in --help from the one table (and the same table in
// docs/exit-codes.md), defaults and numbers as written, parameter counts in M/B, and config-file keys that take '_'
// for '-' and name the closest valid key when misspelt.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "common/main_wrapper.h"
#include "config/ini.h"
#include "config/model_config.h"
#include "core/error.h"
#include "core/format.h"
#include "train/progress.h"

using namespace qwen3;
using qwen3::test::run_program;

namespace {

// The "  N  meaning" lines under "Exit codes" in a --help text: code → meaning.
std::map<int, std::string> help_exit_codes(const std::string& help) {
  std::map<int, std::string> codes;
  const auto start = help.find("Exit codes (docs/exit-codes.md):\n");
  if (start == std::string::npos) return codes;
  std::istringstream lines(help.substr(start));
  std::string line;
  std::getline(lines, line);
  while (std::getline(lines, line)) {
    if (line.size() > 5 && line.compare(0, 2, "  ") == 0 && std::isdigit(static_cast<unsigned char>(line[2])) &&
        line.compare(3, 2, "  ") == 0)
      codes[line[2] - '0'] = line.substr(5);
    else if (line.compare(0, 5, "     ") != 0)
      break;  // neither a code nor a note: the section has ended
  }
  return codes;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string repo_file(const std::string& relative) { return qwen3::test::test_data_dir() + "/../../" + relative; }

// The codes of `tool`'s row in docs/exit-codes.md's per-tool table ("| `qwen3-x` | 0 1 2 | ..."); empty when absent.
std::set<int> doc_tool_codes(const std::string& doc, const std::string& tool) {
  std::set<int> codes;
  const auto at = doc.find("| `" + tool + "` | ");
  if (at == std::string::npos) return codes;
  const auto from = doc.find("| ", at + 1) + 2;
  std::istringstream list(doc.substr(from, doc.find(" |", from) - from));
  for (int c; list >> c;) codes.insert(c);
  return codes;
}

// Every C++ tool and the --help that shows its exit codes.
const std::vector<std::pair<std::string, std::string>> kToolHelps = {
    {"qwen3-pretrain", "--help"},     {"qwen3-dataset", "--help"},    {"qwen3-dataset", "pack --help"},
    {"qwen3-golden-check", "--help"}, {"qwen3-comm-check", "--help"}, {"qwen3-results", "--help"},
    {"qwen3-calibrate", "--help"}};

}  // namespace

TEST(ExitCodes, EveryToolsHelpListsItsCodesWithTheTablesMeanings) {
  for (const auto& [tool, args] : kToolHelps) {
    SCOPED_TRACE(tool + " " + args);
    const auto r = run_program(tool, args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto codes = help_exit_codes(r.output);
    EXPECT_GE(codes.size(), 4u) << r.output;
    for (const int always : {0, 1, 2}) EXPECT_TRUE(codes.count(always)) << r.output;
    for (const auto& [code, meaning] : codes) EXPECT_EQ(meaning, exit_code_meaning(static_cast<ExitCode>(code)));
  }
  EXPECT_TRUE(help_exit_codes(run_program("qwen3-pretrain", "--help").output).count(7));
  EXPECT_TRUE(help_exit_codes(run_program("qwen3-golden-check", "--help").output).count(6));
}

TEST(ExitCodes, DocsListTheSameTable) {
  const auto doc = read_text(repo_file("docs/exit-codes.md"));
  ASSERT_FALSE(doc.empty()) << "docs/exit-codes.md is missing";
  for (const auto& row : kExitCodes) {
    const auto line = "| " + std::to_string(static_cast<int>(row.code)) + " | " + row.meaning + " |";
    EXPECT_NE(doc.find(line), std::string::npos) << "docs/exit-codes.md lacks the row\n" << line;
  }
  EXPECT_NE(read_text(repo_file("docs/cli.md")).find("(exit-codes.md)"), std::string::npos);
}

// docs/exit-codes.md's per-tool table has a row for every C++ tool, with the codes its --help lists.
TEST(ExitCodes, DocsPerToolRowsHoldEachToolsCodes) {
  const auto doc = read_text(repo_file("docs/exit-codes.md"));
  for (const auto& [tool, args] : kToolHelps) {
    SCOPED_TRACE(tool + " " + args);
    std::set<int> help;
    for (const auto& [code, meaning] : help_exit_codes(run_program(tool, args).output)) help.insert(code);
    EXPECT_EQ(doc_tool_codes(doc, tool), help) << "docs/exit-codes.md's row for " << tool;
  }
}

// The rule of code 4 for every output: one that exists without --overwrite, or whose folder is missing, is refused with
// 4 before any work (no training step, no measurement, no results file).
TEST(ExitCodes, EveryOutputThatExistsOrCannotBeWrittenEndsWithFour) {
  namespace fs = std::filesystem;
  const auto dir = qwen3::test::fresh_dir("cli_test_outputs");
  const auto at = [&](const std::string& name) { return "'" + (dir / name).string() + "'"; };
  ASSERT_EQ(run_program("qwen3-dataset", "synthetic --out " + at("data.h5") + " --vocab-size 512 --lengths 32 --documents 4")
                .exit_code, 0);
  fs::create_directories(dir / "hf");
  std::ofstream(dir / "a-file") << "x";
  std::ofstream(dir / "cal.json") << "{}";
  const std::string train = "--model tiny --data " + at("data.h5") + " --seq-len 32 --global-batch 2 --steps 1 ";
  struct Case {
    std::string tool, args, expect;
  };
  const std::vector<Case> cases = {
      {"qwen3-pretrain", train + "--out " + at("data.h5"), "already exists"},
      {"qwen3-pretrain", train + "--out " + at("none/run.h5"), "cli_test_outputs/none"},
      {"qwen3-pretrain", train + "--out " + at("run1.h5") + " --export-hf " + at("hf"), "--export-hf: "},
      {"qwen3-pretrain", train + "--out " + at("run2.h5") + " --save " + at("a-file"), "--save: "},
      {"qwen3-dataset", "synthetic --out " + at("data.h5") + " --vocab-size 512 --lengths 32 --documents 4", "already exists"},
      {"qwen3-dataset", "synthetic --out " + at("none/d.h5") + " --vocab-size 512 --lengths 32 --documents 4", "cli_test_outputs/none"},
      {"qwen3-calibrate", "--out " + at("cal.json"), "already exists (pass --overwrite"},
      {"qwen3-calibrate", "--out " + at("none/cal.json"), "cli_test_outputs/none"},
  };
  for (const auto& c : cases) {
    const auto r = run_program(c.tool, c.args);
    EXPECT_EQ(r.exit_code, 4) << c.tool << " " << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.tool << " " << c.args << "\n" << r.output;
    EXPECT_EQ(r.output.find("step 1/1"), std::string::npos) << "refused after training\n" << r.output;
  }
  EXPECT_FALSE(fs::exists(dir / "run1.h5"));
  EXPECT_FALSE(fs::exists(dir / "run2.h5"));
  EXPECT_EQ(read_text((dir / "cal.json").string()), "{}");
}

// "<tool>: error: <message>", never the tool's name twice, whoever raised the message.
TEST(ErrorMessages, NoToolRepeatsItsName) {
  EXPECT_STREQ(without_program_prefix("qwen3-x", "qwen3-x: no device"), "no device");
  EXPECT_STREQ(without_program_prefix("qwen3-x", "qwen3-xy: no device"), "qwen3-xy: no device");
  EXPECT_STREQ(without_program_prefix(nullptr, "qwen3-x: no device"), "qwen3-x: no device");
  const auto dir = qwen3::test::fresh_dir("cli_test_prefix");
  const std::string out = "'" + (dir / "cal.json").string() + "'";
  const std::vector<std::pair<std::string, std::string>> failing = {
      {"qwen3-calibrate", "--out " + out},  // no GPU (hidden below), or a build without CUDA
      {"qwen3-calibrate", "--out " + out + " --models nope"},
      {"qwen3-calibrate", "--bogus"},
      {"qwen3-pretrain", "--model nope --data x.h5 --out " + out},
      {"qwen3-pretrain", "--plan --seq-len 0"},
      {"qwen3-dataset", "info " + out},
      {"qwen3-dataset", "synthetic --bogus"},
      {"qwen3-results", out},
      {"qwen3-golden-check", "--golden " + out},
      {"qwen3-comm-check", "--device nope"},
  };
  for (const auto& [tool, args] : failing) {
    const auto r = qwen3::test::run_command("CUDA_VISIBLE_DEVICES= '" + qwen3::test::bin_dir() + "/" + tool + "' " + args);
    EXPECT_NE(r.exit_code, 0) << tool << " " << args << "\n" << r.output;
    EXPECT_NE(r.output.find(tool + ": "), std::string::npos) << tool << " " << args << "\n" << r.output;
    EXPECT_EQ(r.output.find(tool + ": error: " + tool), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find(tool + ": internal error: " + tool), std::string::npos) << r.output;
  }
}

TEST(NumberFormat, ShortestRoundTripAsPeopleWriteIt) {
  const std::vector<std::pair<double, std::string>> cases = {
      {3e-4, "0.0003"}, {3e-5, "3e-5"}, {1e-8, "1e-8"}, {0.02, "0.02"}, {1.0, "1"},        {0.95, "0.95"},
      {120, "120"},     {0, "0"},       {-0.5, "-0.5"}, {1e-4, "0.0001"}, {2.5e20, "2.5e20"}, {0.1 + 0.2, "0.30000000000000004"}};
  for (const auto& [value, text] : cases) {
    EXPECT_EQ(format_shortest(value), text);
    EXPECT_EQ(std::stod(format_shortest(value)), value) << text;  // reads back to the same double
  }
}

TEST(NumberFormat, ParameterCountsInMillionsBelowABillionThenBillions) {
  EXPECT_EQ(format_parameter_count(283'000), "0.28 M");
  EXPECT_EQ(format_parameter_count(596'049'920), "596 M");
  EXPECT_EQ(format_parameter_count(999'999'999), "1.00 B");
  EXPECT_EQ(format_parameter_count(1'720'574'976), "1.72 B");
  EXPECT_EQ(format_parameter_count(32'762'123'264), "32.8 B");
  const auto tiny = format_parameter_count(model_preset("tiny").parameter_count());
  EXPECT_EQ(tiny.substr(tiny.size() - 2), " M") << tiny;
}

TEST(NumberFormat, HelpDefaultsPrintAsWritten) {
  const auto r = run_program("qwen3-pretrain", "--help");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* shown : {"--lr arg (=0.0003)", "--min-lr arg (=3e-5)", "--adam-eps arg (=1e-8)",
                            "--init-std arg (=0.02)", "--beta2 arg (=0.95)", "--clip-grad arg (=1)"})
    EXPECT_NE(r.output.find(shown), std::string::npos) << shown << "\n" << r.output;
  EXPECT_EQ(r.output.find("0000000"), std::string::npos) << r.output;
}

TEST(ConfigKeys, ClosestKeyByEditDistance) {
  const std::vector<std::string> keys = {"global-batch", "micro-batch", "seq-len", "lr", "min-lr", "steps"};
  EXPECT_EQ(closest_key("golbal-batch", keys), "global-batch");
  EXPECT_EQ(closest_key("global_batch_size", keys), "global-batch");
  EXPECT_EQ(closest_key("seq_length", keys), "seq-len");
  EXPECT_EQ(closest_key("stpes", keys), "steps");
  EXPECT_EQ(closest_key("colour", keys), "");
  EXPECT_EQ(unknown_key_message("lrr", keys), "unknown key 'lrr' (did you mean 'lr'?)");
  EXPECT_EQ(unknown_key_message("colour", keys), "unknown key 'colour'");
}

TEST(ConfigKeys, ModelConfigNamesTheKeyItMeant) {
  const std::string path = ::testing::TempDir() + "/cli_test_model.ini";
  std::ofstream(path) << "vocab_size = 300\nhidden_size = 32\nintermediate_size = 64\nnum_hidden_layer = 2\n"
                         "num_hidden_layers = 2\nnum_attention_heads = 4\nnum_key_value_heads = 2\nhead_dim = 8\n";
  try {
    load_model_config(path);
    ADD_FAILURE() << "a misspelt key was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown key 'num_hidden_layer' (did you mean 'num_hidden_layers'?)"),
              std::string::npos)
        << e.what();
  }
}

// qwen3-pretrain --config spells keys as the command line does or as sweep specifications do (global_batch).
TEST(ConfigKeys, RunConfigTakesUnderscoresAndNamesTheClosestKey) {
  const std::string path = ::testing::TempDir() + "/cli_test_run.ini";
  auto plan_with = [&](const std::string& text) {
    std::ofstream(path) << text;
    return run_program("qwen3-pretrain", "--plan --config '" + path + "'");
  };
  auto r = plan_with("seq_len = 96\nmicro_batch = 2\nglobal-batch = 4\n");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("seq 96, micro-batch 2"), std::string::npos) << r.output;
  r = plan_with("seq-len = 96\ngolbal_batch = 4\n");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown key 'golbal_batch' (did you mean 'global-batch'?)"), std::string::npos) << r.output;
  r = plan_with("seq-len = 96\ndevice_memory = 80GB\n");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("'device_memory' is a command-line option only (--device-memory)"), std::string::npos)
      << r.output;
  r = plan_with("seq_len = 96\nseq-len = 64\n");
  EXPECT_EQ(r.exit_code, 2) << r.output;  // one option given twice, whatever the spelling
  // A value the option refuses names the file it came from; the same value on the command line does not
  r = plan_with("seq_len = 96\nprecision = FP8\n");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--config '" + path + "': --precision: invalid value 'FP8' (valid: bf16, fp8)"),
            std::string::npos) << r.output;
  std::ofstream(path) << "seq_len = 96\n";
  r = run_program("qwen3-pretrain", "--plan --config '" + path + "' --precision FP8");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output.find("--config"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--precision: invalid value 'FP8'"), std::string::npos) << r.output;
}

// Run and model configs have no [sections]: a key under one is refused saying so (not just "unknown key 'run.model'").
TEST(ConfigKeys, ASectionIsRefusedSayingSectionsAreNotUsed) {
  const std::string path = ::testing::TempDir() + "/cli_test_sections.ini";
  std::ofstream(path) << "[run]\nmodel = tiny\nseq_len = 32\n";
  auto r = run_program("qwen3-pretrain", "--plan --config '" + path + "'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown key 'run.model': this file has no sections (the line [run] is not used"),
            std::string::npos) << r.output;
  EXPECT_EQ(unknown_key_message("run.lrr", {"lr", "steps"}),
            "unknown key 'run.lrr': this file has no sections (the line [run] is not used; write its keys before any "
            "[section] line, or drop it) (did you mean 'lr'?)");
  std::ofstream(path) << "[model]\nvocab_size = 300\nhidden_size = 32\n";
  try {
    load_model_config(path);
    ADD_FAILURE() << "a model config under [model] was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("it is under [model]: this file has no sections"), std::string::npos) << e.what();
  }
}

// Step lines and the summary show small throughputs with 3 significant digits (a CPU run: not "0.00 TFLOP/s/dev").
TEST(NumberFormat, ThroughputWithThreeSignificantDigits) {
  EXPECT_EQ(format_significant(0.00512), "0.00512");
  EXPECT_EQ(format_significant(0.0512), "0.0512");
  EXPECT_EQ(format_significant(5.123), "5.12");
  EXPECT_EQ(format_significant(51.23), "51.2");
  EXPECT_EQ(format_significant(512.3), "512");
  EXPECT_EQ(format_significant(0), "0");
  const StepRecord cpu{6.2, 2.9, 3e-5, 0.02, 3221, 0.00512};
  EXPECT_NE(progress_line(1, 1, cpu, 1 << 20, 0).find("| 0.00512 TFLOP/s/dev | MFU 0.000518% |"), std::string::npos)
      << progress_line(1, 1, cpu, 1 << 20, 0);
  const StepRecord gpu{6.2, 2.9, 3e-5, 0.5, 73300, 422.3};
  EXPECT_NE(progress_line(1, 1, gpu, 1 << 20, 0).find("| 422 TFLOP/s/dev | MFU 42.7% |"), std::string::npos)
      << progress_line(1, 1, gpu, 1 << 20, 0);
}

// The start banner gives the model's size in the unit people use (not "0.000283 B").
TEST(NumberFormat, StartBannerSaysTinyInMillions) {
  const auto dir = qwen3::test::fresh_dir("cli_test_banner");
  const auto data = (dir / "data.h5").string();
  ASSERT_EQ(run_program("qwen3-dataset", "synthetic --out '" + data + "' --vocab-size 512 --lengths 32 --documents 4")
                .exit_code, 0);
  const auto r = run_program("qwen3-pretrain", "--model tiny --data '" + data + "' --seq-len 32 --global-batch 2 "
                                               "--steps 1 --out '" + (dir / "run.h5").string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("qwen3-pretrain: tiny (" + format_parameter_count(model_preset("tiny").parameter_count()) +
                          " parameters)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" M parameters)"), std::string::npos) << r.output;
}
