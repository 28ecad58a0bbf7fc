// Hugging Face checkpoints in and out. The folders in tests/data/hf were written by transformers itself
// (tools/golden/hf_save_golden.py) from the golden files' weights: fp32 in one model.safetensors, and bf16 split into
// shards with an index. Our reader must return exactly those weights; the golden check must pass from them; an
// export must read back exactly (and the same from any layout); bad folders and files get one clear message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cli_runner.h"
#include "core/error.h"
#include "config/model_config.h"
#include "io/dataset.h"
#include "io/h5.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "train/engine.h"
#include "train/golden_check.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {

std::string hf_dir(const std::string& name) { return test::test_data_dir() + "/hf/" + name; }
std::string golden(const std::string& name) { return test::test_data_dir() + "/" + name; }

float to_bf16(float f) {  // round to nearest even, as torch's .to(torch.bfloat16)
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

TEST(HfCheckpoint, ReadsWhatTransformersWrote) {
  for (const auto& [model, file] : {std::pair<std::string, std::string>{"tiny", "qwen3-tiny.h5"}, {"untied", "qwen3-small-untied.h5"}}) {
    h5::Handle g = h5::open_read(golden(file), "golden");
    const auto names = h5::list(g.get(), "weights");
    const HfCheckpoint fp32(hf_dir(model + "-fp32")), bf16(hf_dir(model + "-bf16-sharded"));
    EXPECT_EQ(fp32.config().num_layers, read_golden_config(golden(file)).num_layers) << model;
    EXPECT_EQ(fp32.config().tie_word_embeddings, read_golden_config(golden(file)).tie_word_embeddings) << model;
    EXPECT_EQ(fp32.config().rope_theta, read_golden_config(golden(file)).rope_theta) << model;  // "rope_parameters"
    EXPECT_EQ(fp32.config().rms_norm_eps, read_golden_config(golden(file)).rms_norm_eps) << model;
    const auto listed = fp32.names();
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), std::set<std::string>(listed.begin(), listed.end())) << model;
    EXPECT_EQ(fp32.names(), bf16.names()) << model;
    std::set<std::string> shards;
    for (const auto& name : names) {
      std::vector<std::int64_t> shape;
      const auto ref = h5::read_f32(g.get(), "weights/" + name, &shape);
      EXPECT_EQ(fp32.info(name).dtype, "F32");
      EXPECT_EQ(fp32.info(name).shape, shape) << name;
      EXPECT_EQ(fp32.read(name), ref) << model << " " << name;
      EXPECT_EQ(bf16.info(name).dtype, "BF16");
      std::vector<float> rounded(ref);
      for (auto& v : rounded) v = to_bf16(v);
      EXPECT_EQ(bf16.read(name), rounded) << model << " " << name;
    }
    for (const auto& entry : fs::directory_iterator(hf_dir(model + "-bf16-sharded")))
      if (entry.path().extension() == ".safetensors") shards.insert(entry.path().filename().string());
    EXPECT_GT(shards.size(), 1u) << model;
  }
}

TEST(HfCheckpointMpirun, GoldenCheckPassesFromHuggingFacesOwnCheckpoint) {
  // The golden files' weights, as transformers saved them, give Hugging Face's loss, logits, gradients, AdamW step
  // and training losses: on one rank and at tp 2.
  for (const auto& [model, file] : {std::pair<std::string, std::string>{"tiny", "qwen3-tiny.h5"}, {"untied", "qwen3-small-untied.h5"}}) {
    const auto r = test::run_program("qwen3-golden-check", "--golden '" + golden(file) + "' --init-from-hf '" +
                                                               hf_dir(model + "-fp32") + "'");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("weights: from the Hugging Face checkpoint"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("0 out of tolerance: PASS"), std::string::npos) << r.output;
  }
  const auto tp = test::run_command(test::mpirun(2) + "'" + test::bin_dir() + "/qwen3-golden-check' --tp 2 --golden '" +
                                    golden("qwen3-tiny.h5") + "' --init-from-hf '" + hf_dir("tiny-fp32") + "'");
  EXPECT_EQ(tp.exit_code, 0) << tp.output;
  EXPECT_NE(tp.output.find("0 out of tolerance: PASS"), std::string::npos) << tp.output;
  // Another model's folder is refused, naming both.
  const auto other = test::run_program("qwen3-golden-check", "--golden '" + golden("qwen3-tiny.h5") + "' --init-from-hf '" +
                                                                 hf_dir("untied-fp32") + "'");
  EXPECT_EQ(other.exit_code, 3) << other.output;
  EXPECT_NE(other.output.find("describes another model"), std::string::npos) << other.output;
}

