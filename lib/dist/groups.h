// The communicators of one rank's groups under a ParallelLayout, split from the world communicator: ranks that differ
// only in their tp (or pp, or dp) coordinate, ordered by that coordinate. Collective over the world.
#pragma once
#include <memory>

#include "dist/communicator.h"
#include "dist/layout.h"

namespace qwen3 {

struct ParallelGroups {
  RankCoords coords;                        // this rank's place
  std::unique_ptr<Communicator> tp, cp, pp, dp;  // rank within each = this rank's coordinate
  // Ranks that differ in their dp or cp coordinate (rank dp·cp_size + cp): they hold the same weights, and the
  // distributed optimizer shards over them (Megatron's data-and-context-parallel group).
  std::unique_ptr<Communicator> dp_cp;
};

ParallelGroups make_parallel_groups(Communicator& world, const ParallelLayout& layout);

}  // namespace qwen3
