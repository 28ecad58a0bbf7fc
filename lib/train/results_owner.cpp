// The training run's results file behind one owner (see results_owner.h).
#include "train/results_owner.h"

#include <cstdio>
#include <cstring>
#include <vector>

#include "dist/collective_errors.h"
#include "io/system_info.h"

namespace qwen3::trainer {
namespace {

// What the results file records of a failure beyond its message: the step a diverged run stopped at; of a run that
// ran out of memory (status "oom"), the allocator's details; for a
// std::bad_alloc that collectively() agreed on as a plain error, the host's — this process's failed request and
// resident bytes, or -1 (unknown) when it was another rank's ("rank N: " before its message).
void write_failure_details(ResultsWriter& results, const Error& e) {
  if (const auto* diverged = dynamic_cast<const Diverged*>(&e)) results.write_attribute("diverged_at_step", diverged->at_step);
  if (std::string(e.status()) != "oom") return;
  const std::string message = e.what();
  OutOfMemory details = host_out_of_memory();
  if (const auto* oom = dynamic_cast<const OutOfMemory*>(&e)) {
    details = *oom;
  } else if (message.rfind("rank ", 0) == 0) {  // another rank's: only its message came here
    const bool host = message.find("out of host memory") != std::string::npos;
    details = OutOfMemory(message, host ? "host" : "unknown", -1, -1);
  }
  results.write_attribute("oom_category", details.category);
  results.write_attribute("oom_requested_bytes", details.requested_bytes);
  results.write_attribute("oom_in_use_bytes", details.in_use_bytes);
}

// Collective (every rank calls it at the same point): each rank's memory samples since the last call, on rank 0
// in rank order (empty elsewhere). Bounded: a step's worth of samples per rank.
std::vector<std::vector<MemorySample>> gather_new_samples(Communicator& world, MemoryTracer& tracer) {
  std::vector<double> flat;  // time_s, bytes, device_bytes per sample
  for (const auto& s : tracer.take_new())
    flat.insert(flat.end(), {s.time_s, static_cast<double>(s.bytes), static_cast<double>(s.device_bytes)});
  std::vector<std::vector<MemorySample>> per_rank;
  for (const auto& f : world.gather(flat, 0)) {
    per_rank.emplace_back();
    for (std::size_t i = 0; i + 2 < f.size(); i += 3)
      per_rank.back().push_back({f[i], static_cast<std::int64_t>(f[i + 1]), static_cast<std::int64_t>(f[i + 2])});
  }
  return per_rank;
}

// Rank 0 after a failure: the OOM details, its own memory samples not yet written (the other ranks' cannot be
// gathered now: they may be anywhere; theirs up to the last flush are in the file), the timings, the status.
// A failure to write these details (no host memory or disk left) must not keep the status from being written.
void finish_failed_run(ResultsWriter& results, const Error& e, MemoryTracer* tracer, int world_size, double init_s,
                       double first_step_s, double total_s) {
  const auto attempt = [](const std::function<void()>& write) {
    try {
      write();
    } catch (const std::exception&) {  // the run's own error is the one to report
    }
  };
  attempt([&] { write_failure_details(results, e); });
  if (tracer) {
    attempt([&] {
      std::vector<std::vector<MemorySample>> own(static_cast<std::size_t>(world_size));
      tracer->sample_now();  // the memory in use as the run failed
      own[0] = tracer->take_new();
      results.append_memory(own);
    });
  }
  attempt([&] { results.write_timings(init_s, first_step_s, total_s); });
  results.finish(e.status(), e.what(), static_cast<int>(e.code()));
}

}  // namespace

OutOfMemory host_out_of_memory() {
  return OutOfMemory("out of host memory", "host", last_failed_host_allocation_bytes(), resident_bytes());
}

ResultsOwner::ResultsOwner(const std::string& path, bool overwrite, Communicator& world, Clock::time_point start)
    : world_(world), root_(world.rank() == 0), start_(start) {
  collectively(world_, root_, [&] { file_ = std::make_unique<ResultsWriter>(path, overwrite); });
}

void ResultsOwner::write(const std::function<void(ResultsWriter&)>& write) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (file_ && !finished_) write(*file_);
}

void ResultsOwner::finish_with(const std::function<void(ResultsWriter&)>& write) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (file_ && !finished_) {
    write(*file_);
    finished_ = true;
  }
}

void ResultsOwner::flush_progress(MemoryTracer& tracer, const StepRecord* step) {
  const auto samples = gather_new_samples(world_, tracer);
  collectively(world_, root_, [&] {
    write([&](ResultsWriter& results) {
      results.append_memory(samples);
      results.write_timings(init_s_, first_step_s_, seconds_since(start_));
      if (step) results.append_step(*step);
      results.flush();
    });
  });
}

void ResultsOwner::finish_on_signal(int sig, const std::string& cause) {
  finish_with([&](ResultsWriter& results) {
    results.update_total_time(seconds_since(start_));  // the rest as flushed at the last step
    results.finish("error", "terminated by signal " + std::to_string(sig) + " (" + strsignal(sig) + "): the job was ended " +
                                (cause.empty() ? "from outside — by mpirun when another rank failed (its message is in "
                                                 "the job's output), or by the scheduler"
                                               : "after " + cause),
                   128 + sig);  // TerminationWatch's exit
  });
}

void ResultsOwner::finish_lost_rank(const std::string& what) {
  finish_with([&](ResultsWriter& results) {
    results.update_total_time(seconds_since(start_));
    results.finish("error", what, static_cast<int>(ExitCode::internal));  // rank 0 ends the job with it
  });
}

void ResultsOwner::finish_failed(const Error& e, MemoryTracer* tracer) {
  try {
    if (root_) {
      finish_with([&](ResultsWriter& results) {
        finish_failed_run(results, e, tracer, world_.size(), init_s_, first_step_s_, seconds_since(start_));
      });
    }
  } catch (const std::exception& w) {  // the run's own error stays the one reported (printed once if it is the same)
    if (std::string(w.what()) != e.what())
      std::fprintf(stderr, "qwen3-pretrain: could not finish %s: %s\n", file_->partial_path().c_str(), w.what());
  }
}

void ResultsOwner::finish_ok() {
  finish_with([](ResultsWriter& results) { results.finish("ok", "", 0); });
}

void ResultsOwner::finish_preempted(std::int64_t at_step, const std::string& message) {
  finish_with([&](ResultsWriter& results) {
    results.write_attribute("preempted_at_step", at_step);
    results.finish("preempted", message, static_cast<int>(ExitCode::preempted));
  });
}

}  // namespace qwen3::trainer
