// Training checkpoints (see checkpoint.h).
#include "train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <vector>

#include "core/error.h"
#include "dist/collective_errors.h"
#include "io/h5.h"

namespace fs = std::filesystem;

namespace qwen3 {
namespace {

bool all_finite(const std::vector<float>& values) {
  return std::all_of(values.begin(), values.end(), [](float x) { return std::isfinite(x); });
}

std::string step_name(std::int64_t step) {
  char s[32];
  std::snprintf(s, sizeof s, "step-%08lld", static_cast<long long>(step));
  return s;
}

std::string shard_name(int rank, int world) {
  char s[48];
  std::snprintf(s, sizeof s, "shard-%05d-of-%05d.h5", rank, world);
  return s;
}

// Tensor i of the table → the rank that writes it: each in turn to the rank with the fewest bytes so far.
std::vector<int> assign_writers(const ParamTable& table, int world) {
  std::vector<std::int64_t> bytes(static_cast<std::size_t>(world), 0);
  std::vector<int> owner;
  for (const auto& p : table.entries()) {
    const auto r = static_cast<int>(std::min_element(bytes.begin(), bytes.end()) - bytes.begin());
    owner.push_back(r);
    bytes[static_cast<std::size_t>(r)] += p.numel;
  }
  return owner;
}

// The model's fields as manifest attributes (model.<field>), and the comparison on load.
void write_model(hid_t obj, const ModelConfig& c) {
  h5::write_attr(obj, "model.vocab_size", c.vocab_size);
  h5::write_attr(obj, "model.hidden_size", c.hidden_size);
  h5::write_attr(obj, "model.intermediate_size", c.intermediate_size);
  h5::write_attr(obj, "model.num_layers", c.num_layers);
  h5::write_attr(obj, "model.num_heads", c.num_heads);
  h5::write_attr(obj, "model.num_kv_heads", c.num_kv_heads);
  h5::write_attr(obj, "model.head_dim", c.head_dim);
  h5::write_attr(obj, "model.rope_theta", c.rope_theta);
  h5::write_attr(obj, "model.rms_norm_eps", c.rms_norm_eps);
  h5::write_attr(obj, "model.tie_word_embeddings", static_cast<std::int64_t>(c.tie_word_embeddings));
}

void check_model(hid_t obj, const ModelConfig& c, const std::string& dir) {
  auto same = [&](const char* field, double saved, double now) {
    if (saved != now)
      throw InputError("checkpoint '" + dir + "' is of another model: " + field + " " + std::to_string(saved) +
                       ", this run's " + std::to_string(now));
  };
  same("vocab_size", h5::read_attr_int(obj, "model.vocab_size"), c.vocab_size);
  same("hidden_size", h5::read_attr_int(obj, "model.hidden_size"), c.hidden_size);
  same("intermediate_size", h5::read_attr_int(obj, "model.intermediate_size"), c.intermediate_size);
  same("num_layers", h5::read_attr_int(obj, "model.num_layers"), c.num_layers);
  same("num_heads", h5::read_attr_int(obj, "model.num_heads"), c.num_heads);
  same("num_kv_heads", h5::read_attr_int(obj, "model.num_kv_heads"), c.num_kv_heads);
  same("head_dim", h5::read_attr_int(obj, "model.head_dim"), c.head_dim);
  same("rope_theta", h5::read_attr_double(obj, "model.rope_theta"), c.rope_theta);
  same("rms_norm_eps", h5::read_attr_double(obj, "model.rms_norm_eps"), c.rms_norm_eps);
  same("tie_word_embeddings", h5::read_attr_int(obj, "model.tie_word_embeddings"), c.tie_word_embeddings ? 1 : 0);
}

// An atomic text file: written aside, renamed over.
void write_text(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << text << "\n";
    out.close();  // checked after closing: a failed flush counts
    if (!out) throw OutputError("cannot write '" + tmp.string() + "'");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw OutputError("cannot publish '" + path.string() + "': " + ec.message());
}

// Step 1 (rank 0): an empty root/step-N.partial folder, a stale one from an interrupted save removed.
void create_partial_folder(Communicator& world, const fs::path& partial) {
  collectively(world, world.rank() == 0, [&] {
    std::error_code ec;
    fs::remove_all(partial, ec);
    fs::create_directories(partial, ec);
    if (ec) throw OutputError("--save: cannot create '" + partial.string() + "': " + ec.message());
  });
}

// Step 2 (every rank): this rank's shard file. Every rank asks for every tensor (the engine's reads are collective);
// each writes the ones assigned to it. A write error is kept until the end, so that the collective reads stay
// matched, then reaches every rank.
void write_own_shard(const fs::path& partial, Engine& engine, Communicator& world, const std::vector<int>& writer) {
  const int rank = world.rank(), W = world.size();
  const ParamTable& table = engine.params();
  std::string failed;
  ExitCode failed_code = ExitCode::output;
  h5::Handle file;
  try {
    file = h5::create((partial / shard_name(rank, W)).string());
  } catch (const Error& e) {
    failed = e.what();
  }
  for (std::size_t i = 0; i < table.entries().size(); ++i) {
    const auto& p = table.entries()[i];
    const auto w = engine.weights(p.name), m = engine.moment(p.name, 0), v = engine.moment(p.name, 1);
    if (writer[i] != rank || !failed.empty()) continue;
    // Never a checkpoint of a diverged run: a non-finite value would become the newest state to resume from.
    using Named = std::pair<const char*, const std::vector<float>*>;
    for (const auto& [what, values] : {Named{"weights", &w}, Named{"first moment", &m}, Named{"second moment", &v}})
      if (failed.empty() && !all_finite(*values)) {
        failed = std::string("the ") + what + " of " + p.name + " hold a non-finite value: not saved (the run diverged)";
        failed_code = ExitCode::diverged;
      }
    if (!failed.empty()) continue;
    try {
      h5::write_f32(file.get(), "weights/" + p.name, w, p.shape);
      h5::write_f32(file.get(), "m/" + p.name, m, p.shape);
      h5::write_f32(file.get(), "v/" + p.name, v, p.shape);
    } catch (const Error& e) {
      failed = e.what();
    }
  }
  if (failed.empty()) {
    try {
      h5::flush(file);  // checked: a full disk shows here, before the manifest marks the folder complete
    } catch (const Error& e) {
      failed = e.what();
    }
  }
  file.reset();
  collectively(world, true, [&] {
    if (!failed.empty()) throw Error(failed_code, "--save: " + failed);
  });
}

// Step 3 (rank 0): the manifest — format, step, run facts, model, and which shard holds each tensor.
void write_manifest(const fs::path& partial, std::int64_t step, Engine& engine, const CheckpointRun& run, int W,
                    const std::vector<int>& writer) {
  const ParamTable& table = engine.params();
  h5::Handle f = h5::create((partial / "manifest.h5").string());
  h5::write_attr(f.get(), "format", std::string(kCheckpointFormat));
  h5::write_attr(f.get(), "version", kCheckpointVersion);
  h5::write_attr(f.get(), "step", step);
  h5::write_attr(f.get(), "optimizer_steps", engine.optimizer_steps());
  h5::write_attr(f.get(), "seed", static_cast<std::int64_t>(run.seed));
  h5::write_attr(f.get(), "global_batch", run.global_batch);
  h5::write_attr(f.get(), "seq_len", run.seq_len);
  h5::write_attr(f.get(), "num_documents", run.num_documents);
  h5::write_attr(f.get(), "lr", run.lr);
  h5::write_attr(f.get(), "min_lr", run.min_lr);
  h5::write_attr(f.get(), "warmup_steps", run.warmup_steps);
  h5::write_attr(f.get(), "steps", run.steps);
  h5::write_attr(f.get(), "layout", run.layout);
  h5::write_attr(f.get(), "world_size", static_cast<std::int64_t>(W));
  write_model(f.get(), run.model);
  std::vector<std::string> names;
  std::vector<std::int64_t> shards;
  for (std::size_t i = 0; i < table.entries().size(); ++i) {
    names.push_back(table.entries()[i].name);
    shards.push_back(writer[i]);
  }
  std::string joined;
  for (const auto& n : names) joined += n + "\n";
  h5::write_string(f.get(), "tensor_names", joined);
  h5::write_i64(f.get(), "tensor_shard", shards, {static_cast<std::int64_t>(shards.size())});
  h5::flush(f);
}

// Step 4 (rank 0): step-N.partial renamed to step-N, and root/latest pointed at it.
void publish_checkpoint(const std::string& root, std::int64_t step, const fs::path& partial, const fs::path& final_dir) {
  std::error_code ec;
  fs::remove_all(final_dir, ec);
  fs::rename(partial, final_dir, ec);
  if (ec) throw OutputError("--save: cannot publish '" + final_dir.string() + "': " + ec.message());
  write_text(fs::path(root) / "latest", step_name(step));
}

// Step 5 (rank 0), retention: this checkpoint and the newest keep − 1 before it stay; later steps are left alone.
void remove_older_checkpoints(const std::string& root, std::int64_t step, int keep) {
  std::error_code ec;
  std::vector<std::string> older;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.rfind("step-", 0) == 0 && n.find('.') == std::string::npos && n < step_name(step)) older.push_back(n);
  }
  if (ec) throw OutputError("--save: cannot list '" + root + "': " + ec.message());
  std::sort(older.begin(), older.end());
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep) - 1 < older.size(); ++i) fs::remove_all(fs::path(root) / older[i], ec);
}

}  // namespace

