// The training run's results file behind one owner (rank 0 holds the file; every rank holds an owner): its locking
// against the signal watcher's thread, the per-step flushes of memory samples, timings and step records, and the
// final write of the status ("ok", "preempted", "error", "oom" ...). Nothing else touches the file.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "core/error.h"
#include "dist/communicator.h"
#include "io/memory_tracer.h"
#include "io/results.h"

namespace qwen3::trainer {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A host allocation this process could not make (std::bad_alloc): what the results file records of it.
OutOfMemory host_out_of_memory();

class ResultsOwner {
 public:
  // Collective: rank 0 creates the file at `path` (a bad destination fails every rank before any work); the other
  // ranks hold no file and their writes are no-ops. `start`: the run's start, for its total time.
  ResultsOwner(const std::string& path, bool overwrite, Communicator& world, Clock::time_point start);
  ResultsOwner(const ResultsOwner&) = delete;
  ResultsOwner& operator=(const ResultsOwner&) = delete;

  // Runs `write` on the file under the lock; nothing when this rank has no file or the file is finished.
  void write(const std::function<void(ResultsWriter&)>& write);
  // Collective: every rank's new memory samples, the timings so far and the step (if any) into the file, so that
  // whatever ends the run later, the file keeps them (docs/results.md). Rank 0's write is agreed on (collectively):
  // a write that fails there fails every rank alike, none left waiting.
  void flush_progress(MemoryTracer& tracer, const StepRecord* step);

  // The timings every flush and every end records: initialisation, the first step (added to as it is measured).
  void record_init_time(double seconds) { init_s_ = seconds; }
  void add_first_step_time(double seconds) { first_step_s_ += seconds; }
  double first_step_s() const { return first_step_s_; }

  // The endings, each at most once (the first wins): the run ended from outside (the watcher's thread) ...
  // cause: what else is known (the liveness watch's first failure, dist/rank_watch.h), or "".
  void finish_on_signal(int signal, const std::string& cause);
  // A rank lost (the liveness watch): status "error", its description.
  void finish_lost_rank(const std::string& what);
  // ... a failure (rank 0 records it; a failure to record it is printed, the run's own error stays the one
  // reported); tracer: this rank's, for its samples not yet written (null before it exists) ...
  void finish_failed(const Error& e, MemoryTracer* tracer);
  // ... a run that completed, or one stopped after `at_step` by a requested stop (its checkpoint saved).
  void finish_ok();
  void finish_preempted(std::int64_t at_step, const std::string& message);

 private:
  // Runs `write` under the lock, then closes the file to every later write.
  void finish_with(const std::function<void(ResultsWriter&)>& write);

  Communicator& world_;
  const bool root_;
  const Clock::time_point start_;
  double init_s_ = 0, first_step_s_ = 0;  // recorded in the results file even when the run fails
  std::unique_ptr<ResultsWriter> file_;   // rank 0's only
  std::mutex mutex_;                      // held by every write to file_
  bool finished_ = false;                 // once the file is closed
};

}  // namespace qwen3::trainer
