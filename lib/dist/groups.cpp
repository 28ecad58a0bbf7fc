// Group communicators from the layout arithmetic (see groups.h).
#include "dist/groups.h"

namespace qwen3 {

ParallelGroups make_parallel_groups(Communicator& world, const ParallelLayout& layout) {
  ParallelGroups g;
  g.coords = layout.coords(world.rank());
  // The group's color: the rank of its member with this coordinate at 0 (the same for every member).
  auto split_along = [&](int RankCoords::*dim) {
    RankCoords c = g.coords;
    const int key = c.*dim;
    c.*dim = 0;
    return world.split(layout.rank_of(c), key);
  };
  g.tp = split_along(&RankCoords::tp);
  g.cp = split_along(&RankCoords::cp);
  g.pp = split_along(&RankCoords::pp);
  g.dp = split_along(&RankCoords::dp);
  RankCoords base = g.coords;
  base.dp = base.cp = 0;
  g.dp_cp = world.split(layout.rank_of(base), g.coords.dp * layout.cp() + g.coords.cp);
  return g;
}

}  // namespace qwen3
