// Rank layout arithmetic (see layout.h).
#include "dist/layout.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "core/error.h"

namespace qwen3 {

ParallelLayout::ParallelLayout(int world, int tp, int cp, int pp) : world_(world), tp_(tp), cp_(cp), pp_(pp) {
  if (world < 1) throw UsageError("world size must be at least 1");
  if (tp < 1 || cp < 1 || pp < 1) throw UsageError("--tp, --cp and --pp must be at least 1");
  if (world % (tp * cp * pp) != 0)
    throw UsageError("the number of ranks (" + std::to_string(world) + ") is not divisible by tp·cp·pp = " +
                     std::to_string(tp * cp * pp) + "; launch a multiple of it");
  dp_ = world / (tp * cp * pp);
}

RankCoords ParallelLayout::coords(int rank) const {
  if (rank < 0 || rank >= world_) throw InternalError("rank " + std::to_string(rank) + " outside the layout");
  RankCoords c;
  c.tp = rank % tp_;
  rank /= tp_;
  c.cp = rank % cp_;
  rank /= cp_;
  c.dp = rank % dp_;
  c.pp = rank / dp_;
  return c;
}

int ParallelLayout::rank_of(const RankCoords& c) const { return c.tp + tp_ * (c.cp + cp_ * (c.dp + dp_ * c.pp)); }

std::vector<int> ParallelLayout::group(int rank, int RankCoords::*dim, int extent) const {
  RankCoords c = coords(rank);
  std::vector<int> ranks;
  for (int i = 0; i < extent; ++i) {
    c.*dim = i;
    ranks.push_back(rank_of(c));
  }
  return ranks;
}

std::vector<int> ParallelLayout::tp_group(int rank) const { return group(rank, &RankCoords::tp, tp_); }
std::vector<int> ParallelLayout::cp_group(int rank) const { return group(rank, &RankCoords::cp, cp_); }
std::vector<int> ParallelLayout::dp_group(int rank) const { return group(rank, &RankCoords::dp, dp_); }
std::vector<int> ParallelLayout::pp_group(int rank) const { return group(rank, &RankCoords::pp, pp_); }

std::string ParallelLayout::describe() const {
  char buf[96];
  std::snprintf(buf, sizeof buf, "T%d C%d D%d P%d (%d rank%s)", tp_, cp_, dp_, pp_, world_, world_ == 1 ? "" : "s");
  return buf;
}

std::string ParallelLayout::groups_across_hosts(const std::vector<std::string>& hosts) const {
  for (int r = 0; r < world_; ++r)
    for (const auto& [what, group] : {std::pair<const char*, std::vector<int>>{"tensor-parallel", tp_group(r)},
                                      {"context-parallel", cp_group(r)}}) {
      std::vector<std::string> seen;
      for (int g : group)
        if (std::find(seen.begin(), seen.end(), hosts.at(static_cast<std::size_t>(g))) == seen.end())
          seen.push_back(hosts[static_cast<std::size_t>(g)]);
      if (seen.size() < 2) continue;
      const auto per_host = std::count(hosts.begin(), hosts.end(), hosts[static_cast<std::size_t>(r)]);
      std::string names;
      for (const auto& h : seen) names += (names.empty() ? "" : ", ") + h;
      return std::string(what) + " ranks " + std::to_string(group.front()) + "-" + std::to_string(group.back()) +
             " span hosts " + names + " (" + std::to_string(per_host) + " ranks on " + hosts[static_cast<std::size_t>(r)] + ")";
    }
  return "";
}

}  // namespace qwen3
