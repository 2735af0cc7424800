#include "audit/audit.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "audit/findings.h"
#include "audit/infer_config.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/checkpoint.h"
#include "moshi/model_source.h"
#include "moshi/schema.h"

namespace mtt::audit {

namespace {
std::string count_line(uint64_t n, const char* what) { return std::to_string(n) + " " + what; }

// A fork hybrid layer's Moshi weights live under original_layer.* (and its duplicate
// seq_modeling_block.original_layer.*); the base checkpoint has them under the layer itself.
std::optional<io::TensorView> find_in_base(const io::Checkpoint& base, const std::string& name) {
  if (auto v = base.find(name)) return v;
  for (const std::string part : {"seq_modeling_block.original_layer.", "original_layer."}) {
    const auto pos = name.find(part);
    if (pos != std::string::npos && name.rfind("transformer.layers.", 0) == 0)
      if (auto v = base.find(name.substr(0, pos) + name.substr(pos + part.size()))) return v;
  }
  return std::nullopt;
}

std::string fmt(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// The resolved configuration replaces what shapes guessed; what only the tensors show (stored
// attention form, causal eta, projection biases) stays inferred.
std::vector<std::string> apply_resolved_config(const moshi::ModelSource& src, InferredConfig& inf) {
  moshi::SchemaConfig c = src.config.to_schema(inf.config.fused_attention_names);
  const moshi::HybridSettings& shapes = inf.config.ttt;
  if (c.ttt.variant == shapes.variant) {
    c.ttt.causal_eta = shapes.causal_eta;
    c.ttt.proj_bias = shapes.proj_bias;
    c.ttt.inplace_init = shapes.inplace_init;
  } else if (shapes.variant != moshi::TTTVariant::none) {
    inf.notes.push_back(std::string("the configuration says TTT variant ") + moshi::ttt_variant_name(c.ttt.variant) +
                        " but the keys show " + moshi::ttt_variant_name(shapes.variant) + ": the keys win");
    c.ttt = shapes;
  }
  if (src.lora.enable) {
    c.ttt.lora_rank = static_cast<int>(src.lora.rank);
    c.ttt.lora_scaling = src.lora.scaling;
  }
  std::vector<std::string> notes = {"configuration: " + src.describe()};
  notes.insert(notes.end(), src.notes.begin(), src.notes.end());
  notes.insert(notes.end(), src.numerics.begin(), src.numerics.end());
  const moshi::TTTSettings& t = src.config.ttt;
  if (t.enable && t.variant == moshi::TTTVariant::fork_hybrid)
    notes.push_back("TTT settings: layers " + t.layers + ", mini_batch_size " + std::to_string(t.mini_batch_size) +
                    ", base_lr " + fmt(t.base_lr) + ", initial_gating_alpha " + fmt(t.initial_gating_alpha) +
                    ", ttt_mlp_layers " + std::to_string(t.ttt_mlp_layers) + ", persistent_states " +
                    (t.persistent_states ? "true" : "false") + (t.use_rope ? ", use_rope" : ""));
  if (t.enable && t.variant == moshi::TTTVariant::inplace)
    notes.push_back("In-Place TTT settings: start_layer " + std::to_string(t.inplace_start_layer) + ", layer_frequency " +
                    std::to_string(t.inplace_layer_frequency) + ", chunk_size " + std::to_string(t.inplace_chunk_size) +
                    ", learning_rate " + fmt(t.inplace_lr) + ", delta_clip_fro_norm " +
                    (t.inplace_delta_clip > 0 ? fmt(t.inplace_delta_clip) : std::string("none")) + ", conv_kernel_size " +
                    std::to_string(t.conv_kernel_size) + ", activation " +
                    (t.inplace_activation == "gating" ? src.config.gating + " (the model's gating)"
                     : t.inplace_activation == "gelu" ? std::string("gelu, exact erf (the port calls F.gelu; the model's gating says ") +
                                                            src.config.gating + ")"
                                                      : t.inplace_activation));
  inf.config = c;
  inf.source = "config (" + std::to_string(src.config_files.size()) + " files)";
  return notes;
}
}  // namespace

Report run_audit(const AuditOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  Report rep;
  // The run-dir resolver gives the model's real configuration (config.json, the fork's TTT
  // settings, LoRA); key names and shapes fill in what no file says and cross-check the rest.
  moshi::ModelSourceOptions so;
  so.require_weights = false;
  const moshi::ModelSource src = moshi::resolve_model_source(opt.checkpoint, so);
  const io::Checkpoint& ck = *src.run_ckpt;
  std::optional<io::Checkpoint> base;
  if (!opt.base.empty()) base = io::Checkpoint::open(opt.base);

  InferredConfig inf = infer_config(ck);
  std::vector<std::string> resolved;
  if (src.has_config) resolved = apply_resolved_config(src, inf);
  moshi::ModelSchema schema;
  try {
    schema = moshi::declare_parameters(inf.config);
  } catch (const Error& e) {
    // An inferred configuration the model rejects is a property of the input.
    throw Error(ck.path(), e.key(), "inferred configuration rejected: " + e.reason());
  }
  rep.layer_filter = parse_layer_list(opt.layers, static_cast<int>(inf.config.num_layers));

  // One streaming pass per file in file order, statistics in fp64 on all cores (audit/stats.h).
  StatsMap stats;
  CompareMap cmp;
  uint64_t not_in_base = 0;
  Progress prog("ttt-inspect", ck.total_bytes(), opt.progress, "B");
  uint64_t before = 0;
  for (const auto& file : ck.files()) {
    std::vector<StatsJob> jobs;
    for (const auto& info : file->tensors()) {
      StatsJob job{file->view(info), std::nullopt};
      if (base) {
        if (auto bv = find_in_base(*base, info.name)) job.base = *bv;
        else ++not_in_base;
      }
      jobs.push_back(std::move(job));
    }
    StatsPassOptions so;
    so.threads = opt.threads;
    uint64_t file_bytes = 0, all_bytes = 0;
    for (const auto& j : jobs) {
      file_bytes += j.view.nbytes();
      all_bytes += j.view.nbytes() + (j.base ? j.base->nbytes() : 0);
    }
    // The bar counts checkpoint bytes; base bytes read alongside are scaled out.
    so.progress = [&, file_bytes, all_bytes](uint64_t done) {
      const double f = all_bytes ? static_cast<double>(file_bytes) / static_cast<double>(all_bytes) : 1.0;
      prog.set(before + std::min(file_bytes, static_cast<uint64_t>(static_cast<double>(done) * f)));
    };
    auto results = stats_pass(jobs, so);
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      const auto& info = *jobs[i].view.info;
      rep.bytes_scanned += info.nbytes();
      if (results[i].compare) {
        cmp.emplace(info.name, *results[i].compare);
        rep.bytes_scanned += jobs[i].base->nbytes();
      }
      stats.emplace(info.name, std::move(results[i].stats));
    }
    before += file_bytes;
    prog.set(before);
  }
  prog.finish();

