// OutputLock (see output_lock.h): flock() on a lock file beside the output, holder described inside it.
#include "io/output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/error.h"
#include "io/system_info.h"

namespace qwen3 {
namespace {

// The lock file's text: who holds it, for the message a second run gets.
std::string holder_description() {
  return "host " + hostname() + ", pid " + std::to_string(::getpid()) + ", started " + utc_now();
}

std::string read_all(int fd) {
  std::string text;
  char buf[512];
  ssize_t n = 0;
  off_t at = 0;
  while ((n = ::pread(fd, buf, sizeof buf, at)) > 0) text.append(buf, static_cast<std::size_t>(n)), at += n;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text;
}

// The lock file at `path` is still the one `fd` has open (not removed or replaced by a holder that just finished).
bool same_file(int fd, const std::string& path) {
  struct stat a {}, b {};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

OutputLock::OutputLock(const std::string& path) : lock_path_(lock_path(path)) {
  // A holder that finishes removes the file it locked: retry on the new one until the lock is held on the file that
  // stands at the path (the classic lock-file race), a few times at most.
  for (int attempt = 0; attempt < 8; ++attempt) {
    fd_ = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw OutputError("cannot create the lock file '" + lock_path_ + "': " + std::strerror(errno) +
                        " (is the output folder writable?)");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err == EWOULDBLOCK) {
        const std::string holder = read_all(fd_);
        ::close(fd_);
        fd_ = -1;
        throw OutputError("output file '" + path + "' is being written by another run (" +
                          (holder.empty() ? std::string("its description not yet written") : holder) +
                          "; lock file '" + lock_path_ + "'): give this run another --out, or wait for that one");
      }
      // A file system without flock (some network mounts): go on unlocked, saying so.
      std::fprintf(stderr, "qwen3-pretrain: warning: cannot lock '%s' (%s): a second run given the same --out would "
                   "not be detected\n", lock_path_.c_str(), std::strerror(err));
      break;
    }
    if (!same_file(fd_, lock_path_)) {
      ::close(fd_);
      fd_ = -1;
      continue;
    }
    const std::string text = holder_description() + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
      throw OutputError("cannot write the lock file '" + lock_path_ + "': " + std::strerror(errno));
    return;
  }
  if (fd_ < 0) throw OutputError("cannot take the lock file '" + lock_path_ + "': it keeps being replaced");
}

OutputLock::~OutputLock() { release(); }

OutputLock::OutputLock(OutputLock&& other) noexcept : lock_path_(std::move(other.lock_path_)), fd_(other.fd_) {
  other.fd_ = -1;
}

OutputLock& OutputLock::operator=(OutputLock&& other) noexcept {
  if (this != &other) {
    release();
    lock_path_ = std::move(other.lock_path_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void OutputLock::release() {
  if (fd_ < 0) return;
  ::unlink(lock_path_.c_str());  // while still held: a waiter that opened it retries on a new file (same_file)
  ::close(fd_);
  fd_ = -1;
}

}  // namespace qwen3
