#pragma once
// `ttt-inspect` as a library call: open a checkpoint (file, shards, model/run dir), infer its
// configuration, declare the model's parameters for it, stream every tensor once (pages released
// after each chunk: RSS stays bounded), and compute the five findings into a Report.
#include <string>

#include "audit/report.h"
#include "moshi/init.h"

namespace mtt::audit {

struct AuditOptions {
  std::string checkpoint;
  std::string base;         // --base: compare against this (base or init) checkpoint
  std::string layers;       // --layers: "29,30,31" | all | middle | none; empty = all
  bool progress = false;    // progress bar on stderr
  int threads = 0;          // statistics threads; 0: one per core
};

// Throws mtt::Error (kind Input) when the checkpoint or base cannot be read or is not a Moshi /
// Moshi-TTT checkpoint; kind Usage for a malformed --layers.
Report run_audit(const AuditOptions& options);

// The tiny built-in Moshi-TTT checkpoint made with the library's own initialisers
// (moshi::SchemaConfig::tiny, moshi::write_initial_checkpoint) at `path`.
void write_tiny_checkpoint(const std::string& path, moshi::TTTVariant variant = moshi::TTTVariant::fork_hybrid,
                           const moshi::InitOptions& init = {});

// The variants `ttt-inspect --tiny --variant` names: "fork", "inplace", "none", and
// "inplace-zero" (In-Place with a zero target generator: the dead gradient path of seed 003).
inline constexpr const char* kTinyVariants[] = {"fork", "inplace", "inplace-zero", "none"};

// `ttt-inspect --tiny`: the tiny checkpoint of `variant` (kTinyVariants, else Error(Usage) naming
// --variant) at `save`, or without `save` at a temporary path removed with this object.
class TinyCheckpoint {
 public:
  TinyCheckpoint(const std::string& variant, const moshi::InitOptions& init, const std::string& save = "");
  ~TinyCheckpoint();
  TinyCheckpoint(const TinyCheckpoint&) = delete;
  TinyCheckpoint& operator=(const TinyCheckpoint&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool temporary_ = false;
};

}  // namespace mtt::audit
