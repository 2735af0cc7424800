// ttt-inspect: checkpoint audit (inventory, unused, frozen, gating, dead gradient paths).
// Flags in, library call (audit::run_audit), print. Exit: 0 clean, 1 findings, 2 unreadable
// input, 64 usage, 70 internal (docs/conventions.md).
#include <CLI/CLI.hpp>

#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "audit/render.h"
#include "app_main.h"
#include "flags.h"
#include "core/error.h"

namespace {

struct Options {
  std::string checkpoint;
  std::string base;
  std::string layers;
  bool json = false;
  bool tiny = false;
  std::string variant = "fork";
  std::string save;
  uint64_t seed = 0;
  std::string dtype = "bf16";
  bool progress = false;
};

void declare(CLI::App& app, Options& o) {
  app.add_option("checkpoint", o.checkpoint,
                 "safetensors file, *.safetensors.index.json, model dir or moshi-finetune run dir");
  app.add_option("--base", o.base, "base or init checkpoint: report tensors unchanged against it and ||dW||/||W||");
  app.add_option("--layers", o.layers, "report these transformer layers only: \"29,30,31\", all, middle, none");
  app.add_flag("--json", o.json, "print the report as JSON (docs/inspect-json.md)");
  auto* tiny = app.add_flag("--tiny", o.tiny,
                            "create the tiny built-in Moshi-TTT checkpoint with the library's initialisers and audit it");
  // The --tiny settings mean nothing for a checkpoint given by path: said, not silently ignored.
  app.add_option("--variant", o.variant, "--tiny: TTT variant")
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(mtt::audit::kTinyVariants),
                                                     std::end(mtt::audit::kTinyVariants))))
      ->needs(tiny);
  app.add_option("--save", o.save, "--tiny: keep the created checkpoint at this path")->needs(tiny);
  app.add_option("--seed", o.seed, "--tiny: initialiser seed")->check(mtt::app::uint64_value())->needs(tiny);
  app.add_option("--dtype", o.dtype, "--tiny: stored dtype")->check(CLI::IsMember({"bf16", "f32"}))->needs(tiny);
  app.add_flag("--progress", o.progress, "progress bar on stderr");
}

int run(const Options& o) {
  mtt::audit::AuditOptions ao;
  ao.base = o.base;
  ao.layers = o.layers;
  ao.progress = o.progress;
  std::optional<mtt::audit::TinyCheckpoint> tiny;  // a temporary one is removed at the end
  if (o.tiny) {
    if (!o.checkpoint.empty())
      throw mtt::Error("", "--tiny", "takes no checkpoint argument (use --save PATH to keep it)", mtt::ErrorKind::Usage);
    mtt::moshi::InitOptions init;
    init.seed = o.seed;
    init.dtype = o.dtype == "f32" ? mtt::DType::F32 : mtt::DType::BF16;
    tiny.emplace(o.variant, init, o.save);
    ao.checkpoint = tiny->path();
  } else {
    if (o.checkpoint.empty())
      throw mtt::Error("", "checkpoint", "a checkpoint path is required (or --tiny)", mtt::ErrorKind::Usage);
    ao.checkpoint = o.checkpoint;
  }
  const auto report = mtt::audit::run_audit(ao);
  if (o.json)
    std::cout << mtt::audit::to_json(report).dump(2) << "\n";
  else
    std::cout << mtt::audit::render_table(report);
  return report.exit_status();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ttt-inspect: audit a Moshi / Moshi-TTT checkpoint (unused, frozen, gating, dead gradient paths)"};
  Options o;
  declare(app, o);
  return mtt::app::run(app, argc, argv, "ttt-inspect", [&] { return run(o); }, [&](const mtt::Error& e) {
    if (o.json) std::cout << mtt::audit::error_json(e.what(), e.exit_status()).dump() << "\n";
  });
}
