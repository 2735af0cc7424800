#include "experiments/sweep.h"

#include <ATen/Parallel.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/atomic_file.h"
#include "core/dir_lock.h"
#include "core/output_set.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/version.h"
#include "experiments/trainer.h"
#include "experiments/config_keys.h"
#include "io/strict_json.h"

namespace mtt::experiments {

namespace fs = std::filesystem;
using nlohmann::json;

ThreadPlan plan_threads(int jobs, int requested, int cores) {
  ThreadPlan p;
  p.jobs = std::max(1, jobs);
  p.cores = std::max(1, cores);
  if (requested > 0) {
    p.threads = requested;
    if (static_cast<int64_t>(p.jobs) * requested > p.cores)
      p.warning = "--jobs " + std::to_string(p.jobs) + " x --threads " + std::to_string(requested) + " = " +
                  std::to_string(static_cast<int64_t>(p.jobs) * requested) + " threads on " + std::to_string(p.cores) +
                  " cores: the jobs will slow each other down (without --threads each job gets " +
                  std::to_string(std::max(1, p.cores / p.jobs)) + ")";
    return p;
  }
  p.threads = std::max(1, std::min(p.cores / p.jobs, at::get_num_threads()));
  return p;
}

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

json grid_json(const ExperimentSpec& spec, const std::vector<GridPoint>& points, bool reduced) {
  json g = json::array();
  for (const auto& p : points) g.push_back({{"index", p.index}, {"id", p.id}, {"overrides", p.overrides}});
  return {{"format", "moshi-ttt/sweep/1"},
          {"moshi_ttt", build_info()},
          {"spec", {{"path", spec.path}, {"name", spec.name}, {"experiment", spec.experiment}}},
          {"reduced", reduced},
          {"metrics", spec.metrics},
          {"points", g},
          {"configs", [&] {
             json c = json::array();
             for (const auto& p : points) c.push_back(p.config);
             return c;
           }()}};
}

json parse_json_file(const std::string& path) { return io::read_json_file_strict(path); }

// A point's committed result. Metrics are numbers (NaN is written as null and read back as
// NaN, so a verdict sees what the run measured); evidence is the kind's own.
std::optional<RunResult> load_result(const fs::path& file, const std::string& point_id) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return std::nullopt;
  const std::string f = file.string();
  json j = parse_json_file(f);
  if (!j.is_object()) throw Error(f, "", "expected a JSON object with metrics and evidence");
  // A result copied from another point's run dir would be counted for this one.
  if (auto id = j.find("id"); id != j.end() && (!id->is_string() || id->get<std::string>() != point_id))
    throw Error(f, "id", "this run dir is point '" + point_id + "', the result names " + io::json_brief(*id) +
                             " (copied from another run dir? rerun with --force)");
  if (auto o = j.find("overrides"); o != j.end() && !o->is_object())
    throw Error(f, "overrides", "expected an object, got " + io::json_brief(*o));
  if (!j.contains("metrics")) throw Error(f, "metrics", "missing (a result.json of ttt-sweep holds metrics and evidence)");
  RunResult r;
  if (auto m = j.find("metrics"); m != j.end()) {
    if (!m->is_object()) throw Error(f, "metrics", "expected an object of numbers, got " + io::json_brief(*m));
    for (auto it = m->begin(); it != m->end(); ++it) {
      if (it.value().is_null())
        r.metrics[it.key()] = std::numeric_limits<double>::quiet_NaN();
      else if (it.value().is_number())
        r.metrics[it.key()] = it.value();
      else
        throw Error(f, "metrics." + it.key(), "expected a number or null, got " + io::json_brief(it.value()));
    }
  }
  if (auto e = j.find("evidence"); e != j.end()) {
    if (!e->is_object()) throw Error(f, "evidence", "expected an object, got " + io::json_brief(*e));
    r.evidence = *e;
  }
  return r;
}

// Point ids name run dirs: a hand-edited sweep.json must not lead outside <out>/runs.
bool safe_point_id(const std::string& id) {
  if (id.empty() || id.size() > 255 || id.front() == '.') return false;
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::strchr("._-+=", c))) return false;
  return true;
}

