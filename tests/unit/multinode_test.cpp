// Past one node: two Slurm nodes on this machine (tools/slurm/local_slurm.sh start DIR 2: two network and UTS
// namespaces, hosts node0 and node1, a slurmd each), Open MPI over TCP between them, the CPU backend. What a cluster
// user meets: the job script with --nodes 2 (tensor parallelism inside each node, data or pipeline parallelism across,
// equal to one rank), a tensor-parallel group across nodes refused, a two-node sweep cell, a checkpoint written by two
// nodes resumed on one, a node whose ranks all die named in the results file. Needs root and Slurm (CI has both);
// starts the cluster once for the suite.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "cli_runner.h"
#include "io/dataset.h"
#include "io/h5.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {

std::string shq(const std::string& s) { return "'" + s + "'"; }
std::string repo_file(const std::string& path) { return test::test_data_dir() + "/../../" + path; }

// sbatch as these tests run it: from `client` (node0's namespace), in `dir`, the job's output to `output`, handing the
// job script this build's own binaries (QWEN3_BIN: the script's fallback, <repo>/build/bin, is another build or none
// when the build folder is elsewhere, `cmake -B /elsewhere`).
std::string sbatch_command(const std::string& client, const std::string& dir, const std::string& output,
                           const std::string& args) {
  return "cd " + shq(dir) + " && QWEN3_BIN=" + shq(test::bin_dir()) + " " + client + " sbatch --parsable -o " +
         shq(output) + " " + args;
}

// A job's end as Slurm records it (scontrol show job's JobState): these and only these are final.
bool final_state(const std::string& state) {
  for (const char* s : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                        "BOOT_FAIL", "DEADLINE"})
    if (state == s) return true;
  return false;
}

// How long a test may take before ctest ends it (tests/CMakeLists.txt: TIMEOUT 600), less time to say why it failed.
constexpr double kTestBudgetSeconds = 540;

// The two-node cluster, its folder and the prefix Slurm's clients run with (node0's network namespace).
struct Cluster {
  std::string dir, client, error;
};

class MultiNodeSlurm : public ::testing::Test {
 protected:
  static Cluster* cluster;
  static fs::path work;

  static void SetUpTestSuite() {
    cluster = new Cluster;
    const bool slurm = test::run_command("command -v sbatch && command -v nsenter && command -v ip && "
                                         "{ command -v slurmd || test -x /usr/sbin/slurmd; }").exit_code == 0;
    if (!slurm || ::geteuid() != 0) {
      cluster->error = "needs root, Slurm (munge slurmctld slurmd slurm-client), nsenter and ip";
      return;
    }
    work = test::fresh_dir("qwen3_multinode");
    cluster->dir = (work / "cluster").string();
    const auto r = test::run_command(shq(repo_file("tools/slurm/local_slurm.sh")) + " start " + shq(cluster->dir) + " 2");
    if (r.exit_code != 0) {
      cluster->error = "the two-node cluster did not start: " + r.output;
      return;
    }
    const auto at = r.output.find("QWEN3_SLURM_CLIENT=\"");
    cluster->client = r.output.substr(at + 20, r.output.find('"', at + 20) - at - 20);
    ::setenv("SLURM_CONF", (fs::path(cluster->dir) / "slurm.conf").c_str(), 1);
    // Open MPI between the nodes: TCP over the namespaces' network (what a cluster user sets for their interface).
    ::setenv("OMPI_MCA_btl_tcp_if_include", "10.77.0.0/24", 1);
    ::setenv("OMPI_MCA_oob_tcp_if_include", "10.77.0.0/24", 1);
    write_synthetic_dataset((work / "data.h5").string(), 512, {64}, 32, 21, false);
    // The job script the jobs run: a copy with no build folder beside it, so that only QWEN3_BIN can find the
    // binaries (as when the build folder is not <repo>/build).
    fs::create_directories(work / "jobs");
    fs::copy_file(repo_file("jobs/pretrain.sbatch"), work / "jobs" / "pretrain.sbatch");
    fs::create_directories(work / "submit");
  }
  static void TearDownTestSuite() {
    if (!cluster->dir.empty()) test::run_command(shq(repo_file("tools/slurm/local_slurm.sh")) + " stop " + shq(cluster->dir));
    delete cluster;
  }
  void SetUp() override {
    started = std::chrono::steady_clock::now();
    if (!cluster->error.empty()) {
      if (test::in_ci()) FAIL() << cluster->error;
      GTEST_SKIP() << cluster->error;
    }
  }

