// The liveness watch over TCP (see rank_watch.h).
#include "dist/rank_watch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
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

struct RankWatch::Peer {
  int fd, rank = -1;
  unsigned char hello[12];  // the job's token (8 bytes) and the rank (4)
  std::size_t hello_bytes = 0;
  char why = 0;  // how it said it leaves: 'B' a clean end, 'T' a signal, 'E' its own error; 0 nothing
  Clock::time_point seen;
};

RankWatch::RankWatch(Communicator& world, std::vector<std::string> hosts, double grace_s,
                     std::function<void(const std::string&)> on_lost)
    : rank_(world.rank()), size_(world.size()), grace_s_(grace_s), hosts_(std::move(hosts)), on_lost_(std::move(on_lost)) {
  int listener = -1;
  std::string where;
  if (rank_ == 0 && size_ > 1) {
    std::random_device random;
    token_ = (static_cast<std::uint64_t>(random()) << 32) ^ random();
    where = listen_everywhere(listener);
    if (!where.empty()) where = std::to_string(token_) + " " + where;
  }
  where = world.all_gather(where)[0];  // "token port address…"
  if (size_ < 2 || where.empty() || ::pipe2(wake_, O_CLOEXEC) != 0) {
    if (listener >= 0) ::close(listener);
    return;  // unwatched
  }
  std::istringstream in(where);
  int port = 0;
  in >> token_ >> port;
  if (rank_ == 0) {
    thread_ = std::thread(&RankWatch::serve, this, listener);
    return;
  }
  // Rank 0's addresses, loopback only from its own host (elsewhere it would reach this host's, another job's).
  const bool same_host = hosts_[0] == hosts_[static_cast<std::size_t>(rank_)];
  std::vector<std::string> addresses;
  if (same_host) addresses.push_back("127.0.0.1");
  for (std::string a; in >> a;)
    if (a.rfind("127.", 0) != 0) addresses.push_back(a);
  for (const auto& a : addresses)
    if ((socket_ = connect_within(a, port, 2.0)) >= 0) break;
  unsigned char hello[12];
  std::memcpy(hello, &token_, 8);
  const std::int32_t me = rank_;
  std::memcpy(hello + 8, &me, 4);
  if (socket_ < 0 || ::send(socket_, hello, sizeof hello, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof hello)) {
    std::fprintf(stderr, "qwen3: warning: rank %d could not reach rank 0 at %s: if this rank fails, the results file "
                         "will not name it\n", rank_, where.substr(where.find(' ') + 1).c_str());
    if (socket_ >= 0) ::close(socket_);
    socket_ = -1;
    return;
  }
  thread_ = std::thread(&RankWatch::beat, this);
}

