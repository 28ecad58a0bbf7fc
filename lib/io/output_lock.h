// One writer per output file: an exclusive lock on `<out>.lock`, held from before the first byte of `<out>.partial`
// until the run's file is finished. A second run given the same --out (with or without --overwrite) is refused at
// once, naming the run that holds it (host, pid, start time), and the first run's file is never touched. The kernel
// drops the lock when its process ends however it ends (kill -9 included), so a crashed run never blocks the next.
#pragma once
#include <string>

namespace qwen3 {

class OutputLock {
 public:
  OutputLock() = default;
  // Takes the lock on `<path>.lock`, writing this run's description into it; OutputError (exit 4) when another
  // process holds it, with that process's description. On a file system without flock() it warns once on stderr
  // and goes on unlocked (the rest works; two runs at once would not be detected).
  explicit OutputLock(const std::string& path);
  ~OutputLock();  // release()
  OutputLock(OutputLock&& other) noexcept;
  OutputLock& operator=(OutputLock&& other) noexcept;
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

  // Removes the lock file and releases the lock (idempotent).
  void release();
  static std::string lock_path(const std::string& path) { return path + ".lock"; }

 private:
  std::string lock_path_;
  int fd_ = -1;
};

}  // namespace qwen3
