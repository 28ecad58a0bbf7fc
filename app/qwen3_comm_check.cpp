// qwen3-comm-check: checks and times the communicator seam, in the manner of nccl-tests. Under mpirun, every rank
// runs each collective on values whose correct result is known (all-reduce sum/max, all-gather, reduce-scatter, and
// the same on a split of the world into two halves), over MPI host buffers (--device cpu) or NCCL device buffers
// (--device cuda, one GPU per rank by node-local rank). Prints one line per collective with the largest error and the
// bus bandwidth of the largest size; exit 6 when any result is wrong.
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/help.h"
#include "common/main_wrapper.h"
#include "common/options_util.h"
#include "core/error.h"
#include "dist/mpi_communicator.h"
#ifdef QWEN3_HAVE_NCCL
#include <cuda_runtime.h>

#include "gpu/check.h"
#include "dist/nccl_communicator.h"
#endif

namespace po = boost::program_options;
using namespace qwen3;

namespace {

// Buffers in host memory (MPI) or device memory (NCCL), filled and read back as doubles.
struct Buffers {
  bool device = false;
  double* alloc(std::size_t n) {
#ifdef QWEN3_HAVE_NCCL
    if (device) {
      void* p = nullptr;
      CUDA_CHECK(cudaMalloc(&p, n * sizeof(double)));
      owned_device.push_back(p);
      return static_cast<double*>(p);
    }
#endif
    owned_host.emplace_back(n);
    return owned_host.back().data();
  }
  void put(double* dst, const std::vector<double>& v) {
#ifdef QWEN3_HAVE_NCCL
    if (device) {
      CUDA_CHECK(cudaMemcpy(dst, v.data(), v.size() * sizeof(double), cudaMemcpyHostToDevice));
      return;
    }
#endif
    std::copy(v.begin(), v.end(), dst);
  }
  std::vector<double> get(const double* src, std::size_t n) {
    std::vector<double> v(n);
#ifdef QWEN3_HAVE_NCCL
    if (device) {
      CUDA_CHECK(cudaDeviceSynchronize());
      CUDA_CHECK(cudaMemcpy(v.data(), src, n * sizeof(double), cudaMemcpyDeviceToHost));
      return v;
    }
#endif
    std::copy(src, src + n, v.begin());
    return v;
  }
  void sync() {
#ifdef QWEN3_HAVE_NCCL
    if (device) CUDA_CHECK(cudaDeviceSynchronize());
#endif
  }
  ~Buffers() {
#ifdef QWEN3_HAVE_NCCL
    for (void* p : owned_device) cudaFree(p);
#endif
  }
  std::vector<std::vector<double>> owned_host;
  std::vector<void*> owned_device;
};

double value(int rank, std::size_t i) { return static_cast<double>((rank + 1) * 1000 + static_cast<int>(i % 997)); }

// Checks every collective on comm with `count` values per rank; returns the worst absolute error.
double check_collectives(Communicator& comm, Buffers& b, std::size_t count, bool print, const std::string& tag,
                         double& busbw_gbs) {
  const int r = comm.rank(), n = comm.size();
  double worst = 0;
  auto expect = [&](const std::vector<double>& got, const std::function<double(std::size_t)>& want) {
    for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want(i)));
  };
  std::vector<double> mine(count), big(count * n);
  for (std::size_t i = 0; i < count; ++i) mine[i] = value(r, i);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = value(r, i);
  double* x = b.alloc(count);
  double* y = b.alloc(count * n);
  // all-reduce sum: Σ_q value(q, i); max: value(n − 1, i)
  b.put(x, mine);
  comm.barrier();
  const auto t0 = std::chrono::steady_clock::now();
  comm.all_reduce_sum(x, count);
  b.sync();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  busbw_gbs = dt > 0 ? 2.0 * (n - 1) / n * count * sizeof(double) / dt / 1e9 : 0;
  expect(b.get(x, count), [&](std::size_t i) {
    double s = 0;
    for (int q = 0; q < n; ++q) s += value(q, i);
    return s;
  });
  b.put(x, mine);
  comm.all_reduce_max(x, count);
  expect(b.get(x, count), [&](std::size_t i) { return value(n - 1, i); });
  // all-gather: block q holds rank q's values
  b.put(x, mine);
  comm.all_gather(x, y, count);
  expect(b.get(y, count * n), [&](std::size_t i) { return value(static_cast<int>(i / count), i % count); });
  // reduce-scatter: rank r receives block r of the sum
  b.put(y, big);
  comm.reduce_scatter_sum(y, x, count);
  expect(b.get(x, count), [&](std::size_t i) {
    double s = 0;
    for (int q = 0; q < n; ++q) s += value(q, r * count + i);
    return s;
  });
  if (print)
    std::printf("%-26s %10zu values/rank  max error %.1e  all-reduce bus bandwidth %.2f GB/s\n", tag.c_str(), count,
                worst, busbw_gbs);
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  return run_main("qwen3-comm-check", [&] {
    std::string device;
    po::options_description desc(
        "qwen3-comm-check: check and time the communicator seam's collectives\n"
        "Usage: mpirun -np N qwen3-comm-check [--device cpu|cuda]\nOptions");
    desc.add_options()("help,h", "show this help")("device", po::value(&device)->default_value("cpu"),
                                                    "cpu (MPI, host buffers) or cuda (NCCL, device buffers)");
    po::variables_map vm;
    const std::string exit_codes =
        exit_codes_help({{ExitCode::ok, "every collective gave its known result"}, {ExitCode::internal},
                         {ExitCode::usage, "also: --device cuda without a visible GPU or without NCCL in the build"},
                         {ExitCode::out_of_memory}, {ExitCode::check_failed, "a collective gave a wrong result"}});
    if (!parse_command_line(argc, argv, desc, vm, nullptr, exit_codes)) return 0;
    require_choice("--device", device, {"cpu", "cuda"});
    MpiSession mpi(&argc, &argv);
    MpiCommunicator world(MPI_COMM_WORLD);
    Buffers b;
    std::unique_ptr<Communicator> comm;
    if (device == "cuda") {
#ifdef QWEN3_HAVE_NCCL
      int devices = 0;
      CUDA_CHECK(cudaGetDeviceCount(&devices));
      if (devices == 0) throw UsageError("--device cuda: no CUDA device is visible on this host");
      CUDA_CHECK(cudaSetDevice(node_local_rank(world.comm()) % devices));
      b.device = true;
      comm = std::make_unique<NcclCommunicator>(world);
#else
      throw UsageError("--device cuda: this build has no NCCL");
#endif
    } else {
      comm = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
    }
    const bool root = world.rank() == 0;
    if (root) std::printf("qwen3-comm-check: %d ranks, %s\n", world.size(), device == "cuda" ? "NCCL" : "MPI");
    double worst = 0, bw = 0;
    for (std::size_t count : {std::size_t{1}, std::size_t{1000}, std::size_t{1} << 20, std::size_t{1} << 24})
      worst = std::max(worst, check_collectives(*comm, b, count, root, "world", bw));
    // Two halves (even and odd ranks), as the layout's groups are made.
    auto half = comm->split(world.rank() % 2, world.rank());
    worst = std::max(worst, check_collectives(*half, b, 4096, root, "split (even/odd ranks)", bw));
    double all = worst;
    world.all_reduce_max(&all, 1);
    if (root) std::printf("%s\n", all == 0 ? "PASS" : "FAIL");
    return all == 0 ? 0 : static_cast<int>(ExitCode::check_failed);
  });
}
