// Rank layout arithmetic: coordinates round-trip, groups partition the world, order is tp-cp-dp-pp.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "dist/layout.h"

using namespace qwen3;

TEST(Layout, CoordinatesRoundTripAndGroupsPartition) {
  for (auto [world, tp, cp, pp] : std::vector<std::array<int, 4>>{{8, 2, 1, 2}, {16, 2, 2, 2}, {6, 3, 1, 1}, {1, 1, 1, 1}}) {
    ParallelLayout L(world, tp, cp, pp);
    EXPECT_EQ(L.tp() * L.cp() * L.dp() * L.pp(), world);
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(L.rank_of(L.coords(r)), r);
      for (auto g : {L.tp_group(r), L.cp_group(r), L.dp_group(r), L.pp_group(r)})
        EXPECT_NE(std::find(g.begin(), g.end(), r), g.end());
    }
    // Every dp group is disjoint from the others and together they cover the world.
    std::set<int> seen;
    for (int r = 0; r < world; ++r)
      if (L.coords(r).dp == 0)
        for (int m : L.dp_group(r)) EXPECT_TRUE(seen.insert(m).second);
    EXPECT_EQ(static_cast<int>(seen.size()), world);
  }
}

TEST(Layout, TensorParallelRanksAreAdjacent) {
  ParallelLayout L(8, 2, 1, 2);  // T2 D2 P2
  EXPECT_EQ(L.tp_group(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(L.dp_group(0), (std::vector<int>{0, 2}));
  EXPECT_EQ(L.pp_group(1), (std::vector<int>{1, 5}));
  EXPECT_EQ(L.describe(), "T2 C1 D2 P2 (8 ranks)");
}

TEST(Layout, IndivisibleWorldIsAUsageError) {
  EXPECT_THROW(ParallelLayout(6, 4, 1, 1), UsageError);
  EXPECT_THROW(ParallelLayout(4, 0, 1, 1), UsageError);
}
