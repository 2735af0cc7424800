// A moshiko-7B-shaped checkpoint (legacy fused names, bf16, docs/moshi.md §4.2) is opened and the
// model constructed on it without reading the weights: the file is sparse (no data on disk), the
// parameters are zero-copy views of the mapping, and RSS stays far below the 15 GB of weights.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/error.h"
#include "moshi/config.h"
#include "moshi/lm.h"
#include "moshi/schema.h"
#include "test_util.h"

namespace mtt::moshi {
namespace {

int64_t rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

// Writes a safetensors header for `decls` (bf16, contiguous offsets) and extends the file to its
// full size with a hole: nothing of the payload is written.
int64_t write_sparse_checkpoint(const std::string& path, const ModelSchema& s) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& d : s.params) {
    uint64_t n = static_cast<uint64_t>(d.numel()) * 2;
    h[d.name] = {{"dtype", "BF16"}, {"shape", d.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string header = h.dump();
  while ((header.size() + 8) % 8) header.push_back(' ');
  {
    std::ofstream f(path, std::ios::binary);
    uint64_t len = header.size();
    f.write(reinterpret_cast<const char*>(&len), 8);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
  }
  EXPECT_EQ(::truncate(path.c_str(), static_cast<off_t>(8 + header.size() + off)), 0);
  return static_cast<int64_t>(off);
}

TEST(Moshi7B, OpensAndConstructsWithoutReadingWeights) {
  test::TempDir dir;
  const std::string path = (dir / "model.safetensors").string();
  LMConfig cfg = LMConfig::moshiko_7b();
  ModelSchema s = declare_parameters(cfg.to_schema(/*fused_attention_names=*/true));
  EXPECT_EQ(s.params.size(), 355u);  // docs/moshi.md §4.2
  const int64_t bytes = write_sparse_checkpoint(path, s);
  EXPECT_EQ(bytes, 2 * 7687729152LL);  // 7.69 B parameters in bf16

  const int64_t rss0 = rss_kib();
  auto t0 = std::chrono::steady_clock::now();
  LMModel model(cfg);
  LoadOptions opt;
  opt.dtype = at::kBFloat16;
  LoadReport rep = model.load_file(path, opt);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t rss1 = rss_kib();
  EXPECT_TRUE(rep.ok()) << rep.summary();
  EXPECT_EQ(rep.converted, 0);
  EXPECT_EQ(rep.zero_copy, 439);  // module form: depformer attention split into 8 per-step views
  const double rss_mib = static_cast<double>(rss1 - rss0) / 1024.0;
  std::printf("[moshi-7b] open + construct: %.3f s, RSS +%.1f MiB (weights %.1f GiB)\n", secs, rss_mib,
              static_cast<double>(bytes) / (1 << 30));
  RecordProperty("load_seconds", std::to_string(secs));
  RecordProperty("rss_increase_mib", std::to_string(rss_mib));
  EXPECT_LT(rss_mib, 256.0);
  auto sd = model.state_dict();
  EXPECT_EQ(sd.at("transformer.layers.0.self_attn.in_projs.0.weight").sizes(), (at::IntArrayRef{12288, 4096}));
  EXPECT_EQ(sd.at("depformer.layers.5.self_attn.in_projs.7.weight").sizes(), (at::IntArrayRef{3072, 1024}));
  EXPECT_EQ(sd.at("depformer.layers.5.self_attn.in_projs.7.weight").scalar_type(), at::kBFloat16);
}

}  // namespace
}  // namespace mtt::moshi
