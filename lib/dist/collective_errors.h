// Agreement on failure across ranks: a step that may fail on some ranks ends with every rank throwing the same
// error, so no rank waits forever in a collective that a failed rank will never join.
#pragma once
#include <functional>

#include "dist/communicator.h"

namespace qwen3 {

// Runs fn where `participate` is true. If any rank threw qwen3::Error (or std::bad_alloc), every rank throws the
// error of the lowest such rank (its exit code and message, "rank N: " prefixed when N ≠ this rank).
void collectively(Communicator& comm, bool participate, const std::function<void()>& fn);

}  // namespace qwen3
