// Which rank of a job ended first, as rank 0 learns it without MPI (whose collectives hang or abort once a peer is
// gone): every other rank keeps a TCP connection to rank 0 and sends a heartbeat every second; rank 0 notes the first
// rank whose connection closes without a goodbye (its process ended — the kernel closes a killed process's sockets)
// or that sends nothing for kSilentSeconds (its host or the network to it died). Rank 0 can then say which host
// failed when the job is torn down (mpirun's SIGTERM), and ends the job itself when nobody else does.
#pragma once
#include <atomic>
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

  // Collective over `world` (rank 0's addresses go to every rank). hosts: every rank's host name, in rank order.
  // on_lost (rank 0, on the watch's thread): called once with the first failure's description. A rank that cannot
  // reach rank 0 within a few seconds leaves the job unwatched (a warning), never failed.
  RankWatch(Communicator& world, std::vector<std::string> hosts, std::function<void(const std::string&)> on_lost);
  ~RankWatch();  // other ranks: a goodbye first, so that rank 0 sees a clean end
  RankWatch(const RankWatch&) = delete;
  RankWatch& operator=(const RankWatch&) = delete;

  // Rank 0: the first failure ("rank 2 on host node1 ended: …"), waiting up to wait_s for one; "" when none.
  std::string first_failure(double wait_s) const;

 private:
  void serve(int listener);  // rank 0's thread: accept, then read every connection
  void beat(int socket);                   // other ranks' thread: a heartbeat a second until stopped
  void lost(int rank, const std::string& why);

  int rank_;
  std::vector<std::string> hosts_;
  std::function<void(const std::string&)> on_lost_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::string failure_;
  int wake_[2] = {-1, -1};  // a pipe that ends the thread's wait
  std::thread thread_;
};

}  // namespace qwen3
