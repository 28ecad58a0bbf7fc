// Implementation of run_main (see main_wrapper.h).
#include "common/main_wrapper.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

#include "core/error.h"

namespace qwen3 {

const char* without_program_prefix(const char* program, const char* message) {
  if (!program) return message;
  const std::size_t n = std::strlen(program);
  if (std::strncmp(message, program, n) == 0 && message[n] == ':' && message[n + 1] == ' ') return message + n + 2;
  return message;
}

int run_main(const char* program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    if (program) std::fprintf(stderr, "%s: error: %s\n", program, without_program_prefix(program, e.what()));
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    if (program) std::fprintf(stderr, "%s: error: out of host memory\n", program);
    return static_cast<int>(ExitCode::out_of_memory);
  } catch (const std::exception& e) {
    if (program) std::fprintf(stderr, "%s: internal error: %s\n", program, without_program_prefix(program, e.what()));
    return static_cast<int>(ExitCode::internal);
  }
}

}  // namespace qwen3
