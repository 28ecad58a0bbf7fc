// qwen3-golden-check: compares a backend against a Hugging Face golden file and prints a table of relative errors.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "common/help.h"
#include "common/main_wrapper.h"
#include "common/options_util.h"
#include "core/error.h"
#include "dist/groups.h"
#include "dist/layout.h"
#include "dist/mpi_communicator.h"
#include "train/golden_check.h"
#include "train/run_config.h"
#include "train/run_option_table.h"

namespace po = boost::program_options;
using namespace qwen3;

namespace {

// The command line.
struct Options {
  std::string golden, device, init_from_hf, attention = "cudnn", precision = "bf16", fp8_scaling = RunConfig{}.fp8_scaling;
  double tolerance = 0, offload_optimizer = 0;
  int tp = 1, pp = 1, cp = 1;
  bool shared_gpu_staging = false;
};

// qwen3-golden-check's options, bound to o's fields.
void add_options(po::options_description& desc, Options& o) {
  desc.add_options()("help,h", "show this help")
      ("golden", po::value(&o.golden)->required(), "golden file (schema: tests/data/README.md)")
      ("device", po::value(&o.device)->default_value("cpu"), "backend: cpu or cuda")
      ("tp", po::value(&o.tp)->default_value(1), "tensor-parallel size")
      ("pp", po::value(&o.pp)->default_value(1), "pipeline-parallel size (the balanced stage split)")
      ("cp", po::value(&o.cp)->default_value(1), "context-parallel size (the sequence must divide by 2 × cp)")
      ("attention", po::value(&o.attention)->default_value(o.attention), run_option("attention").help.c_str())
      ("precision", po::value(&o.precision)->default_value(o.precision), run_option("precision").help.c_str())
      ("fp8-scaling", po::value(&o.fp8_scaling)->default_value(o.fp8_scaling), run_option("fp8-scaling").help.c_str())
      ("init-from-hf", po::value(&o.init_from_hf), "take the weights from this Hugging Face checkpoint folder instead of the "
       "golden file's /weights (its config.json must describe the same model)")
      ("offload-optimizer", po::value(&o.offload_optimizer)->implicit_value(1.0, "1")->value_name("FRACTION"),
       run_option("offload-optimizer").help.c_str())
      ("shared-gpu-staging", po::bool_switch(&o.shared_gpu_staging), run_option("shared-gpu-staging").help.c_str())
      ("tolerance", po::value(&o.tolerance), "one relative-error bound for every quantity (default: 1e-5 on cpu; on cuda the bf16-mixed bounds of "
       "docs/golden.md: 1.5e-2 logits/loss, 5e-2 gradients, 1e-2 after-step weights and training losses; with --precision fp8 "
       "its FP8 bounds on either device)");
}

// Rank 0's report: the golden file, the model, the parallel layout and tolerances, then a row per quantity.
void print_report(const Options& o, const GoldenTolerance& tol, int dp, const GoldenReport& r) {
  const auto& c = r.config;
  std::printf("golden file: %s\n  %s\n", o.golden.c_str(), r.generator.c_str());
  if (!o.init_from_hf.empty()) std::printf("  weights: from the Hugging Face checkpoint %s\n", o.init_from_hf.c_str());
  std::printf("  config: vocab %lld, hidden %lld, intermediate %lld, layers %lld, heads %lld/%lld kv, head_dim %lld, "
              "rope_theta %g, eps %g, %s\n",
              (long long)c.vocab_size, (long long)c.hidden_size, (long long)c.intermediate_size, (long long)c.num_layers,
              (long long)c.num_heads, (long long)c.num_kv_heads, (long long)c.head_dim, c.rope_theta, c.rms_norm_eps,
              c.tie_word_embeddings ? "tied" : "untied");
  if (o.tp > 1) std::printf("  tensor parallelism: %d ranks (sequence parallel), tensors gathered before comparing\n", o.tp);
  if (o.cp > 1) std::printf("  context parallelism: %d ranks, each holding 2 of %d chunks of every sequence\n", o.cp, 2 * o.cp);
  if (o.pp > 1) std::printf("  pipeline parallelism: %d stages, tensors taken from the stage that holds them\n", o.pp);
  if (dp > 1) std::printf("  data parallelism: %d replicas, the batch split between them\n", dp);
  if (o.precision == "fp8")
    std::printf("  precision: fp8, %s scaling (the decoder layers' linear layers; docs/fp8.md)\n", o.fp8_scaling.c_str());
  std::printf("  device: %s; tolerances (relative error ||out - ref|| / ||ref||): forward %.1e, gradients %.1e, "
              "after-step %.1e, losses %.1e\n\n", o.device.c_str(), tol.forward, tol.gradients, tol.after_step, tol.losses);
  std::printf("%-64s %12s %10s  %s\n", "quantity", "rel. error", "tolerance", "");
  int failed = 0;
  for (const auto& row : r.rows) {
    std::printf("%-64s %12.3e %10.1e  %s\n", row.quantity.c_str(), row.rel_error, row.tolerance, row.pass() ? "ok" : "FAIL");
    failed += !row.pass();
  }
  std::printf("\n%zu quantities, %d out of tolerance: %s\n", r.rows.size(), failed, r.pass() ? "PASS" : "FAIL");
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("qwen3-golden-check", [&] {
    Options o;
    po::options_description desc(
        "qwen3-golden-check: reproduce Hugging Face's logits, loss, gradients, AdamW step and training losses\n"
        "Usage: [mpirun -np N] qwen3-golden-check --golden FILE [--device cpu|cuda] [--tp T] [--pp P] [--attention cudnn|own] [--precision bf16|fp8] [--fp8-scaling current|delayed] [--init-from-hf DIR] [--offload-optimizer[=F]] [--tolerance X]\n"
        "Under mpirun -np N the ranks form T x P x D groups with D = N / (T x P) data-parallel replicas.\nOptions");
    add_options(desc, o);
    po::variables_map vm;
    const std::string exit_codes = exit_codes_help(
        {{ExitCode::ok, "every quantity within tolerance"}, {ExitCode::internal}, {ExitCode::usage}, {ExitCode::input},
         {ExitCode::out_of_memory}, {ExitCode::check_failed, "a quantity is out of tolerance"}});
    if (!parse_command_line(argc, argv, desc, vm, nullptr, exit_codes)) return 0;
    require_choice("--device", o.device, {"cpu", "cuda"});
    RunConfig as_run;  // --attention, --precision, --fp8-scaling checked by qwen3-pretrain's rules (train/run_option_table.cpp)
    as_run.attention = o.attention, as_run.precision = o.precision, as_run.fp8_scaling = o.fp8_scaling;
    for (const char* name : {"attention", "precision", "fp8-scaling"}) run_option(name).check(as_run);
    const bool fp8 = o.precision == "fp8";
    if (vm.count("tolerance") && !(o.tolerance > 0)) throw UsageError("--tolerance must be positive");
    const GoldenTolerance tol = vm.count("tolerance") ? GoldenTolerance::uniform(o.tolerance)
                                : fp8                 ? GoldenTolerance::fp8()
                                                      : GoldenTolerance::for_device(o.device);
    const int tp = o.tp, pp = o.pp, cp = o.cp;
    if (tp < 1) throw UsageError("--tp must be at least 1, got " + std::to_string(tp));
    if (pp < 1) throw UsageError("--pp must be at least 1, got " + std::to_string(pp));
    if (cp < 1) throw UsageError("--cp must be at least 1, got " + std::to_string(cp));
    if (o.offload_optimizer > 0 && o.device != "cuda") throw UsageError("--offload-optimizer: the CUDA backend's (--device cuda)");
    MpiSession mpi(&argc, &argv);
    MpiCommunicator world(MPI_COMM_WORLD);
    if (world.size() % (tp * pp * cp) != 0)
      throw UsageError("--tp " + std::to_string(tp) + " × --pp " + std::to_string(pp) + (cp > 1 ? " × --cp " + std::to_string(cp) : "") +
                       " does not divide the job's " + std::to_string(world.size()) +
                       " ranks (mpirun -np N with N a multiple of tp × pp" + (cp > 1 ? " × cp" : "") + ")");
    const ParallelLayout layout(world.size(), tp, cp, pp);
    ParallelGroups groups = make_parallel_groups(world, layout);
    GoldenReport r;
    try {
      r = run_golden_check(o.golden, o.device, tol, {groups.tp.get(), groups.cp.get(), groups.pp.get(), groups.dp.get(), groups.dp_cp.get(), o.offload_optimizer,
                                                     o.attention == "cudnn", o.shared_gpu_staging, fp8,
                                                     fp8 && o.fp8_scaling == "delayed"},
                           node_local_rank(world.comm()), o.init_from_hf);
    } catch (const Error& e) {
      // Seen by some ranks only (a pipeline stage, say), the others would wait for them: end the whole job.
      if (world.size() == 1) throw;
      std::fprintf(stderr, "qwen3-golden-check: error on rank %d: %s\n", world.rank(), e.what());
      MpiSession::abort(static_cast<int>(e.code()));
    }
    if (world.rank() == 0) print_report(o, tol, layout.dp(), r);
    return r.pass() ? 0 : static_cast<int>(ExitCode::check_failed);
  });
}