const char* const kSweepInUse = "is in use by another sweep (wait for it to finish, or give another --out)";

// A verdict reads the results' metrics and evidence; results read back from run dirs that a
// person edited can hold values of the wrong type there: that is the files' fault, not ours.
Verdict verdict_of(const ExperimentKind& kind, const std::vector<PointOutcome>& pts, std::size_t reused,
                   const fs::path& out) {
  try {
    return kind.verdict(pts);
  } catch (const json::exception& e) {
    if (reused == 0) throw;
    // The result at fault, where the verdict of its point alone fails the same way.
    std::string file = (out / "runs").string();
    for (const auto& p : pts) {
      try {
        kind.verdict({p});
      } catch (const json::exception&) {
        file = (out / "runs" / p.point.id / "result.json").string();
        break;
      } catch (const std::exception&) {
      }
    }
    throw Error(file, "evidence",
                "a value of the wrong type for the '" + kind.name + "' verdict (rerun with --force): " +
                    io::json_error_text(e));
  }
}

std::vector<std::string> metric_columns(const std::vector<PointOutcome>& pts, const std::vector<std::string>& declared) {
  std::vector<std::string> cols = declared;
  std::set<std::string> have(cols.begin(), cols.end());
  for (const auto& p : pts)
    for (auto it = p.result.metrics.begin(); it != p.result.metrics.end(); ++it)
      if (have.insert(it.key()).second) cols.push_back(it.key());
  return cols;
}

std::vector<std::string> axis_columns(const std::vector<PointOutcome>& pts) {
  std::vector<std::string> cols;
  if (pts.empty()) return cols;
  for (auto it = pts.front().point.overrides.begin(); it != pts.front().point.overrides.end(); ++it)
    cols.push_back(it.key());
  return cols;
}

std::string csv_field(const json& v) {
  if (v.is_null()) return "";
  std::string s = v.is_number_float() ? [&] {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v.get<double>());
    return std::string(buf);
  }() : scalar_text(v);
  if (s.find_first_of(",\"\n") != std::string::npos) {
    std::string q = "\"";
    for (char c : s) q += (c == '"') ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  }
  return s;
}

void write_summaries(const fs::path& out, const std::string& experiment, const std::vector<std::string>& declared,
                     SweepResult& r) {
  auto axes = axis_columns(r.points);
  auto metrics = metric_columns(r.points, declared);
  std::ostringstream csv;
  csv << "id";
  for (const auto& a : axes) csv << "," << a;
  for (const auto& m : metrics) csv << "," << m;
  csv << "\n";
  json rows = json::array();
  for (const auto& p : r.points) {
    csv << p.point.id;
    json row = {{"id", p.point.id}};
    for (const auto& a : axes) {
      csv << "," << csv_field(p.point.overrides[a]);
      row[a] = p.point.overrides[a];
    }
    for (const auto& m : metrics) {
      json v = p.result.metrics.contains(m) ? p.result.metrics[m] : json(nullptr);
      csv << "," << csv_field(v);
      row[m] = v;
    }
    csv << "\n";
    rows.push_back(row);
  }
  r.summary_csv = (out / "summary.csv").string();
  r.summary_json = (out / "summary.json").string();
  r.verdict_json = (out / "verdict.json").string();
  // The three files describe one state of the sweep: all of them or none (issue 15).
  OutputSet outputs;
  outputs.add(r.summary_csv).write(csv.str());
  outputs.add(r.summary_json)
      .write(json({{"format", "moshi-ttt/sweep-summary/1"}, {"experiment", experiment}, {"axes", axes},
                   {"metrics", metrics}, {"rows", rows}})
                 .dump(2));
  outputs.add(r.verdict_json)
      .write(json({{"experiment", experiment},
                   {"status", r.verdict.status},
                   {"text", r.verdict.text},
                   {"evidence", r.verdict.evidence}})
                 .dump(2));
  outputs.commit();
}

