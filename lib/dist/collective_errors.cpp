// Cross-rank error agreement (see collective_errors.h).
#include "dist/collective_errors.h"

#include <exception>
#include <new>
#include <string>

#include "core/error.h"

namespace qwen3 {

void collectively(Communicator& comm, bool participate, const std::function<void()>& fn) {
  std::string mine;  // "<exit code>|<message>", empty when fine
  std::exception_ptr own;
  if (participate) {
    try {
      fn();
    } catch (const Error& e) {
      mine = std::to_string(static_cast<int>(e.code())) + "|" + e.what();
      own = std::current_exception();
    } catch (const std::bad_alloc&) {
      mine = std::to_string(static_cast<int>(ExitCode::out_of_memory)) + "|out of host memory";
    }
  }
  if (comm.size() == 1 && mine.empty()) return;
  const auto all = comm.size() == 1 ? std::vector<std::string>{mine} : comm.all_gather(mine);
  for (int r = 0; r < static_cast<int>(all.size()); ++r) {
    if (all[r].empty()) continue;
    const auto bar = all[r].find('|');
    const auto code = static_cast<ExitCode>(std::stoi(all[r].substr(0, bar)));
    std::string msg = all[r].substr(bar + 1);
    if (r == comm.rank() && own) std::rethrow_exception(own);  // keeps its type (e.g. OutOfMemory's details)
    if (r != comm.rank()) msg = "rank " + std::to_string(r) + ": " + msg;
    throw Error(code, msg);
  }
}

}  // namespace qwen3