void save_checkpoint(const std::string& root, std::int64_t step, Engine& engine, Communicator& world,
                     const CheckpointRun& run, int keep) {
  const int rank = world.rank(), W = world.size();
  const fs::path final_dir = fs::path(root) / step_name(step), partial = final_dir.string() + ".partial";
  create_partial_folder(world, partial);
  const std::vector<int> writer = assign_writers(engine.params(), W);
  write_own_shard(partial, engine, world, writer);
  // The manifest last: a folder with it and every shard is a complete checkpoint.
  collectively(world, rank == 0, [&] {
    write_manifest(partial, step, engine, run, W, writer);
    publish_checkpoint(root, step, partial, final_dir);
    if (keep > 0) remove_older_checkpoints(root, step, keep);
  });
}

std::string resolve_checkpoint(const std::string& root) {
  if (fs::exists(fs::path(root) / "manifest.h5")) return root;
  const fs::path latest = fs::path(root) / "latest";
  std::ifstream in(latest);
  std::string name;
  if (!in || !(in >> name))
    throw InputError("--resume: '" + root + "' holds no checkpoint (neither manifest.h5 nor a 'latest' file)");
  if (name.find('/') != std::string::npos || name.rfind("step-", 0) != 0)
    throw InputError("--resume: '" + latest.string() + "' names '" + name + "', not a step-N folder");
  const fs::path dir = fs::path(root) / name;
  if (!fs::exists(dir / "manifest.h5"))
    throw InputError("--resume: '" + dir.string() + "' (named by " + latest.string() + ") is not a complete checkpoint");
  return dir.string();
}