// Points restored from an out dir's sweep.json, every field checked (it may be hand-edited).
std::vector<GridPoint> points_from_sweep_json(const json& sj, const std::string& file) {
  std::vector<GridPoint> pts;
  auto need = [&](const json& o, const char* k, const std::string& where) -> const json& {
    auto it = o.find(k);
    if (it == o.end()) throw Error(file, where + k, "missing");
    return *it;
  };
  const json& ps = need(sj, "points", "");
  const json& cs = need(sj, "configs", "");
  if (!ps.is_array()) throw Error(file, "points", "expected a list, got " + io::json_brief(ps));
  if (!cs.is_array() || cs.size() != ps.size())
    throw Error(file, "configs", "expected a list with one config per point (" + std::to_string(ps.size()) + ")");
  if (ps.empty()) throw Error(file, "points", "empty: a sweep has at least one grid point");
  if (auto f = sj.find("format"); f != sj.end() && *f != "moshi-ttt/sweep/1")
    throw Error(file, "format", "expected \"moshi-ttt/sweep/1\", got " + io::json_brief(*f));
  if (auto r = sj.find("reduced"); r != sj.end() && !r->is_boolean())
    throw Error(file, "reduced", "expected true or false, got " + io::json_brief(*r));
  std::set<std::string> ids;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const std::string k = "points[" + std::to_string(i) + "]";
    if (!ps[i].is_object()) throw Error(file, k, "expected an object with index, id, overrides");
    GridPoint p;
    const json& index = need(ps[i], "index", k + ".");
    if (!index.is_number_unsigned() || index.get<std::size_t>() != i)
      throw Error(file, k + ".index", "expected " + std::to_string(i) + ", got " + io::json_brief(index));
    p.index = i;
    const json& id = need(ps[i], "id", k + ".");
    if (!id.is_string() || !safe_point_id(id.get<std::string>()))
      throw Error(file, k + ".id", "expected a run dir name (letters, digits, . _ - + =), got " + io::json_brief(id));
    p.id = id.get<std::string>();
    if (!ids.insert(p.id).second) throw Error(file, k + ".id", "'" + p.id + "' names two points (one run dir)");
    p.overrides = need(ps[i], "overrides", k + ".");
    if (!p.overrides.is_object()) throw Error(file, k + ".overrides", "expected an object");
    if (!cs[i].is_object()) throw Error(file, "configs[" + std::to_string(i) + "]", "expected an object");
    p.config = cs[i];
    pts.push_back(std::move(p));
  }
  return pts;
}

// The experiment kind a sweep.json was made for.
std::string sweep_experiment(const json& sj, const std::string& file) {
  const json* e = sj.is_object() && sj.contains("spec") && sj["spec"].is_object() && sj["spec"].contains("experiment")
                      ? &sj["spec"]["experiment"]
                      : nullptr;
  if (!e || !e->is_string()) throw Error(file, "spec.experiment", "missing or not a string");
  return e->get<std::string>();
}

}  // namespace

SweepResult run_sweep(const ExperimentSpec& spec, const SweepOptions& opts) {
  return run_sweep(spec, opts, find_experiment(spec.experiment, spec.path));
}

