// Facts about where a run happened, for the results file: host, library versions, UTC times, the commit.
#pragma once
#include <map>
#include <string>

namespace qwen3 {

std::string hostname();
std::string utc_now();  // ISO 8601, e.g. 2026-11-27T18:36:12Z
std::string git_commit();
// The threads one of `ranks_here` ranks on this host should run: OMP_NUM_THREADS when set (jobs/pretrain.sbatch sets
// it from the allocation), else the cores this process may run on (its affinity mask), at most an equal share of the
// host's (mpirun --bind-to none gives every rank all of them). At least 1.
int cores_per_rank(int ranks_here);
// "cuda", "cudnn", "nccl", "mpi", "hdf5" → version text (or "not built" where this binary lacks it).
std::map<std::string, std::string> library_versions();

}  // namespace qwen3
