// TerminationWatch (see termination.h): self-pipe signal handling.
#include "train/termination.h"

#include <csignal>
#include <cstring>
#include <unistd.h>

#include "core/error.h"

namespace qwen3 {
namespace {
int g_pipe[2] = {-1, -1};  // written by the handler (async-signal-safe), read by the watcher
struct sigaction g_old_term, g_old_int;

extern "C" void on_termination_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_pipe[1], &b, 1);
}
}  // namespace

TerminationWatch::TerminationWatch(std::function<void(int)> on_signal) : on_signal_(std::move(on_signal)) {
  if (::pipe(g_pipe) != 0) throw InternalError(std::string("pipe() for the termination watch: ") + std::strerror(errno));
  struct sigaction sa {};
  sa.sa_handler = on_termination_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, &g_old_term);
  sigaction(SIGINT, &sa, &g_old_int);
  watcher_ = std::thread([this] {
    unsigned char b = 0;
    if (::read(g_pipe[0], &b, 1) != 1 || b == 0) return;  // 0: the destructor's wake-up
    on_signal_(b);
    ::_exit(128 + b);
  });
}

TerminationWatch::~TerminationWatch() {
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGINT, &g_old_int, nullptr);
  const unsigned char zero = 0;
  [[maybe_unused]] const ssize_t n = ::write(g_pipe[1], &zero, 1);
  if (watcher_.joinable()) watcher_.join();
  ::close(g_pipe[0]);
  ::close(g_pipe[1]);
}

}  // namespace qwen3
