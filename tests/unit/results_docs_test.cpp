// docs/results.md and docs/datasets.md held to the files the tools write: every attribute, group and dataset of a
// real results file (the tiny model trained on the CPU: ended ok, resumed, failed, diverged) and of a real dataset is
// named in the docs, and every name the docs mark `always` is in the file of a run that ended ok. A name that is in a
// file and in no table fails here: document it (docs/results.md says how to add a row).
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "io/h5.h"

namespace fs = std::filesystem;
using namespace qwen3;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string repo_file(const std::string& relative) { return test::test_data_dir() + "/../../" + relative; }

// What a file holds, one key per object: "/steps/loss" (a group or dataset), "/config@lr" (an attribute of an object,
// "/@status" of the root), "(dataset)@columns" (an attribute of a dataset, whichever).
struct Contents {
  std::vector<std::string> groups, keys;
};

herr_t collect_attribute(hid_t, const char* name, const H5A_info_t*, void* names) {
  static_cast<std::vector<std::string>*>(names)->push_back(name);
  return 0;
}

std::vector<std::string> attribute_names(hid_t obj) {
  std::vector<std::string> names;
  hsize_t at = 0;
  H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &at, collect_attribute, &names);
  return names;
}

std::vector<std::string> child_names(hid_t group) {
  H5G_info_t info{};
  H5Gget_info(group, &info);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    char name[512] = {};
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
    names.push_back(name);
  }
  return names;
}

void walk(hid_t file, const std::string& path, Contents& c) {
  h5::Handle group(H5Gopen2(file, path.c_str(), H5P_DEFAULT));
  for (const auto& a : attribute_names(group.get())) c.keys.push_back((path == "/" ? "" : path) + "/@" + a);
  for (const auto& name : child_names(group.get())) {
    const std::string child = (path == "/" ? "" : path) + "/" + name;
    h5::Handle obj(H5Oopen(file, child.c_str(), H5P_DEFAULT));
    if (H5Iget_type(obj.get()) == H5I_GROUP) {
      c.groups.push_back(child);
      walk(file, child, c);
    } else {
      c.keys.push_back(child);
      for (const auto& a : attribute_names(obj.get())) c.keys.push_back("(dataset)@" + a);
    }
  }
}

Contents contents(const std::string& path) {
  h5::Handle f = h5::open_read(path, "file");
  Contents c;
  walk(f.get(), "/", c);
  for (auto& k : c.keys)  // "/config/@lr" → "/config@lr"
    if (const auto at = k.find("/@"); at != std::string::npos && at > 0) k.erase(at, 1);
  return c;
}

// One name of a table row: the key it stands for (as Contents spells keys), as a pattern (`<…>`: any one name).
struct Documented {
  std::string key;
  std::regex pattern;
  bool always;
  std::string row;  // the whole table row
};

std::regex key_pattern(const std::string& key) {
  std::string re;
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (key[i] == '<') {
      i = key.find('>', i);
      re += "[^/@]+";
    } else {
      if (std::string("\\^$.|?*+()[]{}").find(key[i]) != std::string::npos) re += '\\';
      re += key[i];
    }
  }
  return std::regex(re);
}

std::vector<std::string> cells(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  for (std::size_t i = 1; i < line.size(); ++i) {
    if (line[i] == '|') {
      out.push_back(cell);
      cell.clear();
    } else {
      cell += line[i];
    }
  }
  for (auto& c : out) {
    c.erase(0, c.find_first_not_of(' '));
    c.erase(c.find_last_not_of(' ') + 1);
  }
  return out;
}

std::vector<std::string> backticked(const std::string& text) {
  std::vector<std::string> out;
  for (std::size_t b = text.find('`'); b != std::string::npos; b = text.find('`', b)) {
    const std::size_t e = text.find('`', b + 1);
    if (e == std::string::npos) break;
    out.push_back(text.substr(b + 1, e - b - 1));
    b = e + 1;
  }
  return out;
}

// The rows of every table under a heading "## <heading>…": name(s) → key(s) by `to_keys` (the row's first cell's
// backticked names); `always` from the table's `present` column ("always"), or every row when it has none.
using ToKeys = std::vector<std::string> (*)(const std::vector<std::string>& names, const std::string& prefix);
struct Section {
  std::string heading, prefix;
  ToKeys to_keys;
};