  struct Job {
    int exit_code = -1;
    std::string state, output;
  };
  // sbatch ARGS from node0's namespace: the job's id ("" when refused, `output` then says why) and output file.
  static std::string start(const std::string& args, std::string& output) {
    static int n = 0;
    output = (work / ("job-" + std::to_string(++n) + ".out")).string();
    const auto r = test::run_command(sbatch_command(cluster->client, (work / "submit").string(), output, args));
    // The id is the last line (sbatch may warn first, on stderr, which run_command folds in).
    std::string id = r.output.substr(0, r.output.find_last_not_of(" \n") + 1);
    id = id.substr(id.find_last_of('\n') + 1);
    id = id.substr(0, id.find(';'));
    if (r.exit_code != 0 || id.empty() || id.find_first_not_of("0123456789") != std::string::npos) {
      output = r.output;
      return "";
    }
    return id;
  }
  // Waits for job `id` to reach a final state, polling scontrol (sbatch --wait polls at 10 s and more), however long a
  // loaded machine takes, within the test's budget; its state, exit code and output. A job that has not ended by then
  // is cancelled, and its record and the controller's log come back in `output` to say why.
  Job wait(const std::string& id, const std::string& output) const {
    Job job;
    std::string show;
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() < kTestBudgetSeconds) {
      show = test::run_command(cluster->client + " scontrol show job " + shq(id)).output;
      const auto s = show.find("JobState=");
      job.state = s == std::string::npos ? "" : show.substr(s + 9, show.find_first_of(" \n", s) - s - 9);
      if (final_state(job.state)) {
        job.exit_code = std::stoi(show.substr(show.find("ExitCode=") + 9));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    std::ifstream f(output);
    job.output.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    if (!final_state(job.state)) {
      test::run_command(cluster->client + " scancel " + shq(id));
      job.output += "\n[the job did not end within the test's " + std::to_string(int(kTestBudgetSeconds)) +
                    " s; cancelled]\n" + show + "\n[slurmctld.log, last lines]\n" +
                    test::run_command("tail -n 40 " + shq(cluster->dir + "/log/slurmctld.log")).output;
    } else if (job.state != "COMPLETED") {
      job.output += "\n[scontrol show job " + id + "]\n" + show;  // why Slurm ended it: Reason, ExitCode (code:signal)
    }
    return job;
  }
  Job submit(const std::string& args) const {
    std::string output;
    const std::string id = start(args, output);
    if (id.empty()) return Job{-1, "", output};
    return wait(id, output);
  }
  static std::string pretrain_args(int nodes, int per_node, const std::string& args) {
    return "--nodes " + std::to_string(nodes) + " --ntasks-per-node " + std::to_string(per_node) + " --gpus-per-node=0 " +
           shq((work / "jobs" / "pretrain.sbatch").string()) + " --model tiny --data " + shq((work / "data.h5").string()) +
           " --seq-len 64 --global-batch 4 --overwrite " + args;
  }
  // The job script on `nodes` nodes × `per_node` ranks, training the tiny model for 4 steps (no GPUs:
  // --gpus-per-node=0 undoes the script's default).
  Job pretrain(int nodes, int per_node, const std::string& args) const {
    return submit(pretrain_args(nodes, per_node, "--steps 4 " + args));
  }
  // A script printing the pids of node1's ranks (2 and 3, by their environment) of the run writing `out`, once both
  // exist, rank 0 has created the results file (every rank is past start-up: the liveness watch starts next) and a
  // few seconds have passed (the job's output is buffered until it ends: no step line to wait for). Waits on those
  // states, within the test's budget, however slow a loaded machine is.
  std::string node1_ranks_once_training(const std::string& out) const {
    const std::string finder = (work / "node1-ranks.sh").string();
    std::ofstream(finder) << "for p in $(pgrep -f -- " << shq(out) << "); do tr '\\0' '\\n' < /proc/$p/environ "
                          << "2>/dev/null | grep -qxE 'OMPI_COMM_WORLD_RANK=(2|3)' && echo $p; done\n";
    const auto in_budget = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() < kTestBudgetSeconds / 2;
    };
    while (in_budget() && test::run_command("bash " + shq(finder) + " | wc -l").output.rfind("2", 0) != 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    while (in_budget() && !fs::exists(out + ".partial") && !fs::exists(out))
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::this_thread::sleep_for(std::chrono::seconds(3));
    return finder;
  }
  // One rank on this machine, for reference.
  static std::vector<double> one_rank_losses(const std::string& args) {
    const std::string out = (work / "one.h5").string();
    const auto r = test::run_program("qwen3-pretrain", "--model tiny --data " + shq((work / "data.h5").string()) +
                                     " --seq-len 64 --global-batch 4 --steps 4 --overwrite " + args + " --out " + shq(out));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return losses(out);
  }
  // A multi-node run's losses are one rank's.
  static void expect_one_rank_losses(const std::string& results) {
    const auto one = one_rank_losses(""), many = losses(results);
    ASSERT_EQ(many.size(), one.size());
    for (std::size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(many[i], one[i], 1e-6 * one[i]) << "step " << i + 1;
  }
  static std::vector<double> losses(const std::string& results) {
    h5::Handle f = h5::open_read(results, "results");
    return h5::read_f64(f.get(), "steps/loss");
  }
  static std::vector<std::string> hosts(const std::string& results) {
    h5::Handle f = h5::open_read(results, "results");
    return h5::read_attr_strings(f.get(), "hostnames");
  }
  std::chrono::steady_clock::time_point started;
};
Cluster* MultiNodeSlurm::cluster = nullptr;
fs::path MultiNodeSlurm::work;

}  // namespace

// Every job these tests submit is handed this build's binaries (QWEN3_BIN), whatever folder the build is in, and runs
// the job script from a folder with no build/ beside it (so the script's fallbacks cannot hide a missing QWEN3_BIN).
TEST(MultiNodeJobs, EveryJobIsHandedTheTestsOwnBinaries) {
  const std::string cmd = sbatch_command("nsenter --net=/run/netns/x", "/tmp/w/submit", "/tmp/w/job.out", "--nodes 2 job.sbatch");
  EXPECT_EQ(cmd.rfind("cd '/tmp/w/submit' && QWEN3_BIN='" + test::bin_dir() + "' nsenter --net=/run/netns/x sbatch ", 0), 0u)
      << cmd;
  EXPECT_NE(cmd.find(" --nodes 2 job.sbatch"), std::string::npos) << cmd;
  // sbatch passes the submitting environment on (--export=ALL, its default, also with --export=ALL,VAR=...), and the
  // job script takes QWEN3_BIN before any fallback.
  const std::string script = [] {
    std::ifstream f(repo_file("jobs/pretrain.sbatch"));
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }();
  EXPECT_NE(script.find("if [ -n \"${QWEN3_BIN:-}\" ]; then"), std::string::npos);
  EXPECT_TRUE(final_state("CANCELLED") && final_state("COMPLETED") && !final_state("PENDING") && !final_state("RUNNING") &&
              !final_state("COMPLETING") && !final_state(""));
}

TEST_F(MultiNodeSlurm, TensorParallelInsideNodesDataParallelAcrossEqualsOneRank) {
  const std::string out = (work / "tp2dp2.h5").string();
  const Job job = pretrain(2, 2, "--tp 2 --out " + shq(out));
  ASSERT_EQ(job.exit_code, 0) << job.state << "\n" << job.output;
  EXPECT_EQ(hosts(out), (std::vector<std::string>{"node0", "node0", "node1", "node1"}));
  expect_one_rank_losses(out);
  // The report groups its memory by node.
  const std::string report = (work / "report").string();
  const auto r = test::run_program("qwen3-report", shq(out) + " --out " + shq(report));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream md(report + "/report.md");
  const std::string text((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("## Memory by node"), std::string::npos) << text;
  EXPECT_NE(text.find("| tiny | T2P1D2 | 64 | node1 | 2–3 |"), std::string::npos) << text;
}

TEST_F(MultiNodeSlurm, TheJobScriptLaunchesWithSrunToo) {
  // QWEN3_LAUNCHER=srun: srun --mpi=pmix starts the ranks (each node's PMIx folder its own), tp 2 inside each node.
  const std::string out = (work / "srun.h5").string();
  const Job job = submit("--export=ALL,QWEN3_LAUNCHER=srun " + pretrain_args(2, 2, "--steps 4 --tp 2 --out " + shq(out)));
  ASSERT_EQ(job.exit_code, 0) << job.state << "\n" << job.output;
  EXPECT_EQ(hosts(out), (std::vector<std::string>{"node0", "node0", "node1", "node1"}));
  expect_one_rank_losses(out);
}

TEST_F(MultiNodeSlurm, PipelineAcrossNodesEqualsOneRank) {
  const std::string out = (work / "pp2.h5").string();
  const Job job = pretrain(2, 1, "--pp 2 --out " + shq(out));
  ASSERT_EQ(job.exit_code, 0) << job.state << "\n" << job.output;
  EXPECT_EQ(hosts(out), (std::vector<std::string>{"node0", "node1"}));
  expect_one_rank_losses(out);
}

TEST_F(MultiNodeSlurm, ATensorParallelGroupAcrossNodesIsRefusedNamingTheHosts) {
  const std::string out = (work / "tp-across.h5").string();
  Job job = pretrain(2, 1, "--tp 2 --out " + shq(out));
  EXPECT_EQ(job.exit_code, 2) << job.state << "\n" << job.output;
  EXPECT_NE(job.output.find("tensor-parallel ranks 0-1 span hosts node0, node1 (1 ranks on node0)"), std::string::npos)
      << job.output;
  EXPECT_NE(job.output.find("--allow-cross-node-tp"), std::string::npos) << job.output;
  EXPECT_FALSE(fs::exists(out)) << "refused before the results file";
  job = pretrain(2, 1, "--tp 2 --allow-cross-node-tp --out " + shq(out));
  EXPECT_EQ(job.exit_code, 0) << job.state << "\n" << job.output;
  EXPECT_NE(job.output.find("warning: tensor-parallel ranks 0-1 span hosts node0, node1"), std::string::npos) << job.output;
}

// A loaded machine, made on purpose: node0's slurmd does not answer for 20 s while its job is launched (longer than
// Slurm's default MessageTimeout, 10 s, which made slurmctld requeue the job and hold it for two minutes, past the
// test's old fixed 240 s). The job still runs once, at once, and ends with qwen3-pretrain's own exit code.
TEST_F(MultiNodeSlurm, AJobLaunchedWhileASlurmdStallsRunsOnceWithItsOwnExitCode) {
  const std::string out = (work / "stalled.h5").string();
  std::ifstream pid_file(cluster->dir + "/slurmd-node0.pid");
  std::string pid;
  ASSERT_TRUE(std::getline(pid_file, pid)) << "no pid file of node0's slurmd";
  struct Resume {  // whatever happens, node0's slurmd runs again
    std::string pid;
    ~Resume() { test::run_command("kill -CONT " + pid); }
  } resume{pid};
  ASSERT_EQ(test::run_command("kill -STOP " + pid).exit_code, 0);
  std::string output;
  const std::string id = start(pretrain_args(2, 1, "--steps 4 --tp 2 --out " + shq(out)), output);
  ASSERT_FALSE(id.empty()) << output;
  std::this_thread::sleep_for(std::chrono::seconds(20));
  test::run_command("kill -CONT " + pid);
  const Job job = wait(id, output);
  EXPECT_EQ(job.exit_code, 2) << job.state << "\n" << job.output;
  EXPECT_NE(job.output.find("tensor-parallel ranks 0-1 span hosts node0, node1"), std::string::npos) << job.output;
  const std::string record = test::run_command(cluster->client + " scontrol show job " + shq(id)).output;
  EXPECT_NE(record.find("Restarts=0"), std::string::npos) << "requeued\n" << record;
}

TEST_F(MultiNodeSlurm, ACheckpointOfTwoNodesResumesOnOne) {
  const std::string ckpt = (work / "ckpt").string(), out = (work / "ckpt-run.h5").string();
  const Job job = pretrain(2, 2, "--tp 2 --save " + shq(ckpt) + " --save-interval 2 --out " + shq(out));
  ASSERT_EQ(job.exit_code, 0) << job.state << "\n" << job.output;
  ASSERT_TRUE(fs::exists(fs::path(ckpt) / "step-00000002" / "manifest.h5"));
  const std::string resumed = (work / "resumed.h5").string();
  const auto r = test::run_program("qwen3-pretrain", "--model tiny --data " + shq((work / "data.h5").string()) +
                                   " --seq-len 64 --global-batch 4 --steps 4 --resume " + shq(ckpt + "/step-00000002") +
                                   " --out " + shq(resumed) + " --overwrite");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto whole = losses(out), tail = losses(resumed);
  ASSERT_EQ(tail.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) EXPECT_NEAR(tail[i], whole[2 + i], 1e-6 * whole[2 + i]) << "step " << 3 + i;
}

TEST_F(MultiNodeSlurm, ASweepCellRunsOnTwoNodes) {
  const fs::path spec = work / "two-node.sweep.ini";
  std::ofstream(spec) << "[sweep]\nname = two-node\nmodels = tiny\nlengths = 64\nlayouts = T2P1\nglobal_batch = 4\n"
                         "steps = 2\ndocuments = 8\ndevice = cpu\nnodes = 2\ngpus_per_node = 2\n";
  const fs::path run = work / "sweep";
  const auto r = test::run_command(cluster->client + " " + shq(test::bin_dir() + "/qwen3-sweep") + " " + shq(spec.string()) +
                                   " --dir " + shq(run.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string results = (run / "results" / "tiny-L64-T2P1D2.h5").string();
  for (int i = 0; i < 800 && !fs::exists(results); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(fs::exists(results)) << r.output;
  h5::Handle f = h5::open_read(results, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok");
  EXPECT_EQ(h5::read_attr_strings(f.get(), "hostnames"), (std::vector<std::string>{"node0", "node0", "node1", "node1"}));
}

TEST_F(MultiNodeSlurm, ANodeWhoseRanksAllDieEndsTheJobNamingTheHost) {
  // Every rank of node1 (ranks 2 and 3) killed mid-run: the job ends within 60 s, and rank 0 (on node0) writes status
  // "error" naming node1 (its liveness watch saw their connections close, dist/rank_watch.h).
  const std::string out = (work / "dying.h5").string();
  std::string output;
  const std::string id = start(pretrain_args(2, 2, "--tp 2 --steps 1000000 --out " + shq(out)), output);
  ASSERT_FALSE(id.empty()) << output;
  struct Cancel {  // whatever happens, the job does not outlive the test
    std::string cmd;
    ~Cancel() { test::run_command(cmd); }
  } cancel{cluster->client + " scancel " + id};
  const std::string finder = node1_ranks_once_training(out);
  const auto killed = test::run_command("for p in $(bash " + shq(finder) + "); do kill -9 $p && echo killed $p; done");
  ASSERT_NE(killed.output.find("killed"), std::string::npos) << killed.output;
  const auto t0 = std::chrono::steady_clock::now();
  const Job job = wait(id, output);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 60) << job.output;
  EXPECT_NE(job.exit_code, 0) << job.state << "\n" << job.output;
  ASSERT_TRUE(fs::exists(out)) << job.output;
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "error");
  const std::string message = h5::read_attr_string(f.get(), "error_message");
  EXPECT_NE(message.find("on host node1"), std::string::npos) << message;
}

TEST_F(MultiNodeSlurm, ACancelledJobNamesNoRankAsFailed) {
  // scancel: every rank gets the signal and says so to rank 0 before it goes; the results file says the job was ended
  // by a signal, and blames no rank.
  const std::string out = (work / "cancelled.h5").string();
  std::string output;
  const std::string id = start(pretrain_args(2, 2, "--tp 2 --steps 1000000 --out " + shq(out)), output);
  ASSERT_FALSE(id.empty()) << output;
  node1_ranks_once_training(out);
  test::run_command(cluster->client + " scancel " + id);
  const Job job = wait(id, output);
  EXPECT_EQ(job.state, "CANCELLED") << job.output;
  // Slurm says CANCELLED as soon as it has sent the signal; rank 0 finishes the file as it ends, a moment later.
  for (int i = 0; i < 600 && !fs::exists(out); ++i) ::usleep(100000);
  ASSERT_TRUE(fs::exists(out)) << job.output;
  h5::Handle f = h5::open_read(out, "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "error");
  const std::string message = h5::read_attr_string(f.get(), "error_message");
  EXPECT_NE(message.find("terminated by signal"), std::string::npos) << message;
  EXPECT_EQ(message.find("on host"), std::string::npos) << message;
}
