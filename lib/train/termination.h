// Ending well when the job is ended from outside: SIGTERM (mpirun stopping a job because one of its ranks died or
// aborted; Slurm cancelling, timing out or pre-empting it), SIGINT, or SIGUSR1 (Slurm's --signal warning, and what
// jobs/pretrain.sbatch passes the signals it gets on as). The signal handler only writes the signal number
// to a pipe; a watcher thread runs the callback in normal context (e.g. to record the run's status in its results
// file), then the process exits with 128 + signal.
#pragma once
#include <atomic>
#include <functional>
#include <thread>

namespace qwen3 {

class TerminationWatch {
 public:
  // grace_s > 0 (a run that can save a checkpoint): the first SIGTERM or SIGUSR1 (Slurm's pre-emption, time-limit
  // and --signal warnings) only raises requested(); the program is expected to stop at its next step boundary and
  // end normally. If it has not ended after grace_s seconds, or SIGINT arrives (more SIGTERMs and SIGUSR1s are
  // ignored: a job's processes get them from the scheduler and from the launcher), on_signal runs and the process
  // exits as without a grace period.
  // abandon_grace: asked when the graceful stop is requested and every 50 ms of its grace; true ends the run at once,
  // as without a grace period (a rank was lost: the step boundary the stop waits for will never come, and the
  // launcher's SIGKILL follows its SIGTERM within a second).
  explicit TerminationWatch(std::function<void(int signal)> on_signal, double grace_s = 0,
                            std::function<bool()> abandon_grace = {});
  // The signal that asked for a graceful stop, 0 if none.
  int requested() const { return requested_.load(); }
  ~TerminationWatch();  // restores the previous handlers; the callback no longer runs
  TerminationWatch(const TerminationWatch&) = delete;
  TerminationWatch& operator=(const TerminationWatch&) = delete;

 private:
  std::function<void(int)> on_signal_;
  std::atomic<int> requested_{0};
  std::thread watcher_;
};

}  // namespace qwen3
