// The results file (docs/results.md): one HDF5 file per run, written aside as <out>.partial and renamed only when
// the run ends, so a crash or kill never leaves a file that looks complete; a failed run still records its status.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/h5.h"
#include "io/memory_tracer.h"
#include "io/output_lock.h"

namespace qwen3 {

inline constexpr const char* kResultsFormat = "qwen3-pretrain-results";
inline constexpr std::int64_t kResultsVersion = 1;

struct StepRecord {
  double loss, grad_norm, lr, step_time_s, tokens_per_s, tflops_per_device;
};

struct RunFacts {
  std::string git_commit, start_utc;
  std::vector<std::string> hostnames;  // per rank
  std::map<std::string, std::string> library_versions;
  int world_size = 1;
};

class ResultsWriter {
 public:
  // Takes the output's lock (io/output_lock.h: another run writing the same path is refused, named), then checks the
  // destination before anything runs: refuses an existing file unless overwrite (OutputError), and an unwritable
  // folder (OutputError). Creates <path>.partial with status "running".
  ResultsWriter(const std::string& path, bool overwrite);
  ~ResultsWriter();  // an unfinished writer leaves only the .partial file, status "running"
  ResultsWriter(const ResultsWriter&) = delete;
  ResultsWriter& operator=(const ResultsWriter&) = delete;

  void write_facts(const RunFacts& facts);
  void write_config(const std::vector<std::pair<std::string, std::string>>& settings);
  // Appends one step and flushes everything written so far, so a killed run keeps it in the .partial file.
  void append_step(const StepRecord& s);
  // Timings so far (rewritten as the run goes; 0 for a phase not reached); update_total_time keeps the others.
  void write_timings(double init_s, double first_step_s, double total_s);
  void update_total_time(double total_s);
  // Appends each rank's new memory samples to /memory/trace/rank_<r> (the first call creates one trace per entry of
  // new_per_rank: the world size) and rewrites /memory/peak_bytes; the device's memory, where the samples know it, to
  // /memory/device_trace/rank_<r> and /memory/device_peak_bytes. Not flushed (flush() or append_step do).
  void append_memory(const std::vector<std::vector<MemorySample>>& new_per_rank);
  void flush();
  // A 1-D dataset at `path` (e.g. ranks/compute_s: one value per rank, in rank order) with a description:
  // float64 values, or int64 for integer quantities (ranks/tp_rank, stages/first_layer).
  void write_values(const std::string& path, const std::vector<double>& values, const std::string& what);
  void write_values(const std::string& path, const std::vector<std::int64_t>& values, const std::string& what);
  // status: "ok", "oom", "error", ... (docs/results.md); exit_code: the code the run's processes end with
  // (docs/exit-codes.md), recorded because a launcher may report another (mpirun exits 1 when it is signalled).
  // Writes the end time, closes, renames to the final path, releases the output's lock.
  void finish(const std::string& status, const std::string& error_message, int exit_code);
  // Extra root attributes (e.g. the OOM category and sizes).
  void write_attribute(const std::string& name, const std::string& value);
  void write_attribute(const std::string& name, std::int64_t value);
  void write_attribute(const std::string& name, double value);
  void write_attribute(const std::string& name, const std::vector<std::string>& values);

  const std::string& path() const { return path_; }
  std::string partial_path() const { return path_ + ".partial"; }

 private:
  void describe(const std::string& path, const std::string& what);

  std::string path_;
  OutputLock lock_;  // held until finish() has renamed the file
  h5::Handle file_;
  h5::Series loss_, grad_norm_, lr_, step_time_, tokens_per_s_, tflops_;
  std::vector<h5::Rows> traces_;        // /memory/trace/rank_<r>, once append_memory has made them
  std::vector<h5::Rows> device_traces_; // /memory/device_trace/rank_<r>, once a sample knows the device's memory
  std::vector<std::int64_t> device_peaks_;
  void start_device_traces(std::size_t ranks);
  std::vector<std::int64_t> peaks_;     // the largest sample of each rank so far
  double init_s_ = 0, first_step_s_ = 0;  // the last timings written
  bool finished_ = false;
};

// Checks that `path` could be created (folder exists and is writable; not an existing file unless overwrite).
void check_output_path(const std::string& path, bool overwrite);

}  // namespace qwen3
