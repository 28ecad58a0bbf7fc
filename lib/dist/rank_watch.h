// Which rank of a job ended first, as rank 0 learns it without MPI (whose collectives hang or abort once a peer is
// gone): every other rank keeps a TCP connection to rank 0 and sends a heartbeat every second; rank 0 notes the first
// rank whose connection closes without saying why (its process ended — the kernel closes a killed process's sockets)
// or that sends nothing for kSilentSeconds while rank 0 itself runs (its host or the network to it died). A rank that
// ends on purpose says so first: a clean end, a signal (the job being ended), or an error of its own (its message is
// in the job's output). Rank 0 can then say which host failed when the job is torn down, and ends the job itself when
// nobody else has `grace_s` later.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"

namespace qwen3 {

class RankWatch {
 public:
  static constexpr double kSilentSeconds = 30;

  // Collective over `world` (rank 0's addresses and a job token go to every rank). hosts: every rank's host name, in
  // rank order. on_lost (rank 0, on the watch's thread): called once, grace_s after the first failure unless the watch
  // has been destroyed by then, with its description. A rank that cannot reach rank 0 is not watched (a warning).
  RankWatch(Communicator& world, std::vector<std::string> hosts, double grace_s,
            std::function<void(const std::string&)> on_lost);
  ~RankWatch();  // other ranks: a goodbye first, so that rank 0 sees a clean end
  RankWatch(const RankWatch&) = delete;
  RankWatch& operator=(const RankWatch&) = delete;

  // Other ranks, before they end on purpose: the job is being ended by a signal, or this rank failed on its own.
  enum class Leaving : char { signal = 'T', error = 'E' };
  void leaving(Leaving why);
  // Rank 0: the first failure ("rank 2 on host node1 ended: …"), waiting up to wait_s for one; "" when none.
  std::string first_failure(double wait_s) const;

 private:
  struct Peer;
  void serve(int listener);  // rank 0's thread: accept, then read every connection
  void beat();               // other ranks' thread: a heartbeat a second until stopped
  void read_peer(Peer& q);
  void lost(int rank, const std::string& why);

  int rank_, size_;
  std::uint64_t token_ = 0;  // this job's: a connection that does not bring it is not one of its ranks
  double grace_s_;
  std::vector<std::string> hosts_;
  std::function<void(const std::string&)> on_lost_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::string failure_;
  std::chrono::steady_clock::time_point lost_at_;
  int socket_ = -1;         // other ranks: the connection to rank 0
  int wake_[2] = {-1, -1};  // a pipe that ends the thread's wait
  std::thread thread_;
};

}  // namespace qwen3
