// The liveness watch over TCP (see rank_watch.h).
#include "dist/rank_watch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <sstream>

namespace qwen3 {
namespace {

using Clock = std::chrono::steady_clock;

// A listening socket on every IPv4 address of this host, port chosen by the kernel: "port address…" (loopback last),
// or "" when none could be made.
std::string listen_everywhere(int& fd) {
  fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4096) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    fd = -1;
    return "";
  }
  std::string out = std::to_string(ntohs(a.sin_port)), loopback;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (ifaddrs* i = list; i; i = i->ifa_next) {
      if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
      char text[INET_ADDRSTRLEN];
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof text);
      (std::string(text).rfind("127.", 0) == 0 ? loopback : out) += std::string(" ") + text;
    }
    ::freeifaddrs(list);
  }
  return out + loopback;
}

// A connection to address:port within timeout_s, or -1.
int connect_within(const std::string& address, int port, double timeout_s) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1) return -1;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  int err = 0;
  socklen_t len = sizeof err;
  pollfd p{fd, POLLOUT, 0};
  if ((::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ||
       (errno == EINPROGRESS && ::poll(&p, 1, static_cast<int>(timeout_s * 1000)) == 1 &&
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)) &&
      ::fcntl(fd, F_SETFL, 0) == 0)
    return fd;
  ::close(fd);
  return -1;
}

}  // namespace

RankWatch::RankWatch(Communicator& world, std::vector<std::string> hosts, std::function<void(const std::string&)> on_lost)
    : rank_(world.rank()), hosts_(std::move(hosts)), on_lost_(std::move(on_lost)) {
  int listener = -1;
  std::string where = rank_ == 0 && world.size() > 1 ? listen_everywhere(listener) : "";
  where = world.all_gather(where)[0];
  if (world.size() < 2 || where.empty() || ::pipe2(wake_, O_CLOEXEC) != 0) {
    if (listener >= 0) ::close(listener);
    return;  // unwatched
  }
  if (rank_ == 0) {
    thread_ = std::thread(&RankWatch::serve, this, listener);
    return;
  }
  std::istringstream in(where);
  int port = 0;
  in >> port;
  std::vector<std::string> addresses;
  for (std::string a; in >> a;) addresses.push_back(a);
  if (hosts_[0] == hosts_[static_cast<std::size_t>(rank_)]) addresses.insert(addresses.begin(), "127.0.0.1");
  int fd = -1;
  for (const auto& a : addresses)
    if ((fd = connect_within(a, port, 2.0)) >= 0) break;
  const std::int32_t hello = rank_;
  if (fd < 0 || ::send(fd, &hello, sizeof hello, MSG_NOSIGNAL) != sizeof hello) {
    std::fprintf(stderr, "qwen3: warning: rank %d could not reach rank 0 at %s: if this rank fails, the results file "
                         "will not name it\n", rank_, where.c_str());
    if (fd >= 0) ::close(fd);
    return;
  }
  thread_ = std::thread(&RankWatch::beat, this, fd);
}

RankWatch::~RankWatch() {
  stop_ = true;
  if (wake_[1] >= 0) (void)!::write(wake_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  for (int fd : wake_)
    if (fd >= 0) ::close(fd);
}

void RankWatch::beat(int fd) {
  pollfd p{wake_[0], POLLIN, 0};
  while (!stop_) {
    if (::send(fd, "H", 1, MSG_NOSIGNAL) != 1) break;  // rank 0 is gone: nothing left to tell
    ::poll(&p, 1, 1000);
  }
  ::send(fd, "B", 1, MSG_NOSIGNAL);  // a clean end
  ::close(fd);
}

void RankWatch::serve(int listener) {
  struct Peer {
    int fd, rank = -1;
    std::int32_t hello = 0;
    std::size_t hello_bytes = 0;
    bool goodbye = false;
    Clock::time_point seen;
  };
  std::vector<Peer> peers;
  while (!stop_) {
    std::vector<pollfd> p = {{wake_[0], POLLIN, 0}, {listener, POLLIN, 0}};
    for (const Peer& q : peers) p.push_back({q.fd, POLLIN, 0});
    ::poll(p.data(), p.size(), 1000);
    if (p[1].revents & POLLIN) {
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) peers.push_back({fd, -1, 0, 0, false, Clock::now()});
    }
    for (std::size_t i = 0; i < peers.size(); ++i) {
      Peer& q = peers[i];
      if (q.fd < 0) continue;
      if (i + 2 < p.size() && (p[i + 2].revents & (POLLIN | POLLHUP | POLLERR))) {
        char buf[64];
        const ssize_t n = ::recv(q.fd, buf, sizeof buf, 0);
        for (ssize_t k = 0; k < n; ++k) {
          if (q.hello_bytes < sizeof q.hello) {
            reinterpret_cast<char*>(&q.hello)[q.hello_bytes++] = buf[k];
            if (q.hello_bytes == sizeof q.hello) q.rank = q.hello;
          } else if (buf[k] == 'B') {
            q.goodbye = true;
          }
        }
        q.seen = Clock::now();
        if (n <= 0) {
          if (!q.goodbye && q.rank > 0) lost(q.rank, "ended: its connection to rank 0 closed without a goodbye (the "
                                                     "process died, e.g. killed, or its node went down)");
          ::close(q.fd);
          q.fd = -1;
          continue;
        }
      }
      if (q.rank > 0 && std::chrono::duration<double>(Clock::now() - q.seen).count() > kSilentSeconds) {
        lost(q.rank, "sent nothing for " + std::to_string(static_cast<int>(kSilentSeconds)) +
                         " s: its host, or the network between it and rank 0, stopped");
        q.seen = Clock::now();
      }
    }
  }
  for (const Peer& q : peers)
    if (q.fd >= 0) ::close(q.fd);
  ::close(listener);
}

void RankWatch::lost(int rank, const std::string& why) {
  std::string what;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!failure_.empty()) return;
    failure_ = what = "rank " + std::to_string(rank) + " on host " + hosts_.at(static_cast<std::size_t>(rank)) + " " + why;
  }
  if (on_lost_) on_lost_(what);
}

std::string RankWatch::first_failure(double wait_s) const {
  const auto until = Clock::now() + std::chrono::duration<double>(wait_s);
  while (true) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!failure_.empty() || Clock::now() >= until) return failure_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace qwen3
