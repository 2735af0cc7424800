#include "audit/audit.h"

#include <chrono>
#include <sstream>

#include "audit/findings.h"
#include "audit/infer_config.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/checkpoint.h"
#include "moshi/schema.h"

namespace mtt::audit {

namespace {
std::string count_line(uint64_t n, const char* what) { return std::to_string(n) + " " + what; }
}  // namespace

Report run_audit(const AuditOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  Report rep;
  const io::Checkpoint ck = io::Checkpoint::open(opt.checkpoint);
  std::optional<io::Checkpoint> base;
  if (!opt.base.empty()) base = io::Checkpoint::open(opt.base);

  const InferredConfig inf = infer_config(ck);
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
  Progress prog("ttt-inspect", ck.total_bytes(), opt.progress);
  uint64_t before = 0;
  for (const auto& file : ck.files()) {
    std::vector<StatsJob> jobs;
    for (const auto& info : file->tensors()) {
      StatsJob job{file->view(info), std::nullopt};
      if (base) {
        if (auto bv = base->find(info.name)) job.base = *bv;
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
  if (inv.missing && !inv.partial)
    P.push_back(count_line(inv.missing, "declared tensors") + " are missing (e.g. " + inv.missing_examples.front() + ")");

  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

void write_tiny_checkpoint(const std::string& path, moshi::TTTVariant variant, const moshi::InitOptions& init) {
  const auto schema = moshi::declare_parameters(moshi::SchemaConfig::tiny(variant));
  moshi::write_initial_checkpoint(path, schema, init, {{"mtt.created_by", "ttt-inspect --tiny"}});
}

}  // namespace mtt::audit