std::int64_t load_checkpoint(const std::string& dir, Engine& engine, Communicator& world, const CheckpointRun& run,
                             std::string* schedule_note) {
  std::int64_t step = 0;
  collectively(world, true, [&] {
    h5::Handle m = h5::open_read((fs::path(dir) / "manifest.h5").string(), "checkpoint manifest");
    const std::string format = h5::read_attr_string(m.get(), "format");
    if (format != kCheckpointFormat) throw InputError("'" + dir + "': format '" + format + "' is not " + kCheckpointFormat);
    const std::int64_t version = h5::read_attr_int(m.get(), "version");
    if (version != kCheckpointVersion)
      throw InputError("'" + dir + "': checkpoint version " + std::to_string(version) + ", this build reads version " +
                       std::to_string(kCheckpointVersion));
    check_model(m.get(), run.model, dir);
    auto same = [&](const char* what, std::int64_t saved, std::int64_t now) {
      if (saved != now)
        throw InputError("checkpoint '" + dir + "' was saved with " + what + " " + std::to_string(saved) + ", this run has " +
                         std::to_string(now) + ": the documents of later steps would not be the ones the run would have read");
    };
    same("--seed", h5::read_attr_int(m.get(), "seed"), static_cast<std::int64_t>(run.seed));
    same("--global-batch", h5::read_attr_int(m.get(), "global_batch"), run.global_batch);
    same("--seq-len", h5::read_attr_int(m.get(), "seq_len"), run.seq_len);
    const std::int64_t docs = h5::read_attr_int(m.get(), "num_documents");
    if (docs != run.num_documents)
      throw InputError("checkpoint '" + dir + "' was saved with a dataset bucket of " + std::to_string(docs) +
                       " documents, this run's has " + std::to_string(run.num_documents) +
                       ": the documents of later steps would not be the ones the run would have read");
    step = h5::read_attr_int(m.get(), "step");
    const double lr = h5::read_attr_double(m.get(), "lr"), min_lr = h5::read_attr_double(m.get(), "min_lr");
    const std::int64_t warmup = h5::read_attr_int(m.get(), "warmup_steps"), steps = h5::read_attr_int(m.get(), "steps");
    if (schedule_note && (lr != run.lr || min_lr != run.min_lr || warmup != run.warmup_steps || steps != run.steps)) {
      char s[320];
      std::snprintf(s, sizeof s, "the checkpoint's learning-rate schedule was lr %g, min-lr %g, warmup %lld of %lld steps; "
                    "this run continues with lr %g, min-lr %g, warmup %lld of %lld steps", lr, min_lr,
                    static_cast<long long>(warmup), static_cast<long long>(steps), run.lr, run.min_lr,
                    static_cast<long long>(run.warmup_steps), static_cast<long long>(run.steps));
      *schedule_note = s;
    }
    const std::int64_t world_saved = h5::read_attr_int(m.get(), "world_size");
    const auto shard_of = h5::read_f64(m.get(), "tensor_shard");
    std::map<std::string, int> where;  // tensor → the rank whose shard file holds it
    const auto& entries = engine.params().entries();
    std::vector<std::string> saved_names;
    {
      const std::string joined = h5::read_string(m.get(), "tensor_names");
      std::size_t a = 0;
      for (std::size_t b; (b = joined.find('\n', a)) != std::string::npos; a = b + 1) saved_names.push_back(joined.substr(a, b - a));
    }
    if (saved_names.size() != shard_of.size()) throw InputError("'" + dir + "': manifest lists differ in length");
    for (std::size_t i = 0; i < saved_names.size(); ++i) where[saved_names[i]] = static_cast<int>(shard_of[i]);
    for (const auto& [name, shard] : where)
      if (!engine.params().contains(name)) throw InputError("'" + dir + "': tensor '" + name + "' is not a parameter of this model");
    std::map<int, std::shared_ptr<h5::Handle>> files;
    for (const auto& p : entries) {
      const auto it = where.find(p.name);
      if (it == where.end()) throw InputError("'" + dir + "': tensor '" + p.name + "' is missing");
      auto& f = files[it->second];
      if (!f) f = std::make_shared<h5::Handle>(h5::open_read((fs::path(dir) / shard_name(it->second, static_cast<int>(world_saved))).string(), "checkpoint shard"));
      std::vector<std::int64_t> shape;
      const auto w = h5::read_f32(f->get(), "weights/" + p.name, &shape);
      if (shape != p.shape) throw InputError("'" + dir + "': tensor '" + p.name + "' has the wrong shape");
      engine.set_weights(p.name, w);
      engine.set_moment(p.name, 0, h5::read_f32(f->get(), "m/" + p.name));
      engine.set_moment(p.name, 1, h5::read_f32(f->get(), "v/" + p.name));
    }
    engine.set_optimizer_steps(h5::read_attr_int(m.get(), "optimizer_steps"));
  });
  return step;
}

}  // namespace qwen3