SweepResult run_sweep(const ExperimentSpec& spec, const SweepOptions& opts, const ExperimentKind& kind) {
  if (opts.out_dir.empty()) throw Error(spec.path, "", "no output directory given", ErrorKind::Usage);
  fs::path out = opts.out_dir;
  if (opts.device != "cpu") {
    if (!kind.device_aware)
      throw Error(spec.path, "--device", "experiment '" + kind.name + "' runs on the CPU only", ErrorKind::Usage);
    training_device(opts.device);  // a usage error when there is no such device
  }
  std::vector<GridPoint> points = expand_grid(spec, opts.reduced);
  // Every point's config against the kind's keys, before anything is written or run.
  check_grid_configs(spec, kind, points, opts.reduced);
  if (opts.only_index && *opts.only_index >= points.size())
    throw Error(spec.path, "", "grid index " + std::to_string(*opts.only_index) + " out of range (" +
                                   std::to_string(points.size()) + " points: 0.." +
                                   std::to_string(points.size() - 1) + ")", ErrorKind::Usage);
  json sj = grid_json(spec, points, opts.reduced);
  fs::path sweep_file = out / "sweep.json";

  std::error_code ec;
  if (!fs::exists(sweep_file, ec) && (fs::exists(out / "args.yaml", ec) || fs::exists(out / "checkpoints", ec)))
    throw Error(out.string(), "",
                "holds a training run of ttt-sweep train (args.yaml, checkpoints/), not a sweep: give another --out",
                ErrorKind::Usage);
  make_output_dir((out / "runs").string(), "--out");
  const DirLock lock(out.string(), /*shared=*/opts.only_index.has_value(), kSweepInUse);
  if (fs::exists(sweep_file)) {
    json old = parse_json_file(sweep_file.string());
    if (!old.is_object()) throw Error(sweep_file.string(), "", "expected a JSON object (a sweep.json of ttt-sweep)");
    if (auto f = old.find("format"); f != old.end() && *f != "moshi-ttt/sweep/1")
      throw Error(sweep_file.string(), "format", "expected \"moshi-ttt/sweep/1\", got " + io::json_brief(*f));
    const std::string old_kind = sweep_experiment(old, sweep_file.string());
    bool same = old.value("points", json()) == sj["points"] && old.value("configs", json()) == sj["configs"];
    if (opts.force) {
      fs::remove_all(out / "runs");
      fs::create_directories(out / "runs");
    } else if (!opts.resume) {
      throw Error(sweep_file.string(), "",
                  "output directory already holds a sweep: pass --resume to continue it or --force to start over",
                  ErrorKind::Usage);
    } else if (old_kind != spec.experiment) {
      throw Error(sweep_file.string(), "",
                  "this directory holds a sweep of experiment '" + old_kind + "', the spec runs '" + spec.experiment +
                      "'; use another --out (or --force to start over)",
                  ErrorKind::Usage);
    } else if (!same) {
      throw Error(sweep_file.string(), "", "the spec's grid differs from the sweep in this directory; use another --out",
                  ErrorKind::Usage);
    }
  }
  if (!fs::exists(sweep_file) || opts.force) write_file_atomic(sweep_file.string(), sj.dump(2));

  std::vector<std::size_t> todo;
  SweepResult r;
  std::vector<std::optional<RunResult>> results(points.size());
  for (const auto& p : points) {
    if (opts.only_index && *opts.only_index != p.index) continue;
    fs::path dir = out / "runs" / p.id;
    if (auto done = load_result(dir / "result.json", p.id)) {
      results[p.index] = *done;
      ++r.reused;
    } else {
      todo.push_back(p.index);
    }
  }
  Progress overall(spec.name, todo.size(), opts.progress, "point");
  const int jobs = std::max(1, std::min<int>(opts.jobs, static_cast<int>(std::max<std::size_t>(todo.size(), 1))));
  // Planned for the jobs asked for (not fewer when few points are left): what the user sees stays
  // one setting per --jobs.
  const int threads = opts.threads > 0 ? opts.threads : plan_threads(opts.jobs, 0, available_cores()).threads;
  std::mutex mu;
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  auto worker = [&] {
    // Per thread: OpenMP keeps the thread count of each thread apart.
    at::set_num_threads(threads);
    while (true) {
      std::size_t k = next++;
      if (k >= todo.size()) return;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (failure) return;
      }
      const GridPoint& p = points[todo[k]];
      fs::path dir = out / "runs" / p.id;
      try {
        // An incomplete run dir (killed mid-run) is discarded: its result was never committed.
        fs::remove_all(dir);
        make_output_dir(dir.string());
        write_file_atomic((dir / "config.json").string(), p.config.dump(2));
        RunContext ctx{p, dir, opts.progress && opts.jobs == 1, opts.device};
        RunResult res = kind.run(ctx);
        write_file_atomic((dir / "result.json").string(),
                          json({{"id", p.id}, {"overrides", p.overrides}, {"metrics", res.metrics},
                                {"evidence", res.evidence}, {"moshi_ttt", build_info()}, {"device", opts.device},
                                {"threads", at::get_num_threads()}, {"jobs", jobs}})
                              .dump(2));
        std::lock_guard<std::mutex> lock(mu);
        results[p.index] = std::move(res);
        overall.advance();
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failure) failure = std::current_exception();
      }
    }
  };
  std::vector<std::thread> workers;
  for (int i = 1; i < jobs; ++i) workers.emplace_back(worker);
  worker();
  for (auto& t : workers) t.join();
  overall.finish();
  if (failure) std::rethrow_exception(failure);

  for (const auto& p : points)
    if (results[p.index]) r.points.push_back({p, *results[p.index]});
  if (opts.only_index) return r;  // one Slurm task: the summary is made by `ttt-sweep summarize`
  r.verdict = verdict_of(kind, r.points, r.reused, out);
  write_summaries(out, spec.experiment, spec.metrics, r);
  return r;
}

