#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine: installs missing packages, builds, then runs the demo or the tests.
#   tools/bootstrap.sh demo   build, make a small synthetic dataset, train the tiny model under mpirun, print the summary
#   tools/bootstrap.sh test   build and run the whole test suite (ctest); arguments after `test` go to ctest, e.g.
#                             `tools/bootstrap.sh test -L unit` (labels unit, mpi, slurm, gpu: README.md, tests/CMakeLists.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in demo|test) ;; *) echo "usage: tools/bootstrap.sh demo | test [ctest arguments]" >&2; exit 2 ;; esac
shift
[ "$mode" = test ] || [ $# -eq 0 ] || { echo "usage: tools/bootstrap.sh demo | test [ctest arguments]" >&2; exit 2; }

packages=(build-essential cmake ninja-build git pkg-config libopenmpi-dev openmpi-bin libhdf5-dev hdf5-tools
          libboost-program-options-dev nlohmann-json3-dev libgtest-dev python3-h5py python3-matplotlib python3-scipy
          python3-pytest
          munge slurmctld slurmd slurm-client iproute2 util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: error: missing packages (${missing[*]}) and not root; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build=build
[ -f "$build/build.ninja" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"

if [ "$mode" = test ]; then
  cd "$build"
  exec ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@"
fi

# demo: the GPUs of this node when the build has the CUDA backend, else two CPU ranks.
mpirun_args=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpirun_args+=(--allow-run-as-root)
gpus=0
command -v nvidia-smi >/dev/null && gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "$gpus" -gt 0 ] && "$build/bin/qwen3-pretrain" --list-devices | grep -qx cuda; then
  # Every GPU of the node, one rank each, data parallel (gradients reduced over NCCL).
  device=cuda ranks=$gpus
  mpirun_args+=(-x NCCL_NVLS_ENABLE=0)
else
  [ "$gpus" -gt 0 ] && echo "demo: $gpus GPU(s) found, but this build has no CUDA backend: training on the CPU"
  device=cpu ranks=2
  mpirun_args+=(-x OMP_NUM_THREADS=1)
fi
mkdir -p "$build/demo"
"$build/bin/qwen3-dataset" synthetic --out "$build/demo/data.h5" --vocab-size 512 --lengths 128,256 \
  --documents 64 --seed 1234 --overwrite
# The global batch: inputs/demo.ini's 8, or the smallest multiple of micro-batch × ranks above it (3 GPUs: 12).
step=$(( 2 * ranks ))
mpirun "${mpirun_args[@]}" -np "$ranks" "$build/bin/qwen3-pretrain" --config inputs/demo.ini --device "$device" \
  --global-batch $(( (8 + step - 1) / step * step )) --data "$build/demo/data.h5" --out "$build/demo/results.h5" --overwrite
"$build/bin/qwen3-results" "$build/demo/results.h5"