RankWatch::~RankWatch() {
  stop_ = true;
  if (wake_[1] >= 0) (void)!::write(wake_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  for (int fd : wake_)
    if (fd >= 0) ::close(fd);
}

void RankWatch::leaving(Leaving why) {
  const char c = static_cast<char>(why);
  if (socket_ >= 0) ::send(socket_, &c, 1, MSG_NOSIGNAL);  // one byte: whole, beside the heartbeats
}

void RankWatch::beat() {
  pollfd p{wake_[0], POLLIN, 0};
  while (!stop_) {
    if (::send(socket_, "H", 1, MSG_NOSIGNAL) != 1) break;  // rank 0 is gone: nothing left to tell
    ::poll(&p, 1, 1000);
  }
  ::send(socket_, "B", 1, MSG_NOSIGNAL);  // a clean end
  ::close(socket_);
}

void RankWatch::read_peer(Peer& q) {
  unsigned char buf[64];
  const ssize_t n = ::recv(q.fd, buf, sizeof buf, 0);
  for (ssize_t k = 0; k < n; ++k) {
    if (q.hello_bytes < sizeof q.hello) {
      q.hello[q.hello_bytes++] = buf[k];
      if (q.hello_bytes < sizeof q.hello) continue;
      std::uint64_t token;
      std::int32_t rank;
      std::memcpy(&token, q.hello, 8);
      std::memcpy(&rank, q.hello + 8, 4);
      if (token == token_ && rank > 0 && rank < size_) q.rank = rank;
      else break;  // not one of this job's ranks: dropped below
    } else if (buf[k] == 'B' || buf[k] == 'T' || buf[k] == 'E') {
      q.why = static_cast<char>(buf[k]);
    }
  }
  q.seen = Clock::now();
  if (n > 0 && (q.hello_bytes < sizeof q.hello || q.rank > 0)) return;
  if (q.rank > 0 && q.why == 'E') lost(q.rank, "failed: its own message is in the job's output");
  if (q.rank > 0 && q.why == 0)
    lost(q.rank, "ended: its connection to rank 0 closed without a word (the process died, e.g. killed, or its node "
                 "went down)");
  ::close(q.fd);
  q.fd = -1;
}

void RankWatch::serve(int listener) {
  std::vector<Peer> peers;
  ::fcntl(listener, F_SETFL, O_NONBLOCK);
  auto tick = Clock::now();
  bool reported = false;
  while (!stop_) {
    std::vector<pollfd> p = {{wake_[0], POLLIN, 0}, {listener, POLLIN, 0}};
    for (const Peer& q : peers) p.push_back({q.fd, POLLIN, 0});
    ::poll(p.data(), p.size(), 1000);
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - tick).count() > 5)  // this process was stopped (suspended): nobody was
      for (Peer& q : peers) q.seen = now;                         // silent, rank 0 was not listening
    tick = now;
    while (listener >= 0 && (p[1].revents & POLLIN)) {
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        peers.push_back({fd, -1, {}, 0, 0, now});
        continue;
      }
      if (errno == EMFILE || errno == ENFILE) {  // out of descriptors: the ranks not yet connected go unwatched
        std::fprintf(stderr, "qwen3: warning: rank 0 has no file descriptors left for the liveness watch: ranks not "
                             "yet connected will not be named if they fail\n");
        ::close(listener);
        listener = -1;
      }
      break;
    }
    for (std::size_t i = 0; i < peers.size(); ++i) {
      Peer& q = peers[i];
      if (i + 2 < p.size() && q.fd >= 0 && (p[i + 2].revents & (POLLIN | POLLHUP | POLLERR))) read_peer(q);
      if (q.fd >= 0 && q.rank > 0 && std::chrono::duration<double>(now - q.seen).count() > kSilentSeconds) {
        lost(q.rank, "sent nothing for " + std::to_string(static_cast<int>(kSilentSeconds)) +
                         " s: its host, or the network between it and rank 0, stopped");
        q.seen = now;
      }
    }
    peers.erase(std::remove_if(peers.begin(), peers.end(), [](const Peer& q) { return q.fd < 0; }), peers.end());
    std::string failure;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!reported && !failure_.empty() && std::chrono::duration<double>(now - lost_at_).count() >= grace_s_)
        failure = failure_;
    }
    if (!failure.empty()) {
      reported = true;
      if (on_lost_) on_lost_(failure);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // at most 50 rounds a second, however many ranks
  }
  for (const Peer& q : peers) ::close(q.fd);
  if (listener >= 0) ::close(listener);
}

void RankWatch::lost(int rank, const std::string& why) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (!failure_.empty()) return;
  failure_ = "rank " + std::to_string(rank) + " on host " + hosts_.at(static_cast<std::size_t>(rank)) + " " + why;
  lost_at_ = Clock::now();
}

std::string RankWatch::first_failure(double wait_s) const {
  if (rank_ != 0) return "";
  const auto until = Clock::now() + std::chrono::duration<double>(wait_s);
  while (true) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!failure_.empty() || Clock::now() >= until) return failure_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace qwen3