TEST(HfCheckpoint, ExportReadsBackExactlyInEveryDtypeAndShardLayout) {
  // Library level: the tiny model's weights from HF's folder into the CPU engine and out again — F32 in several
  // shards with an index (a small shard size), and BF16 — read back by the same reader.
  const fs::path dir = test::fresh_dir("qwen3_hf_export");
  const HfCheckpoint src(hf_dir("tiny-fp32"));
  EngineOptions o;
  o.max_batch = 1;
  o.max_seq = 16;
  auto engine = make_engine("cpu", src.config(), o);
  for (const auto& p : engine->params().entries()) engine->set_weights(p.name, src.read(p.name));
  for (const auto& [dtype, shard] : {std::pair<std::string, std::int64_t>{"F32", 20000}, {"BF16", 5000000000}}) {
    const std::string out = (dir / dtype).string();
    HfExportOptions eo;
    eo.dtype = dtype;
    eo.max_shard_bytes = shard;
    write_hf_checkpoint(out, src.config(), engine->params(), [&](const std::string& n) { return engine->weights(n); },
                        true, eo);
    EXPECT_FALSE(fs::exists(out + ".partial"));
    EXPECT_EQ(fs::exists(fs::path(out) / "model.safetensors.index.json"), dtype == "F32") << dtype;
    const HfCheckpoint back(out);
    const ModelConfig& a = back.config();
    const ModelConfig& b = src.config();
    EXPECT_EQ(a.vocab_size, b.vocab_size);
    EXPECT_EQ(a.hidden_size, b.hidden_size);
    EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.rope_theta, b.rope_theta);
    EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
    EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
    EXPECT_EQ(back.names(), src.names());
    for (const auto& name : src.names()) {
      auto want = src.read(name);
      if (dtype == "BF16")
        for (auto& v : want) v = to_bf16(v);
      EXPECT_EQ(back.read(name), want) << dtype << " " << name;
    }
    // A trailing slash names the same folder.
    write_hf_checkpoint(out + "-slash/", src.config(), engine->params(), [&](const std::string& n) { return engine->weights(n); },
                        true, eo);
    EXPECT_EQ(HfCheckpoint(out + "-slash").names(), src.names());
    // An existing folder is kept unless overwriting.
    EXPECT_THROW(write_hf_checkpoint(out, src.config(), engine->params(),
                                     [&](const std::string& n) { return engine->weights(n); }, true, eo),
                 OutputError);
  }
}

TEST(HfCheckpointMpirun, TrainFromHuggingFaceAndExportTheSameFromAnyLayout) {
  // qwen3-pretrain --init-from-hf, two steps, --export-hf: one rank and tp 2 × pp 2 export the same weights (the CPU
  // layouts agree to 1e-5 relative), and the export starts a run again.
  const fs::path dir = test::fresh_dir("qwen3_hf_train");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {32}, 16, 9, false);
  auto train = [&](int np, const std::string& args, const std::string& from, const std::string& tag) {
    const auto r = test::run_command(test::mpirun(np) + "'" + test::bin_dir() + "/qwen3-pretrain' --init-from-hf '" + from +
                                     "' --data '" + data + "' --seq-len 32 --global-batch 4 --steps 2 --lr 1e-2 " + args +
                                     " --export-hf '" + (dir / tag).string() + "' --export-dtype fp32 --out '" +
                                     (dir / (tag + ".h5")).string() + "'");
    EXPECT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
    EXPECT_NE(r.output.find("exported the weights to"), std::string::npos) << r.output;
    return (dir / tag).string();
  };
  const HfCheckpoint one(train(1, "", hf_dir("tiny-fp32"), "one")), four(train(4, "--tp 2 --pp 2", hf_dir("tiny-fp32"), "four"));
  const HfCheckpoint start(hf_dir("tiny-fp32"));
  ASSERT_EQ(one.names(), four.names());
  for (const auto& name : one.names()) {
    const auto a = one.read(name), b = four.read(name), s = start.read(name);
    EXPECT_LT(relative_error(b, a), 1e-5) << name;
    EXPECT_GT(relative_error(a, s), 1e-4) << name << ": two steps at lr 1e-2 must move every tensor";
  }
  h5::Handle f = h5::open_read((dir / "one.h5").string(), "results");
  EXPECT_EQ(h5::read_attr_string(f.get(), "status"), "ok");
  train(1, "", (dir / "one").string(), "again");
  // An existing export folder is refused before training, not after, as an output (exit 4, docs/exit-codes.md).
  const auto again = test::run_program("qwen3-pretrain", "--init-from-hf '" + hf_dir("tiny-fp32") + "' --data '" + data +
                                                             "' --seq-len 32 --steps 1 --export-hf '" + (dir / "one").string() +
                                                             "' --out '" + (dir / "x.h5").string() + "'");
  EXPECT_EQ(again.exit_code, 4) << again.output;
  EXPECT_NE(again.output.find("exists (pass --overwrite to replace it)"), std::string::npos) << again.output;
}

