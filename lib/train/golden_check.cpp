// Golden check against Hugging Face numbers (see golden_check.h).
#include "train/golden_check.h"

#include <cmath>
#include <set>

#include "core/error.h"
#include "io/hf_checkpoint.h"
#include "io/h5.h"
#include "ops/cpu/cross_entropy.h"
#include "model/pipeline_split.h"
#include "train/engine.h"
#include "train/pipeline_run.h"

namespace qwen3 {
namespace {

constexpr const char* kGoldenFormat = "qwen3-golden";
constexpr std::int64_t kGoldenVersion = 1;

double rel_scalar(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

h5::Handle open_golden(const std::string& path) {
  h5::Handle f = h5::open_read(path, "golden file");
  const std::string fmt = h5::has_attr(f.get(), "format") ? h5::read_attr_string(f.get(), "format") : "";
  if (fmt != kGoldenFormat)
    throw InputError("golden file '" + path + "' has format '" + fmt + "', expected '" + kGoldenFormat + "'");
  const auto version = h5::read_attr_int(f.get(), "format_version");
  if (version != kGoldenVersion)
    throw InputError("golden file '" + path + "' has format_version " + std::to_string(version) +
                     ", this build reads version " + std::to_string(kGoldenVersion));
  return f;
}

ModelConfig config_from(hid_t file, const std::string& path) {
  h5::Handle g = h5::open_group(file, "config");
  auto num = [&](const char* key) { return h5::read_attr_int(g.get(), key); };
  ModelConfig c;
  c.name = path;
  try {
    c.vocab_size = num("vocab_size");
    c.hidden_size = num("hidden_size");
    c.intermediate_size = num("intermediate_size");
    c.num_layers = num("num_hidden_layers");
    c.num_heads = num("num_attention_heads");
    // Hugging Face Qwen3Config defaults for keys a generator may leave out.
    c.num_kv_heads = h5::has_attr(g.get(), "num_key_value_heads") ? num("num_key_value_heads") : c.num_heads;
    c.head_dim = h5::has_attr(g.get(), "head_dim") ? num("head_dim") : c.hidden_size / c.num_heads;
    c.rope_theta = h5::has_attr(g.get(), "rope_theta") ? h5::read_attr_double(g.get(), "rope_theta") : 10000.0;
    c.rms_norm_eps = h5::has_attr(g.get(), "rms_norm_eps") ? h5::read_attr_double(g.get(), "rms_norm_eps") : 1e-6;
    c.tie_word_embeddings = h5::has_attr(g.get(), "tie_word_embeddings") && num("tie_word_embeddings") != 0;
  } catch (const InputError& e) {
    throw InputError("golden file '" + path + "' /config: " + e.what());
  }
  try {
    c.validate();
  } catch (const UsageError& e) {
    throw InputError("golden file '" + path + "': " + e.what());
  }
  return c;
}

// The file's inputs, [batch, seq] each, checked before any computation.
struct GoldenInputs {
  std::vector<std::int32_t> ids, labels;  // [batch, seq]
  std::vector<std::int64_t> shape;        // {batch, seq}
};

GoldenInputs read_golden_inputs(hid_t f, const std::string& path, const ModelConfig& cfg) {
  GoldenInputs in;
  std::vector<std::int64_t> labels_shape;
  in.ids = h5::read_i32(f, "inputs/input_ids", &in.shape);
  in.labels = h5::read_i32(f, "inputs/labels", &labels_shape);
  if (in.shape.size() != 2 || in.shape != labels_shape)
    throw InputError("golden file '" + path + "': inputs/input_ids and inputs/labels must both be [batch, seq]");
  for (auto t : in.ids)
    if (t < 0 || t >= cfg.vocab_size) throw InputError("golden file '" + path + "': input id " + std::to_string(t) + " out of range");
  for (auto t : in.labels)
    if (t != cpu::kIgnoreLabel && (t < 0 || t >= cfg.vocab_size))
      throw InputError("golden file '" + path + "': label " + std::to_string(t) + " out of range");
  return in;
}

// The file's /adamw group: the learning rate and AdamW's settings (2-D weights decay only, as Qwen3's recipe).
struct GoldenOptimizer {
  double lr = 0;
  AdamWConfig adamw;
};

GoldenOptimizer read_golden_optimizer(hid_t f, const std::string& path) {
  h5::Handle adamw_group = h5::open_group(f, "adamw");
  const hid_t ag = adamw_group.get();
  if (h5::has_attr(ag, "decay_1d_params") && h5::read_attr_int(ag, "decay_1d_params") != 0)
    throw InputError("golden file '" + path + "': decay_1d_params = 1 is not the Qwen3 recipe; this checker decays 2-D weights only");
  GoldenOptimizer o;
  o.lr = h5::read_attr_double(ag, "lr");
  o.adamw.beta1 = h5::read_attr_double(ag, "beta1");
  o.adamw.beta2 = h5::read_attr_double(ag, "beta2");
  o.adamw.eps = h5::read_attr_double(ag, "eps");
  o.adamw.weight_decay = h5::read_attr_double(ag, "weight_decay");
  return o;
}

// This rank's place in the check: its data-parallel replica's share of the batch, its pipeline stage, the cp size.
struct GoldenShare {
  int dp = 1, dp_rank = 0, pp = 1, stage = 0, cp = 1;
  std::int64_t local_batch = 0, seq = 0;  // this replica's sequences: [local_batch, seq]
};

GoldenShare golden_share(const GoldenParallel& par, const std::string& path, const std::vector<std::int64_t>& shape) {
  GoldenShare s;
  s.dp = par.dp ? par.dp->size() : 1, s.dp_rank = par.dp ? par.dp->rank() : 0;
  const std::int64_t B = shape[0];
  s.seq = shape[1];
  if (B % s.dp != 0)
    throw UsageError("golden file '" + path + "' has " + std::to_string(B) + " sequences: they do not split over " +
                     std::to_string(s.dp) + " data-parallel replicas");
  s.local_batch = B / s.dp;
  s.pp = par.pp ? par.pp->size() : 1, s.stage = par.pp ? par.pp->rank() : 0;
  s.cp = par.cp ? par.cp->size() : 1;
  return s;
}

// The engine of the check: one micro-batch of this replica's sequences, the distributed optimizer as in training.
std::unique_ptr<Engine> make_golden_engine(const std::string& device, const ModelConfig& cfg, const GoldenParallel& par,
                                           const GoldenShare& share, int local_rank) {
  EngineOptions eo;
  eo.max_batch = share.local_batch;
  eo.max_seq = share.seq;
  eo.tp_comm = par.tp;
  eo.pp_comm = par.pp;
  eo.dp_comm = par.dp;
  eo.cp_comm = par.cp;
  if (share.cp > 1) eo.shard_comm = par.dp_cp;  // the optimizer sharded over data × context-parallel ranks, as in training
  eo.shard_optimizer = true;  // data-parallel checks run the distributed optimizer
  eo.micro_batches = 1;
  eo.local_rank = local_rank;
  eo.recompute.offload_optimizer = par.offload_optimizer;
  eo.cudnn_attention = par.cudnn_attention;
  eo.shared_gpu_staging = par.shared_gpu_staging;
  eo.fp8 = par.fp8;
  eo.fp8_delayed = par.fp8 && par.fp8_delayed;
  eo.recompute.validate();
  return make_engine(device, cfg, eo);
}

// The starting weights: the file's /weights, or a Hugging Face folder's of the same model; either way the file
// holds no weight that is not a parameter of this configuration.
void load_golden_weights(Engine& engine, hid_t f, const std::string& path, const ModelConfig& cfg,
                         const std::string& init_from_hf) {
  if (!init_from_hf.empty()) {  // the same model, its weights from a Hugging Face folder
    const HfCheckpoint hf(init_from_hf);
    const ModelConfig& h = hf.config();
    if (h.vocab_size != cfg.vocab_size || h.hidden_size != cfg.hidden_size || h.intermediate_size != cfg.intermediate_size ||
        h.num_layers != cfg.num_layers || h.num_heads != cfg.num_heads || h.num_kv_heads != cfg.num_kv_heads ||
        h.head_dim != cfg.head_dim || h.tie_word_embeddings != cfg.tie_word_embeddings || h.rope_theta != cfg.rope_theta ||
        h.rms_norm_eps != cfg.rms_norm_eps)
      throw InputError("--init-from-hf '" + init_from_hf + "': its config.json describes another model than '" + path + "'");
    hf.check_against(engine.params());
    for (const auto& p : engine.params().entries()) engine.set_weights(p.name, hf.read(p.name));
  }
  std::set<std::string> expected;
  for (const auto& p : engine.params().entries()) {
    expected.insert(p.name);
    if (!init_from_hf.empty()) continue;
    std::vector<std::int64_t> shape;
    auto w = h5::read_f32(f, "weights/" + p.name, &shape);
    if (shape != p.shape) throw InputError("golden file '" + path + "': weights/" + p.name + " has the wrong shape");
    engine.set_weights(p.name, w);
  }
  for (const auto& name : h5::list(f, "weights"))
    if (!expected.count(name))
      throw InputError("golden file '" + path + "': weights/" + name + " is not a parameter of this configuration" +
                       (cfg.tie_word_embeddings ? " (the config says tie_word_embeddings = true)" : ""));
}

// Forward and backward of this replica's micro-batch (through the pipeline's stages), gradients summed over the
// replicas; the loss and (when asked) the logits of the whole batch on every rank.
cpu::LossSum golden_step(Engine& engine, const GoldenParallel& par, const GoldenShare& share, const MicroBatch& mb,
                         double grad_scale, std::int64_t vocab_size, std::vector<float>* logits) {
  cpu::LossSum l{0.0, 0};
  std::vector<float> mine;
  if (share.pp > 1) {
    PipelineTimes times;
    l = run_pipeline_step(engine, share.stage, share.pp, 1, [&](int) { return mb; }, grad_scale, times, logits ? &mine : nullptr);
    double pair[2] = {l.sum, static_cast<double>(l.count)};
    par.pp->all_reduce_sum(pair, 2);  // the last stage's loss
    l = {pair[0], static_cast<std::int64_t>(pair[1])};
    if (logits) {
      mine.resize(static_cast<std::size_t>(share.local_batch * share.seq * vocab_size), 0.0f);  // zeros but on the last stage
      par.pp->all_reduce_sum(mine.data(), mine.size());
    }
  } else {
    l = engine.forward_backward(mb, grad_scale, logits ? &mine : nullptr);
  }
  // (the optimizer's reduce-scatter spans the context-parallel ranks too; delayed scaling's history ends there, so
  // that its later training steps scale from the step before, as a run's do)
  if (par.dp && (share.dp > 1 || share.cp > 1 || par.fp8_delayed)) {
    engine.reduce_gradients(*par.dp);
    double pair[2] = {l.sum, static_cast<double>(l.count)};
    par.dp->all_reduce_sum(pair, 2);
    l = {pair[0], static_cast<std::int64_t>(pair[1])};
    if (logits) {
      logits->resize(mine.size() * static_cast<std::size_t>(share.dp));
      par.dp->all_gather(mine.data(), logits->data(), mine.size());  // replicas hold consecutive sequences
    }
  } else if (logits) {
    *logits = std::move(mine);
  }
  return l;
}

}  // namespace

bool GoldenReport::pass() const {
  for (auto& r : rows)
    if (!r.pass()) return false;
  return !rows.empty();
}

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, ref = 0, out = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    diff += d * d;
    ref += static_cast<double>(b[i]) * b[i];
    out += static_cast<double>(a[i]) * a[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(out);
}

ModelConfig read_golden_config(const std::string& path) {
  h5::Handle f = open_golden(path);
  return config_from(f.get(), path);
}

GoldenReport run_golden_check(const std::string& path, const std::string& device, const GoldenTolerance& tol,
                              const GoldenParallel& par, int local_rank, const std::string& init_from_hf) {
  h5::Handle f = open_golden(path);
  GoldenReport report;
  report.config = config_from(f.get(), path);
  report.generator = h5::has_attr(f.get(), "generator") ? h5::read_attr_string(f.get(), "generator") : "";
  const ModelConfig& cfg = report.config;

  // Inputs, and a schema check of every tensor before any computation.
  const GoldenInputs in = read_golden_inputs(f.get(), path, cfg);
  const GoldenOptimizer opt = read_golden_optimizer(f.get(), path);
  // Data parallelism: this replica's sequences of the batch.
  const GoldenShare share = golden_share(par, path, in.shape);
  auto engine = make_golden_engine(device, cfg, par, share, local_rank);
  load_golden_weights(*engine, f.get(), path, cfg, init_from_hf);

  const std::int64_t Bl = share.local_batch, S = share.seq;
  const MicroBatch mb{in.ids.data() + share.dp_rank * Bl * S, in.labels.data() + share.dp_rank * Bl * S, Bl, S};
  std::int64_t counted = 0;
  for (auto t : in.labels) counted += (t != cpu::kIgnoreLabel);
  if (counted == 0) throw InputError("golden file '" + path + "': every label is ignored");
  const double grad_scale = 1.0 / static_cast<double>(counted);  // mean cross-entropy, as F.cross_entropy
  const auto step = [&](std::vector<float>* logits) {
    return golden_step(*engine, par, share, mb, grad_scale, cfg.vocab_size, logits);
  };

  // Forward, loss, backward.
  std::vector<float> logits;
  engine->zero_grad();
  auto loss = step(&logits);
  report.rows.push_back({"logits", relative_error(logits, h5::read_f32(f.get(), "outputs/logits")), tol.forward});
  const double loss0 = loss.sum / static_cast<double>(loss.count);
  report.rows.push_back({"loss", rel_scalar(loss0, h5::read_f64(f.get(), "outputs/loss").at(0)), tol.forward});
  for (const auto& p : engine->params().entries())
    report.rows.push_back({"grad " + p.name, relative_error(engine->gradient(p.name), h5::read_f32(f.get(), "grads/" + p.name)), tol.gradients});

  // One AdamW step on those gradients.
  engine->optimizer_step(opt.lr, opt.adamw, 1.0);
  for (const auto& p : engine->params().entries())
    report.rows.push_back({"after_step " + p.name,
                           relative_error(engine->weights(p.name), h5::read_f32(f.get(), "after_step/" + p.name)), tol.after_step});

  // The training losses: losses[0] is the loss above, then one more step per loss, constant lr, no clipping.
  const auto ref_losses = h5::read_f64(f.get(), "train/losses");
  if (ref_losses.empty()) throw InputError("golden file '" + path + "': train/losses is empty");
  std::vector<double> losses = {loss0};
  for (std::size_t i = 1; i < ref_losses.size(); ++i) {
    engine->zero_grad();
    auto l = step(nullptr);
    losses.push_back(l.sum / static_cast<double>(l.count));
    engine->optimizer_step(opt.lr, opt.adamw, 1.0);
  }
  for (std::size_t i = 0; i < ref_losses.size(); ++i)
    report.rows.push_back({"train loss " + std::to_string(i), rel_scalar(losses[i], ref_losses[i]), tol.losses});
  return report;
}

}  // namespace qwen3
