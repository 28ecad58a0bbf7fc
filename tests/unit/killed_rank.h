// A rank killed in the middle of a tensor-parallel run (CPU over MPI, or CUDA over NCCL): mpirun must end the whole job
// and rank 0 record why in the results file. Shared by the CPU test (CI) and the multi-GPU one.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "cli_runner.h"
#include "io/dataset.h"
#include "io/h5.h"

namespace qwen3::test {

struct KilledRun {
  std::string output;  // the driving script's output
  std::string log;     // mpirun's output (every rank's messages)
  bool mpirun_ended = false, mpirun_exit_zero = false;
  int seconds = -1;  // from the kill to mpirun's exit
  std::string status, error_message;  // the results file's outcome
};

// Starts `mpirun -np np qwen3-pretrain --device D --tp np` (and `extra` options) on the tiny model for many steps; once
// it prints a step, kills rank 1 with SIGKILL and waits for mpirun.
inline KilledRun kill_rank_during_run(const std::string& device, int np, const std::string& name,
                                      const std::string& extra = "") {
  namespace fs = std::filesystem;
  const fs::path dir = fresh_dir(name);
  const std::string data = (dir / "data.h5").string(), out = (dir / "run.h5").string(), log = (dir / "log.txt").string();
  write_synthetic_dataset(data, 512, {64}, 32, 9, false);
  const std::string script =
      mpirun(np) + "'" + bin_dir() + "/qwen3-pretrain'" + (device == "cuda" ? staging_option() : " ") + "--device " + device + " --model tiny --data '" + data +
      "' --seq-len 64 --global-batch 4 --steps 1000000 --tp " + std::to_string(np) + " " + extra + " --out '" + out + "' > '" + log +
      "' 2>&1 & M=$!; " + "for i in $(seq 600); do grep -q '^step' '" + log + "' && break; sleep 0.1; done; " +
      "for p in $(pgrep -f '" + out + "'); do grep -qa OMPI_COMM_WORLD_RANK=1 /proc/$p/environ 2>/dev/null && kill -9 $p; done; " +
      "S=$(date +%s); wait $M; echo \"mpirun exit $? after $(( $(date +%s) - S )) s\"";
  const std::string script_path = (dir / "kill.sh").string();
  std::ofstream(script_path) << script << "\n";
  KilledRun k;
  k.output = run_command("bash '" + script_path + "'").output;
  const auto at = k.output.find("mpirun exit ");
  k.mpirun_ended = at != std::string::npos;
  if (k.mpirun_ended) {
    k.mpirun_exit_zero = k.output.compare(at, 14, "mpirun exit 0 ") == 0;
    k.seconds = std::stoi(k.output.substr(k.output.find(" after ", at) + 7));
  }
  std::ifstream in(log);
  k.log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (fs::exists(out)) {
    h5::Handle f = h5::open_read(out, "results");
    k.status = h5::read_attr_string(f.get(), "status");
    if (k.status != "ok" && k.status != "running") k.error_message = h5::read_attr_string(f.get(), "error_message");
  }
  return k;
}

}  // namespace qwen3::test
