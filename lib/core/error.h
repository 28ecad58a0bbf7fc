// Error types and exit codes: every failure reaches the user as one message and a documented exit code.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace qwen3 {

// Process exit codes. Stable: job scripts and the sweep tool read them. What each means is kExitCodes below.
enum class ExitCode : int {
  ok = 0,
  internal = 1,
  usage = 2,
  input = 3,
  output = 4,
  out_of_memory = 5,
  check_failed = 6,
  preempted = 7,
  diverged = 8,
};

// The one table of exit codes and their meanings: every tool's --help prints its rows (app/common/help.h) and
// docs/exit-codes.md holds the same rows (tests/unit/cli_test.cpp compares them).
struct ExitCodeInfo {
  ExitCode code;
  const char* meaning;
};
inline constexpr ExitCodeInfo kExitCodes[] = {
    {ExitCode::ok, "success"},
    {ExitCode::internal, "internal error: a bug or an unexpected library failure"},
    {ExitCode::usage, "usage: unknown option, invalid value, bad config file, layout or batch that does not divide"},
    {ExitCode::input, "input data: dataset, golden file, model config or checkpoint missing, corrupt or of another "
                      "format or version"},
    {ExitCode::output, "output: the output exists (without --overwrite) or another run is writing it, or its folder "
                       "is missing, unwritable or full"},
    {ExitCode::out_of_memory, "out of memory (device or host); a results file says status oom or oom_predicted"},
    {ExitCode::check_failed, "a check failed: a compared quantity is out of tolerance or a known answer is wrong"},
    {ExitCode::preempted, "preempted: stopped by SIGTERM/SIGUSR1 after saving a checkpoint (status preempted); "
                          "resume it"},
    {ExitCode::diverged, "diverged: a loss or gradient norm was not finite; the run stopped at that step (status "
                         "diverged), no checkpoint written from it"},
};

// The meaning of a code, from kExitCodes.
inline const char* exit_code_meaning(ExitCode code) {
  for (const auto& row : kExitCodes)
    if (row.code == code) return row.meaning;
  return "unknown exit code";
}

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const { return code_; }
  // The short status word written to results files: "oom", "oom_predicted", "diverged" or "error" (from the code, so
  // that another rank's error, which reaches this rank as a plain Error, gets the same word).
  virtual const char* status() const {
    return code_ == ExitCode::out_of_memory ? "oom" : code_ == ExitCode::diverged ? "diverged" : "error";
  }

 private:
  ExitCode code_;
};

struct UsageError : Error {
  explicit UsageError(const std::string& m) : Error(ExitCode::usage, m) {}
};
struct InputError : Error {
  explicit InputError(const std::string& m) : Error(ExitCode::input, m) {}
};
struct OutputError : Error {
  explicit OutputError(const std::string& m) : Error(ExitCode::output, m) {}
};
struct InternalError : Error {
  explicit InternalError(const std::string& m) : Error(ExitCode::internal, m) {}
};

// Raised by an allocator that cannot satisfy a request; carries what the results file records.
struct OutOfMemory : Error {
  OutOfMemory(const std::string& m, std::string category, std::int64_t requested, std::int64_t in_use)
      : Error(ExitCode::out_of_memory, m), category(std::move(category)), requested_bytes(requested),
        in_use_bytes(in_use) {}
  std::string category;
  std::int64_t requested_bytes;
  std::int64_t in_use_bytes;
};

// A run whose memory plan (train/memory_plan.h) does not fit its device: stopped before allocating anything.
struct PredictedOutOfMemory : Error {
  explicit PredictedOutOfMemory(const std::string& m) : Error(ExitCode::out_of_memory, m) {}
  const char* status() const override { return "oom_predicted"; }
};

// A step whose loss or gradient norm is not finite (NaN or ±inf): the run stops before the optimizer applies it.
struct Diverged : Error {
  Diverged(const std::string& m, std::int64_t at_step) : Error(ExitCode::diverged, m), at_step(at_step) {}
  std::int64_t at_step;  // the 1-based step whose loss or gradient norm was not finite
};

// Throws InternalError with file:line when an invariant does not hold.
#define QWEN3_ASSERT(cond, msg)                                                                   \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      throw ::qwen3::InternalError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + \
                                   (msg) + " (" #cond ")");                                       \
  } while (0)

}  // namespace qwen3
