// Ending well when the job is ended from outside: SIGTERM (mpirun stopping a job because one of its ranks died or
// aborted; Slurm cancelling, timing out or pre-empting it) or SIGINT. The signal handler only writes the signal number
// to a pipe; a watcher thread runs the callback in normal context (e.g. to record the run's status in its results
// file), then the process exits with 128 + signal.
#pragma once
#include <functional>
#include <thread>

namespace qwen3 {

class TerminationWatch {
 public:
  explicit TerminationWatch(std::function<void(int signal)> on_signal);
  ~TerminationWatch();  // restores the previous handlers; the callback no longer runs
  TerminationWatch(const TerminationWatch&) = delete;
  TerminationWatch& operator=(const TerminationWatch&) = delete;

 private:
  std::function<void(int)> on_signal_;
  std::thread watcher_;
};

}  // namespace qwen3
