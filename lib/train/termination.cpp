// TerminationWatch (see termination.h): self-pipe signal handling.
#include "train/termination.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <poll.h>
#include <unistd.h>

#include "core/error.h"

namespace qwen3 {
namespace {
int g_pipe[2] = {-1, -1};  // written by the handler (async-signal-safe), read by the watcher
struct sigaction g_old_term, g_old_int, g_old_usr1;

extern "C" void on_termination_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_pipe[1], &b, 1);
}
}  // namespace

TerminationWatch::TerminationWatch(std::function<void(int)> on_signal, double grace_s,
                                   std::function<bool()> abandon_grace)
    : on_signal_(std::move(on_signal)) {
  if (::pipe(g_pipe) != 0) throw InternalError(std::string("pipe() for the termination watch: ") + std::strerror(errno));
  struct sigaction sa {};
  sa.sa_handler = on_termination_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, &g_old_term);
  sigaction(SIGINT, &sa, &g_old_int);
  // SIGUSR1 too without a grace period: a job script passes the signals it gets on as SIGUSR1 (mpirun forwards it,
  // where a second SIGTERM would make it kill the ranks at once), and the run ends as it would on SIGTERM.
  sigaction(SIGUSR1, &sa, &g_old_usr1);
  watcher_ = std::thread([this, grace_s, abandon = std::move(abandon_grace)] {
    unsigned char b = 0;
    if (::read(g_pipe[0], &b, 1) != 1 || b == 0) return;  // 0: the destructor's wake-up
    if (grace_s > 0 && b != SIGINT) {
      requested_.store(b);
      // Wait for the program to end (the destructor's 0), SIGINT, or the end of the grace period. More SIGTERMs and
      // SIGUSR1s are expected and ignored: Slurm signals every process of the job, and a launcher forwards the same.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
      constexpr int kPollMs = 50;  // how often abandon is asked
      for (;;) {
        if (abandon && abandon()) break;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;  // the grace is over
        pollfd p{g_pipe[0], POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), kPollMs)));
        if (ready < 0 && errno != EINTR) break;
        if (ready <= 0) continue;
        unsigned char again = 0;
        if (::read(g_pipe[0], &again, 1) != 1) break;
        if (again == 0) return;  // ended normally
        if (again == SIGINT) {
          b = again;
          break;
        }
      }
    }
    on_signal_(b);
    ::_exit(128 + b);
  });
}

TerminationWatch::~TerminationWatch() {
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGUSR1, &g_old_usr1, nullptr);
  const unsigned char zero = 0;
  [[maybe_unused]] const ssize_t n = ::write(g_pipe[1], &zero, 1);
  if (watcher_.joinable()) watcher_.join();
  ::close(g_pipe[0]);
  ::close(g_pipe[1]);
}

}  // namespace qwen3