std::vector<std::string> each_with_prefix(const std::vector<std::string>& names, const std::string& prefix) {
  std::vector<std::string> keys;
  for (const auto& n : names) keys.push_back(prefix + n);
  return keys;
}

// docs/datasets.md's layout table: "`/` attribute `format`", "`/buckets/len_<L>/tokens`".
std::vector<std::string> dataset_layout_keys(const std::vector<std::string>& names, const std::string&) {
  if (names.size() == 2) return {names[0] + "@" + names[1]};  // "/@format", "/buckets/len_<L>@seq_len"
  return names;
}

std::vector<Documented> documented(const std::string& doc_path, const std::vector<Section>& sections) {
  std::istringstream doc(read_text(doc_path));
  std::vector<Documented> out;
  const Section* section = nullptr;
  int present = -1;
  bool header = false;
  std::string line;
  while (std::getline(doc, line)) {
    if (line.rfind("## ", 0) == 0) {
      section = nullptr;
      for (const auto& s : sections)
        if (line.rfind("## " + s.heading, 0) == 0) section = &s;
      header = true;
      continue;
    }
    if (section == nullptr || line.rfind("|", 0) != 0) {
      header = line.rfind("|", 0) != 0;  // the next table starts with its header
      continue;
    }
    const auto row = cells(line);
    if (header) {  // a table's first line: where its `present` column is
      present = -1;
      for (std::size_t i = 0; i < row.size(); ++i)
        if (row[i] == "present") present = static_cast<int>(i);
      header = false;
      continue;
    }
    if (row.empty() || row[0].rfind("---", 0) == 0) continue;
    const bool always = present < 0 || (present < static_cast<int>(row.size()) && row[present] == "always");
    for (const auto& key : section->to_keys(backticked(row[0]), section->prefix))
      out.push_back({key, key_pattern(key), always, line});
  }
  return out;
}

const std::vector<Section> kResultsSections = {
    {"Root attributes", "/@", each_with_prefix},  {"`/config`", "/config@", each_with_prefix},
    {"`/steps`", "/steps/", each_with_prefix},     {"`/timings`", "/timings@", each_with_prefix},
    {"`/ranks` and `/stages`", "/", each_with_prefix}, {"`/memory`", "/memory/", each_with_prefix},
    {"Attributes of datasets", "(dataset)@", each_with_prefix}};
const std::vector<Section> kDatasetSections = {{"File layout", "", dataset_layout_keys}};

// Every key and group of the file is documented; with `ok`, every `always` name is in the file.
void expect_held_to(const std::string& file, const std::vector<Documented>& docs, const std::string& doc_name, bool ok) {
  SCOPED_TRACE(file);
  const Contents c = contents(file);
  for (const auto& key : c.keys) {
    bool found = false;
    for (const auto& d : docs) found = found || std::regex_match(key, d.pattern);
    EXPECT_TRUE(found) << key << " is in the file and in no table of " << doc_name;
  }
  for (const auto& group : c.groups) {
    bool found = false;
    for (const auto& d : docs)  // named (`/buckets/len_<L>`), or holding a name (`/memory/trace/rank_<r>`)
      found = found || std::regex_match(group, d.pattern) || d.key.rfind(group + "/", 0) == 0 ||
              d.key.rfind(group + "@", 0) == 0;
    EXPECT_TRUE(found) << "the group " << group << " is in the file and " << doc_name << " names nothing in it";
  }
  if (!ok) return;
  for (const auto& d : docs) {
    if (!d.always) continue;
    bool found = false;
    for (const auto& keys : {c.keys, c.groups})
      for (const auto& key : keys) found = found || std::regex_match(key, d.pattern);
    EXPECT_TRUE(found) << doc_name << " says " << d.key << " is always there; this file lacks it\n" << d.row;
  }
}