  rep.inventory = make_inventory(ck, inf, schema, stats);
  rep.inventory.resolved = resolved;
  rep.unused = find_unused(schema, stats, rep.inventory.params, rep.layer_filter);
  rep.frozen = find_frozen(schema, stats, cmp, opt.base, not_in_base, rep.layer_filter);
  rep.gating = gating_stats(ck, schema, rep.layer_filter);
  rep.dead_paths = find_dead_paths(schema, stats, rep.layer_filter);

  auto& P = rep.problems;
  const auto& inv = rep.inventory;
  if (!rep.unused.entries.empty()) {
    std::ostringstream s;
    s.precision(3);
    s << count_line(rep.unused.entries.size(), "unused tensors") << " (" << rep.unused.params << " params, "
      << rep.unused.bytes << " bytes, " << rep.unused.share_percent << "% of the parameters) are never read by the forward";
    P.push_back(s.str());
  }
  if (!rep.frozen.entries.empty())
    P.push_back(count_line(rep.frozen.entries.size(), "frozen tensors") + " (" + std::to_string(rep.frozen.params) +
                " params) are constant while tensors of the same role vary");
  if (rep.frozen.base_problems)
    P.push_back(count_line(rep.frozen.base_problems, "tensors") +
                " are bit-identical to the base checkpoint while their module moved");
  if (rep.dead_paths.dead)
    P.push_back(count_line(rep.dead_paths.dead, "dead gradient paths") + " (every factor of a product exactly zero)");
  if (inv.nan || inv.inf) {
    std::string where;
    for (std::size_t i = 0; i < inv.nonfinite.size() && i < 3; ++i) {
      const auto& n = inv.nonfinite[i];
      where += (i ? "; " : "") + n.name + " (" + std::to_string(n.nan) + " NaN, " + std::to_string(n.inf) +
               " Inf, first at flat index " + std::to_string(n.first_index) + ")";
    }
    if (inv.nonfinite.size() > 3) where += "; and " + std::to_string(inv.nonfinite.size() - 3) + " more";
    P.push_back(std::to_string(inv.nan) + " NaN and " + std::to_string(inv.inf) + " Inf values in " +
                count_line(inv.nonfinite_tensors.size(), "tensors") + ": " + where);
  }
  if (!inv.shape_mismatches.empty())
    P.push_back(count_line(inv.shape_mismatches.size(), "tensors") + " with a shape other than the model declares");
  if (!inv.duplicate_mismatches.empty())
    P.push_back(count_line(inv.duplicate_mismatches.size(), "duplicate original_layer copies") +
                " differ from their canonical key (which one loads depends on load order)");
  if (src.writer == moshi::RunWriter::inplace_port && src.adapters_only && inf.config.ttt.variant == moshi::TTTVariant::inplace) {
    // The port trains w_down (its fast weight's initial value) but its save_adapters file keeps
    // only the trainable target generator: the trained w_down is lost on save.
    bool has_w_down = false;
    for (const auto& k : ck.keys()) has_w_down = has_w_down || k.find(".gating.w_down") != std::string::npos;
    if (!has_w_down)
      P.push_back("adapter-only In-Place run: no gating.w_down in " + ck.describe() +
                  ": the trained w_down is lost on save (the port's loader restores it from the base linear_out)");
  }
  if (inv.missing && !inv.partial)
    P.push_back(count_line(inv.missing, "declared tensors") + " are missing (e.g. " + inv.missing_examples.front() + ")");

  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

void write_tiny_checkpoint(const std::string& path, moshi::TTTVariant variant, const moshi::InitOptions& init) {
  const auto schema = moshi::declare_parameters(moshi::SchemaConfig::tiny(variant));
  moshi::write_initial_checkpoint(path, schema, init, {{"mtt.created_by", "ttt-inspect --tiny"}});
}

TinyCheckpoint::TinyCheckpoint(const std::string& variant, const moshi::InitOptions& init, const std::string& save) {
  moshi::TTTVariant v;
  if (variant == "none") v = moshi::TTTVariant::none;
  else if (variant == "fork") v = moshi::TTTVariant::fork_hybrid;
  else if (variant == "inplace" || variant == "inplace-zero") v = moshi::TTTVariant::inplace;
  else throw Error("", "--variant", "expected fork, inplace, inplace-zero or none, got '" + variant + "'", ErrorKind::Usage);
  path_ = save;
  if (path_.empty()) {
    char tmpl[] = "/tmp/ttt-inspect-tiny-XXXXXX.safetensors";
    const int fd = ::mkstemps(tmpl, 12);
    if (fd < 0) throw Error("/tmp", "", "cannot create a temporary file", ErrorKind::Internal);
    ::close(fd);
    path_ = tmpl;
    temporary_ = true;
  }
  try {
    if (variant == "inplace-zero") {
      auto c = moshi::SchemaConfig::tiny(v);
      c.ttt.inplace_init = moshi::InplaceInit::zero;
      moshi::write_initial_checkpoint(path_, moshi::declare_parameters(c), init,
                                      {{"mtt.created_by", "ttt-inspect --tiny"}});
    } else {
      write_tiny_checkpoint(path_, v, init);
    }
  } catch (...) {
    if (temporary_) std::remove(path_.c_str());
    throw;
  }
}

TinyCheckpoint::~TinyCheckpoint() {
  if (temporary_) std::remove(path_.c_str());
}

}  // namespace mtt::audit
