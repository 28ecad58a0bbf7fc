// Rank 0's one line per step: loss, grad norm, lr, time, throughput, TFLOP/s per device, MFU, peak memory, ETA.
#pragma once
#include <cstdint>
#include <string>

#include "io/results.h"

namespace qwen3 {

// Dense bf16 peak of one H100/H200 (datasheet), the MFU denominator.
inline constexpr double kPeakTflopsPerDevice = 989.0;
// What an MFU is a fraction of, said after it where a reader could take it for the precision's own peak: an fp8
// run's MFU is of the bf16 peak too (docs/fp8.md), so that it compares with a bf16 run's.
inline const char* mfu_basis(bool fp8) { return fp8 ? " of the bf16 peak" : ""; }

std::string format_bytes(std::int64_t bytes);  // "1.23 GiB"
std::string format_duration(double seconds);    // "1:02:03"
// v with 3 significant digits in fixed notation, so small values still show: 0.00512, 0.0512, 5.12, 51.2, 512.
std::string format_significant(double v);
std::string progress_line(std::int64_t step, std::int64_t steps, const StepRecord& r, std::int64_t peak_bytes,
                          double eta_s);
// Prints `line` and a newline on stdout without ever blocking the run: when stdout (a pipe or a terminal) cannot take
// it now — mpirun stops reading its ranks' output once it is itself signalled, and a full buffer would hold the run
// before the step boundary where a pre-emption saves its checkpoint — the line is dropped, or its end, after at most
// a second (and at once while the reader stays stopped); false then.
// Every line rank 0 prints during a run comes here, so stdio's buffer holds nothing that could block.
bool print_without_blocking(const std::string& line);

}  // namespace qwen3