TEST(HfCheckpoint, BadFoldersAndFilesEndWithOneClearMessage) {
  const fs::path dir = test::fresh_dir("qwen3_hf_bad");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {32}, 8, 4, false);
  auto copy = [&](const std::string& name) {
    const fs::path d = dir / name;
    fs::copy(hf_dir("tiny-fp32"), d, fs::copy_options::recursive);
    return d;
  };
  auto edit_config = [&](const fs::path& d, const std::string& from, const std::string& to) {
    std::ifstream in(d / "config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(d / "config.json") << text;
  };
  auto run = [&](const fs::path& d, const std::string& extra = "") {
    return test::run_program("qwen3-pretrain", "--init-from-hf '" + d.string() + "' --data '" + data +
                                                   "' --seq-len 32 --global-batch 2 --steps 1 " + extra + " --out '" +
                                                   (dir / "run.h5").string() + "' --overwrite");
  };
  struct Case {
    std::string what, expect;
    int code;
  };
  std::vector<std::pair<fs::path, Case>> cases;
  cases.push_back({dir / "absent", {"no such folder", "is not a folder", 3}});
  // config.json edited: (folder, text, replacement, what, expected message).
  for (const auto& [name, from, to, what, expect] :
       {std::tuple<std::string, std::string, std::string, std::string, std::string>{
            "llama", "\"model_type\": \"qwen3\"", "\"model_type\": \"llama\"", "another architecture", "model_type 'llama' is not qwen3"},
        {"typed", "\"model_type\": \"qwen3\"", "\"model_type\": 3", "a key of the wrong type", "config.json': [json.exception.type_error"},
        {"yarn", "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"", "scaled RoPE", "asks for RoPE type 'yarn'"},
        {"wider", "\"intermediate_size\": 192", "\"intermediate_size\": 256", "shapes that disagree with config.json",
         "has shape [192, 64], the model needs [256, 64]"}}) {
    const auto d = copy(name);
    edit_config(d, from, to);
    cases.push_back({d, {what, expect, 3}});
  }
  {
    const auto d = copy("truncated");
    fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") - 100);
    cases.push_back({d, {"a truncated file", "outside the data section", 3}});
  }
  {
    const auto d = copy("header");
    std::fstream f(d / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    const char huge[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    f.write(huge, 8);
    cases.push_back({d, {"a header length beyond the file", "header length", 3}});
  }
  {
    const auto d = copy("missing");
    const SafetensorsFile full((d / "model.safetensors").string());
    std::vector<SafetensorsWriter::Entry> entries;
    for (const auto& [name, info] : full.tensors())
      if (name != "model.norm.weight") entries.push_back({name, info.shape});
    std::vector<std::vector<float>> values;
    for (const auto& e : entries) values.push_back(full.read(e.name));
    SafetensorsWriter w((d / "model.safetensors.new").string(), entries, "F32");
    for (const auto& v : values) w.write(v);
    w.close();
    fs::rename(d / "model.safetensors.new", d / "model.safetensors");
    cases.push_back({d, {"a tensor missing", "tensor 'model.norm.weight' is missing", 3}});
  }
  for (const auto& [d, c] : cases) {
    const auto r = run(d);
    EXPECT_EQ(r.exit_code, c.code) << c.what << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.what << "\n" << r.output;
  }
  const auto both = run(hf_dir("tiny-fp32"), "--model tiny");
  EXPECT_EQ(both.exit_code, 2) << both.output;
  EXPECT_NE(both.output.find("--init-from-hf takes the model from the folder's config.json"), std::string::npos) << both.output;
  const auto dtype = run(hf_dir("tiny-fp32"), "--export-hf '" + (dir / "e").string() + "' --export-dtype fp16");
  EXPECT_EQ(dtype.exit_code, 2) << dtype.output;
  EXPECT_NE(dtype.output.find("--export-dtype: invalid value 'fp16' (valid: bf16, fp32)"), std::string::npos) << dtype.output;
}

TEST(HfCheckpoint, ARequeuedRunStartedFromHuggingFaceResumesItsCheckpointNotTheFolder) {
  // The same command line serves the first start (weights from the Hugging Face folder) and every requeue (weights and
  // moments from the run's own checkpoint): with --auto-resume a checkpoint wins over --init-from-hf. A constant
  // learning rate (--min-lr = --lr) makes 2 + 2 steps equal 4 uninterrupted ones, to the bit.
  const fs::path dir = test::fresh_dir("qwen3_hf_requeue");
  const std::string data = (dir / "data.h5").string();
  write_synthetic_dataset(data, 512, {32}, 16, 21, false);
  auto run = [&](const std::string& steps, const std::string& extra, const std::string& tag) {
    const std::string out = (dir / (tag + ".h5")).string();
    const auto r = test::run_program("qwen3-pretrain", "--init-from-hf '" + hf_dir("tiny-fp32") + "' --data '" + data +
                                                           "' --seq-len 32 --global-batch 4 --lr 1e-2 --min-lr 1e-2 --warmup-steps 1 --steps " +
                                                           steps + " " + extra + " --out '" + out + "'");
    EXPECT_EQ(r.exit_code, 0) << tag << "\n" << r.output;
    h5::Handle f = h5::open_read(out, "results");
    return h5::read_f64(f.get(), "steps/loss");
  };
  const std::string save = "--save '" + (dir / "ckpt").string() + "' --auto-resume";
  const auto first = run("2", save, "first"), second = run("4", save, "second"), whole = run("4", "", "whole");
  ASSERT_EQ(whole.size(), 4u);
  EXPECT_EQ(first, std::vector<double>(whole.begin(), whole.begin() + 2));
  EXPECT_EQ(second, std::vector<double>(whole.begin() + 2, whole.end()));
}
