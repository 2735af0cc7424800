// Repo ids ("kyutai/moshiko-pytorch-bf16") resolve in the local Hugging Face cache, without any
// network access (moshi/model_source.h, issue 14).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "core/error.h"
#include "moshi/model_source.h"
#include "test_util.h"

namespace mtt::moshi {
namespace {

namespace fs = std::filesystem;

// Sets an environment variable for one scope (the test binary runs one test at a time).
struct Env {
  std::string name;
  std::optional<std::string> old;
  Env(std::string n, const std::string& v) : name(std::move(n)) {
    if (const char* o = std::getenv(name.c_str())) old = o;
    if (v.empty()) ::unsetenv(name.c_str());
    else ::setenv(name.c_str(), v.c_str(), 1);
  }
  ~Env() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};

TEST(HfCache, RepoIds) {
  EXPECT_TRUE(is_hf_repo_id("kyutai/moshiko-pytorch-bf16"));
  EXPECT_TRUE(is_hf_repo_id("org/name.v2_x"));
  EXPECT_FALSE(is_hf_repo_id("name"));
  EXPECT_FALSE(is_hf_repo_id("/abs/path"));
  EXPECT_FALSE(is_hf_repo_id("a/b/c"));
  EXPECT_FALSE(is_hf_repo_id("../x"));
  EXPECT_FALSE(is_hf_repo_id("org/.."));
  EXPECT_FALSE(is_hf_repo_id("org/na me"));
}

TEST(HfCache, CacheFolderFollowsHuggingFaceHub) {
  Env a("HF_HUB_CACHE", ""), b("HUGGINGFACE_HUB_CACHE", ""), c("HF_HOME", ""), d("XDG_CACHE_HOME", ""), e("HOME", "/home/u");
  EXPECT_EQ(hf_hub_cache_dir(), "/home/u/.cache/huggingface/hub");
  Env x("XDG_CACHE_HOME", "/xdg");
  EXPECT_EQ(hf_hub_cache_dir(), "/xdg/huggingface/hub");
  Env h("HF_HOME", "/hf");
  EXPECT_EQ(hf_hub_cache_dir(), "/hf/hub");
  Env hc("HF_HUB_CACHE", "/hubcache");
  EXPECT_EQ(hf_hub_cache_dir(), "/hubcache");
}

TEST(HfCache, SnapshotOfRefsMainAndTheModelFolderInIt) {
  test::TempDir dir;
  Env a("HF_HUB_CACHE", ""), b("HUGGINGFACE_HUB_CACHE", ""), c("HF_HOME", (dir / "hf").string());
  const fs::path repo = dir / "hf" / "hub" / "models--org--tiny";
  const fs::path snap = repo / "snapshots" / "c0ffee";
  fs::create_directories(snap);
  fs::create_directories(repo / "refs");
  std::ofstream(repo / "refs" / "main") << "c0ffee\n";
  const fs::path base = test::source_dir() / "tests" / "data" / "fork_runs" / "base";
  fs::copy_file(base / "config.json", snap / "config.json");
  fs::copy_file(base / "model.safetensors", snap / "model.safetensors");

  EXPECT_EQ(resolve_local_model_path("org/tiny"), snap.string());
  // A local path is itself, even when it reads like a repo id; anything else is left to its opener.
  EXPECT_EQ(resolve_local_model_path(base.string()), base.string());
  EXPECT_EQ(resolve_local_model_path("no-slash-name"), "no-slash-name");

  const ModelSource src = resolve_model_source("org/tiny");
  EXPECT_EQ(src.writer, RunWriter::model_folder);
  EXPECT_EQ(src.path, snap.string());
  EXPECT_EQ(src.config.dim, 64);
  ASSERT_FALSE(src.notes.empty());
  EXPECT_EQ(src.notes.front(), "org/tiny: the local Hugging Face cache's snapshot " + snap.string());

  try {
    resolve_local_model_path("org/missing");
    FAIL() << "a repo id that is not in the cache";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Input);
    const std::string w = e.what();
    EXPECT_EQ(w.find('\n'), std::string::npos);
    EXPECT_NE(w.find("org/missing: not in the local Hugging Face cache: no " + (dir / "hf" / "hub" / "models--org--missing").string()),
              std::string::npos)
        << w;
  }
}

}  // namespace
}  // namespace mtt::moshi