class ResultsDocs : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fresh_dir("results_docs_test");
    data_ = (dir_ / "data.h5").string();
    const auto r = test::run_program("qwen3-dataset", "synthetic --out '" + data_ + "' --vocab-size 512 --lengths 32 --documents 8");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  // qwen3-pretrain on one CPU rank, the tiny model on the dataset; the results file's path.
  std::string train(const std::string& name, const std::string& args, int expect_exit = 0) {
    const std::string out = (dir_ / (name + ".h5")).string();
    const auto r = test::run_program("qwen3-pretrain", "--model tiny --data '" + data_ + "' --global-batch 2 --out '" + out +
                                                       "' " + args);
    EXPECT_EQ(r.exit_code, expect_exit) << r.output;
    return out;
  }
  fs::path dir_;
  std::string data_;
};

}  // namespace

TEST_F(ResultsDocs, EveryNameInAResultsFileIsDocumentedAndEveryAlwaysNameIsThere) {
  const auto docs = documented(repo_file("docs/results.md"), kResultsSections);
  ASSERT_GT(docs.size(), 20u) << "docs/results.md's tables were not found";
  const std::string save = (dir_ / "ckpt").string();
  const std::string ok = train("ok", "--seq-len 32 --steps 2 --save '" + save + "'");
  expect_held_to(ok, docs, "docs/results.md", true);
  // Resumed: resumed_from and its step.
  const std::string resumed = train("resumed", "--seq-len 32 --steps 3 --resume '" + save + "/step-00000002'");
  expect_held_to(resumed, docs, "docs/results.md", true);
  // An error after the file exists (no bucket of that length): status error, with what was written so far.
  const std::string failed = train("failed", "--seq-len 64 --steps 2", 3);
  expect_held_to(failed, docs, "docs/results.md", false);
  // A run that diverges (a learning rate that makes the loss not finite): whatever it records is documented.
  const std::string diverged = (dir_ / "diverged.h5").string();
  test::run_program("qwen3-pretrain", "--model tiny --data '" + data_ + "' --global-batch 2 --seq-len 32 --steps 6 "
                                      "--lr 1e6 --warmup-steps 0 --out '" + diverged + "'");
  ASSERT_TRUE(fs::exists(diverged));
  expect_held_to(diverged, docs, "docs/results.md", false);
  // Every status a file holds is one the `status` row lists.
  std::string status_row;
  for (const auto& d : docs)
    if (d.key == "/@status") status_row = d.row;
  for (const auto& file : {ok, resumed, failed, diverged}) {
    h5::Handle f = h5::open_read(file, "results");
    const std::string status = h5::read_attr_string(f.get(), "status");
    EXPECT_NE(status_row.find("`" + status + "`"), std::string::npos)
        << file << ": status '" << status << "' is not in docs/results.md's status row\n" << status_row;
  }
}

TEST_F(ResultsDocs, EveryNameInADatasetIsDocumented) {
  const auto docs = documented(repo_file("docs/datasets.md"), kDatasetSections);
  ASSERT_GT(docs.size(), 5u) << "docs/datasets.md's layout table was not found";
  expect_held_to(data_, docs, "docs/datasets.md", true);
}

// The test's own reading of a table: names, families, the `present` column.
TEST(ResultsDocsParser, ReadsNamesFamiliesAndPresence) {
  const std::string path = (test::fresh_dir("results_docs_parser") / "doc.md").string();
  std::ofstream(path) << "# x\n\n## Root attributes\n| name | type | present | meaning |\n|---|---|---|---|\n"
                         "| `a`, `b_<n>_c` | int64 | always | x |\n| `d` | string | CUDA runs | y |\n\n"
                         "## `/steps` — series\n| dataset | meaning |\n|---|---|\n| `loss` | z |\n\n## Other\n| `e` | f |\n";
  const auto docs = documented(path, kResultsSections);
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_EQ(docs[0].key, "/@a");
  EXPECT_TRUE(docs[0].always);
  EXPECT_TRUE(std::regex_match("/@b_12_c", docs[1].pattern));
  EXPECT_FALSE(std::regex_match("/@b_1/2_c", docs[1].pattern));
  EXPECT_FALSE(docs[2].always);
  EXPECT_EQ(docs[3].key, "/steps/loss");
  EXPECT_TRUE(docs[3].always);
}