SweepResult summarize_sweep(const std::string& out_dir, const ExperimentKind* kind_override) {
  fs::path out = out_dir;
  fs::path sweep_file = out / "sweep.json";
  if (!fs::exists(sweep_file)) throw Error(out_dir, "", "not a sweep output directory (no sweep.json)");
  const DirLock lock(out.string(), /*shared=*/false, kSweepInUse);
  json sj = parse_json_file(sweep_file.string());
  if (!sj.is_object()) throw Error(sweep_file.string(), "", "expected a JSON object (a sweep.json of ttt-sweep)");
  std::string experiment = sweep_experiment(sj, sweep_file.string());
  const ExperimentKind& kind = kind_override ? *kind_override : find_experiment(experiment, sweep_file.string());
  std::vector<std::string> declared;
  if (auto m = sj.find("metrics"); m != sj.end()) {
    if (!m->is_array()) throw Error(sweep_file.string(), "metrics", "expected a list of names");
    for (const auto& e : *m) {
      if (!e.is_string()) throw Error(sweep_file.string(), "metrics", "expected a list of names, got " + io::json_brief(e));
      declared.push_back(e.get<std::string>());
    }
  }
  SweepResult r;
  std::vector<std::string> missing;
  for (auto& p : points_from_sweep_json(sj, sweep_file.string())) {
    if (auto res = load_result(out / "runs" / p.id / "result.json", p.id))
      r.points.push_back({p, *res});
    else
      missing.push_back(p.id);
  }
  if (!missing.empty())
    throw Error(out_dir, missing.front(), std::to_string(missing.size()) + " grid point(s) have no result yet");
  r.reused = r.points.size();
  r.verdict = verdict_of(kind, r.points, r.reused, out);
  write_summaries(out, experiment, declared, r);
  return r;
}

std::string format_sweep_table(const SweepResult& r) {
  auto axes = axis_columns(r.points);
  auto metrics = metric_columns(r.points, {});
  std::vector<std::string> header = {"id"};
  header.insert(header.end(), axes.begin(), axes.end());
  header.insert(header.end(), metrics.begin(), metrics.end());
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : r.points) {
    std::vector<std::string> row = {p.point.id.substr(0, 4)};
    for (const auto& a : axes) row.push_back(scalar_text(p.point.overrides[a]));
    for (const auto& m : metrics) {
      const json& v = p.result.metrics.contains(m) ? p.result.metrics[m] : json(nullptr);
      if (v.is_number()) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.4g", v.get<double>());
        row.push_back(buf);
      } else {
        row.push_back(v.is_null() ? "-" : scalar_text(v));
      }
    }
    rows.push_back(row);
  }
  std::vector<std::size_t> w(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) {
    w[i] = header[i].size();
    for (const auto& row : rows) w[i] = std::max(w[i], row[i].size());
  }
  std::ostringstream os;
  auto line = [&](const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      os << cells[i] << std::string(w[i] - cells[i].size(), ' ');
      if (i + 1 < cells.size()) os << "  ";
    }
    os << "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
  os << "\nverdict (" << r.verdict.status << "): " << r.verdict.text << "\n";
  return os.str();
}

}  // namespace mtt::experiments
