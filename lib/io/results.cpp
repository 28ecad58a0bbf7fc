// Results file writer (see results.h and docs/results.md).
#include "io/results.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "io/system_info.h"

namespace fs = std::filesystem;

namespace qwen3 {

void check_output_path(const std::string& path, bool overwrite) {
  if (path.empty()) throw UsageError("--out is required (the results file to write)");
  const fs::path p(path);
  if (fs::exists(p)) {
    if (fs::is_directory(p)) throw OutputError("output path '" + path + "' is a folder; name a file");
    if (!overwrite) throw OutputError("output file '" + path + "' already exists (pass --overwrite to replace it)");
  }
  fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  if (!fs::is_directory(dir)) throw OutputError("output folder '" + dir.string() + "' does not exist");
  if (access(dir.c_str(), W_OK) != 0) throw OutputError("output folder '" + dir.string() + "' is not writable");
}

ResultsWriter::ResultsWriter(const std::string& path, bool overwrite) : path_(path) {
  check_output_path(path, overwrite);  // a missing folder: its own message, not the lock file's
  lock_ = OutputLock(path);
  check_output_path(path, overwrite);  // again under the lock: a run that finished meanwhile left its file
  file_ = h5::create(partial_path());
  const hid_t f = file_.get();
  h5::write_attr(f, "format", std::string(kResultsFormat));
  h5::write_attr(f, "format_version", kResultsVersion);
  h5::write_attr(f, "status", std::string("running"));
  h5::write_attr(f, "error_message", std::string(""));
  loss_ = h5::Series(f, "steps/loss");
  grad_norm_ = h5::Series(f, "steps/grad_norm");
  lr_ = h5::Series(f, "steps/lr");
  step_time_ = h5::Series(f, "steps/step_time_s");
  tokens_per_s_ = h5::Series(f, "steps/tokens_per_s");
  tflops_ = h5::Series(f, "steps/tflops_per_device");
  h5::flush(file_);
}

ResultsWriter::~ResultsWriter() {
  // Close without renaming: the .partial file with status "running" is what a crash leaves behind.
}

void ResultsWriter::write_facts(const RunFacts& facts) {
  const hid_t f = file_.get();
  h5::write_attr(f, "git_commit", facts.git_commit);
  h5::write_attr(f, "start_time_utc", facts.start_utc);
  h5::write_attr(f, "world_size", static_cast<std::int64_t>(facts.world_size));
  h5::write_attr(f, "hostnames", facts.hostnames);
  for (const auto& [lib, version] : facts.library_versions) h5::write_attr(f, "version_" + lib, version);
  h5::flush(file_);
}

void ResultsWriter::write_config(const std::vector<std::pair<std::string, std::string>>& settings) {
  h5::Handle g = h5::ensure_group(file_.get(), "config");
  for (const auto& [k, v] : settings) h5::write_attr(g.get(), k, v);
  h5::flush(file_);
}

void ResultsWriter::append_step(const StepRecord& s) {
  loss_.append(s.loss);
  grad_norm_.append(s.grad_norm);
  lr_.append(s.lr);
  step_time_.append(s.step_time_s);
  tokens_per_s_.append(s.tokens_per_s);
  tflops_.append(s.tflops_per_device);
  h5::write_attr(file_.get(), "steps_completed", loss_.size());
  h5::flush(file_);
}

void ResultsWriter::write_timings(double init_s, double first_step_s, double total_s) {
  h5::Handle g = h5::ensure_group(file_.get(), "timings");
  h5::write_attr(g.get(), "init_s", init_s);
  h5::write_attr(g.get(), "first_step_s", first_step_s);
  h5::write_attr(g.get(), "total_s", total_s);
  init_s_ = init_s;
  first_step_s_ = first_step_s;
}

void ResultsWriter::update_total_time(double total_s) { write_timings(init_s_, first_step_s_, total_s); }

void ResultsWriter::flush() { h5::flush(file_); }

void ResultsWriter::describe(const std::string& path, const std::string& what) {
  h5::Handle d(H5Dopen2(file_.get(), path.c_str(), H5P_DEFAULT));
  h5::write_attr(d.get(), "description", what);
}

void ResultsWriter::write_values(const std::string& path, const std::vector<double>& values, const std::string& what) {
  h5::write_f64(file_.get(), path, values, {static_cast<std::int64_t>(values.size())});
  describe(path, what);
  h5::flush(file_);
}

void ResultsWriter::write_values(const std::string& path, const std::vector<std::int64_t>& values, const std::string& what) {
  h5::write_i64(file_.get(), path, values, {static_cast<std::int64_t>(values.size())});
  describe(path, what);
  h5::flush(file_);
}

void ResultsWriter::append_memory(const std::vector<std::vector<MemorySample>>& new_per_rank) {
  if (traces_.empty()) {  // the first flush: one trace per rank, and their peaks
    for (std::size_t r = 0; r < new_per_rank.size(); ++r) {
      const std::string name = "memory/trace/rank_" + std::to_string(r);
      traces_.emplace_back(file_.get(), name, 2);
      h5::write_attr(traces_.back().get(), "columns", std::string("time_s, bytes"));
    }
    peaks_.assign(new_per_rank.size(), 0);
    h5::write_i64(file_.get(), "memory/peak_bytes", peaks_, {static_cast<std::int64_t>(peaks_.size())});
  }
  if (new_per_rank.size() != traces_.size()) throw InternalError("memory samples of " + std::to_string(new_per_rank.size()) +
                                                                 " ranks for " + std::to_string(traces_.size()) + " traces");
  bool device = false;
  for (std::size_t r = 0; r < new_per_rank.size(); ++r) {
    std::vector<double> flat, on_device;  // [n, 2]: time_s, bytes (the device's: where known)
    for (const auto& s : new_per_rank[r]) {
      flat.insert(flat.end(), {s.time_s, static_cast<double>(s.bytes)});
      peaks_[r] = std::max(peaks_[r], s.bytes);
      if (s.device_bytes < 0) continue;
      on_device.insert(on_device.end(), {s.time_s, static_cast<double>(s.device_bytes)});
      device = true;
    }
    traces_[r].append(flat);
    if (device && device_traces_.empty()) start_device_traces(new_per_rank.size());
    if (!on_device.empty()) {
      device_traces_[r].append(on_device);
      for (std::size_t i = 1; i < on_device.size(); i += 2)
        device_peaks_[r] = std::max(device_peaks_[r], static_cast<std::int64_t>(on_device[i]));
    }
  }
  h5::rewrite_i64(file_.get(), "memory/peak_bytes", peaks_);
  if (!device_traces_.empty()) h5::rewrite_i64(file_.get(), "memory/device_peak_bytes", device_peaks_);
}

void ResultsWriter::start_device_traces(std::size_t ranks) {
  for (std::size_t r = 0; r < ranks; ++r) {
    device_traces_.emplace_back(file_.get(), "memory/device_trace/rank_" + std::to_string(r), 2);
    h5::write_attr(device_traces_.back().get(), "columns", std::string("time_s, bytes"));
  }
  device_peaks_.assign(ranks, 0);
  h5::write_i64(file_.get(), "memory/device_peak_bytes", device_peaks_, {static_cast<std::int64_t>(ranks)});
}

void ResultsWriter::write_attribute(const std::string& name, const std::string& value) { h5::write_attr(file_.get(), name, value); }
void ResultsWriter::write_attribute(const std::string& name, std::int64_t value) { h5::write_attr(file_.get(), name, value); }
void ResultsWriter::write_attribute(const std::string& name, double value) { h5::write_attr(file_.get(), name, value); }
void ResultsWriter::write_attribute(const std::string& name, const std::vector<std::string>& values) {
  h5::write_attr(file_.get(), name, values);
}

void ResultsWriter::finish(const std::string& status, const std::string& error_message, int exit_code) {
  if (finished_) return;
  const hid_t f = file_.get();
  h5::write_attr(f, "status", status);
  h5::write_attr(f, "error_message", error_message);
  h5::write_attr(f, "exit_code", static_cast<std::int64_t>(exit_code));
  h5::write_attr(f, "end_time_utc", utc_now());
  h5::write_attr(f, "steps_completed", loss_.size());
  h5::flush(file_);  // on disk now, even if an _exit skips the closing below
  // Every dataset held open, then the file: closed before the rename, so the final name appears only once it is whole.
  traces_.clear();
  device_traces_.clear();
  for (h5::Series* series : {&loss_, &grad_norm_, &lr_, &step_time_, &tokens_per_s_, &tflops_}) *series = h5::Series();
  file_.reset();
  std::error_code ec;
  fs::rename(partial_path(), path_, ec);
  if (ec) throw OutputError("cannot rename '" + partial_path() + "' to '" + path_ + "': " + ec.message());
  finished_ = true;
  lock_.release();
}

}  // namespace qwen3
