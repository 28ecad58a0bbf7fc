// Rank layout as pure arithmetic: world = tp × cp × dp × pp, ordered tp fastest, then cp, dp, pp (as Megatron-Core).
// No MPI, no CUDA: every group's ranks follow from (tp, cp, dp, pp) and are unit-tested on their own.
#pragma once
#include <string>
#include <vector>

namespace qwen3 {

struct RankCoords {
  int tp = 0, cp = 0, dp = 0, pp = 0;
};

class ParallelLayout {
 public:
  // Throws UsageError when world is not divisible by tp·cp·pp (the remainder is data parallelism).
  ParallelLayout(int world_size, int tp, int cp, int pp);
  int world() const { return world_; }
  int tp() const { return tp_; }
  int cp() const { return cp_; }
  int dp() const { return dp_; }
  int pp() const { return pp_; }

  RankCoords coords(int rank) const;
  int rank_of(const RankCoords& c) const;
  // The ranks sharing every coordinate but the named one, in that dimension's order (`rank` is among them).
  std::vector<int> tp_group(int rank) const;
  std::vector<int> cp_group(int rank) const;
  std::vector<int> dp_group(int rank) const;
  std::vector<int> pp_group(int rank) const;
  std::string describe() const;  // "T2 C1 D2 P2 (8 ranks)"
  // Given each rank's host (hosts[rank]): "" when every tensor-parallel and every context-parallel group is on one
  // host, else why not — the first group that spans hosts, its ranks and hosts, the ranks per host — for a message.
  std::string groups_across_hosts(const std::vector<std::string>& hosts) const;

 private:
  std::vector<int> group(int rank, int RankCoords::*dim, int extent) const;
  int world_, tp_, cp_, dp_, pp_;
};

}  // namespace qwen3
