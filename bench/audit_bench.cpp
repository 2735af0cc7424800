// audit_bench: throughput (GB/s) and peak RSS of the checkpoint audit on a generated multi-GB
// bf16 checkpoint of a Moshi-TTT model (fork hybrid layout, real key names), against a plain
// sequential read of the same file (the I/O ceiling) in the same run.
//
//   audit_bench [--gb 3] [--dir /tmp] [--keep] [--json]
//
// The file is written in a streaming way (never held in memory) and evicted from the page cache
// (posix_fadvise DONTNEED) before each measured pass; each pass runs in a child process so its
// peak RSS (wait4 ru_maxrss, file-backed pages included) is its own.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "audit/audit.h"
#include "audit/stats.h"
#include "core/dtype.h"
#include "core/error.h"
#include "moshi/schema.h"

namespace m = mtt::moshi;

namespace {

m::SchemaConfig bench_config(double gb) {
  // moshiko-like widths at dim 2048; layers added until the bf16 file reaches `gb`.
  m::SchemaConfig c = m::SchemaConfig::moshiko_7b();
  c.dim = 2048;
  c.num_heads = 16;
  c.dim_feedforward = static_cast<int64_t>(4.125 * 2048);
  c.ttt.variant = m::TTTVariant::fork_hybrid;
  c.ttt.ttt_heads = 16;
  c.ttt.initial_gating_alpha = 0.3;
  for (int64_t n = 4;; n += 2) {
    c.num_layers = n;
    c.ttt.layers.clear();
    for (int64_t l = n / 4; l < 3 * n / 4; ++l) c.ttt.layers.push_back(static_cast<int>(l));
    if (2.0 * static_cast<double>(m::declare_parameters(c).total_params()) >= gb * 1e9 || n > 400) return c;
  }
}

void write_file(const std::string& path, const m::ModelSchema& s) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& p : s.params) {
    const uint64_t nb = 2 * static_cast<uint64_t>(p.numel());
    h[p.name] = {{"dtype", "BF16"}, {"shape", p.shape}, {"data_offsets", {off, off + nb}}};
    off += nb;
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs.push_back(' ');
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw mtt::Error(path, "", "cannot create");
  const uint64_t n = hs.size();
  std::fwrite(&n, 8, 1, f);
  std::fwrite(hs.data(), 1, hs.size(), f);
  // A 8 MiB pool of N(0, 0.02)-like bf16 values (xorshift, sum of uniforms), rotated per tensor.
  std::vector<uint16_t> pool(4 << 20);
  uint64_t x = 88172645463325252ULL;
  for (auto& v : pool) {
    double u = 0;
    for (int k = 0; k < 4; ++k) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      u += static_cast<double>(x >> 11) / 9007199254740992.0;
    }
    v = mtt::float_to_bf16(static_cast<float>((u - 2.0) * 0.035));
  }
  const uint16_t c03 = mtt::float_to_bf16(0.3f), one = mtt::float_to_bf16(1.0f);
  std::vector<uint16_t> buf;
  std::size_t rot = 0;
  for (const auto& p : s.params) {
    uint64_t left = static_cast<uint64_t>(p.numel());
    const bool bwd = p.name.find("backward_ssm_gating") != std::string::npos;
    const bool gain = p.role == "norm_gain" && p.name.find("post_norm") != std::string::npos;
    while (left) {
      const uint64_t k = std::min<uint64_t>(left, pool.size() - rot % 1024);
      if (bwd || gain) {
        buf.assign(k, bwd ? c03 : one);  // backward gates at bf16(0.3), unused post_norm at 1
        std::fwrite(buf.data(), 2, k, f);
      } else {
        std::fwrite(pool.data() + rot % 1024, 2, k, f);
      }
      left -= k;
    }
    rot += 7;
  }
  std::fflush(f);
  ::fsync(fileno(f));
  std::fclose(f);
}

void evict(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

struct Pass {
  double seconds = 0;
  long max_rss_kb = 0;
  int status = 0;
  double audit_seconds = 0;
  uint64_t problems = 0;
};

// Runs fn in a child; the child writes two doubles back through a pipe.
template <class F>
Pass in_child(F fn) {
  int fds[2];
  if (::pipe(fds) != 0) throw mtt::Error("", "pipe", "failed", mtt::ErrorKind::Internal);
  const auto t0 = std::chrono::steady_clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    double out[2] = {0, 0};
    int st = 0;
    try {
      st = fn(out);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      st = 70;
    }
    if (::write(fds[1], out, sizeof out) != sizeof out) st = 70;
    ::_exit(st);
  }
  ::close(fds[1]);
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  Pass p;
  p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  p.max_rss_kb = ru.ru_maxrss;
  p.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  double out[2] = {0, 0};
  if (::read(fds[0], out, sizeof out) == sizeof out) {
    p.audit_seconds = out[0];
    p.problems = static_cast<uint64_t>(out[1]);
  }
  ::close(fds[0]);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"audit_bench: ttt-inspect throughput and peak RSS on a generated bf16 checkpoint"};
  double gb = 3.0;
  std::string dir = "/tmp";
  bool keep = false, json = false;
  app.add_option("--gb", gb, "checkpoint size in GB (1e9 bytes)");
  app.add_option("--dir", dir, "where to write it");
  app.add_flag("--keep", keep, "keep the file");
  app.add_flag("--json", json, "JSON output");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto cfg = bench_config(gb);
    const auto schema = m::declare_parameters(cfg);
    const std::string path = dir + "/audit_bench_" + std::to_string(::getpid()) + ".safetensors";
    const auto tw = std::chrono::steady_clock::now();
    write_file(path, schema);
    const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tw).count();
    const uint64_t size = std::filesystem::file_size(path);

    evict(path);
    const Pass read = in_child([&](double* out) {
      int fd = ::open(path.c_str(), O_RDONLY);
      std::vector<char> b(8 << 20);
      uint64_t sum = 0;
      ssize_t n;
      const auto t = std::chrono::steady_clock::now();
      while ((n = ::read(fd, b.data(), b.size())) > 0) sum += static_cast<unsigned char>(b[0]);
      out[0] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
      out[1] = static_cast<double>(sum & 1);
      ::close(fd);
      return 0;
    });
    evict(path);
    const Pass cold = in_child([&](double* out) {
      mtt::audit::AuditOptions o;
      o.checkpoint = path;
      const auto r = mtt::audit::run_audit(o);
      out[0] = r.seconds;
      out[1] = static_cast<double>(r.problems.size());
      return r.exit_status();
    });
    const Pass warm = in_child([&](double* out) {  // second pass: file in the page cache where RAM allows
      mtt::audit::AuditOptions o;
      o.checkpoint = path;
      const auto r = mtt::audit::run_audit(o);
      out[0] = r.seconds;
      out[1] = static_cast<double>(r.problems.size());
      return r.exit_status();
    });
    if (!keep) std::filesystem::remove(path);

    auto gbps = [&](double s) { return s > 0 ? static_cast<double>(size) / s / 1e9 : 0.0; };
    nlohmann::json j = {
        {"file_bytes", size},
        {"tensors", schema.params.size()},
        {"num_layers", cfg.num_layers},
        {"write_seconds", write_s},
        {"sequential_read", {{"seconds", read.audit_seconds}, {"gb_per_s", gbps(read.audit_seconds)}, {"max_rss_mb", read.max_rss_kb / 1024.0}}},
        {"audit_cold", {{"seconds", cold.audit_seconds}, {"gb_per_s", gbps(cold.audit_seconds)}, {"max_rss_mb", cold.max_rss_kb / 1024.0}, {"exit_status", cold.status}, {"problem_kinds", cold.problems}}},
        {"audit_warm", {{"seconds", warm.audit_seconds}, {"gb_per_s", gbps(warm.audit_seconds)}, {"max_rss_mb", warm.max_rss_kb / 1024.0}, {"exit_status", warm.status}}},
        {"stats_threads", std::thread::hardware_concurrency()},
        {"simd_kernel", mtt::audit::stats_simd_available()},
        {"rss_bound_note", "stats stream 1 MiB blocks on every core with 64 MiB read-ahead (MADV_WILLNEED, not "
                           "mapped) and release their pages: RSS ~ runtime + a few blocks"}};
    if (json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::printf("file %.2f GB, %zu tensors, %lld layers (written in %.1f s)\n", size / 1e9, schema.params.size(),
                  static_cast<long long>(cfg.num_layers), write_s);
      std::printf("sequential read : %6.2f s  %5.2f GB/s  peak RSS %7.1f MB\n", read.audit_seconds, gbps(read.audit_seconds), read.max_rss_kb / 1024.0);
      std::printf("audit (cold)    : %6.2f s  %5.2f GB/s  peak RSS %7.1f MB  exit %d\n", cold.audit_seconds, gbps(cold.audit_seconds), cold.max_rss_kb / 1024.0, cold.status);
      std::printf("audit (warm)    : %6.2f s  %5.2f GB/s  peak RSS %7.1f MB  exit %d\n", warm.audit_seconds, gbps(warm.audit_seconds), warm.max_rss_kb / 1024.0, warm.status);
    }
    return 0;
  } catch (const mtt::Error& e) {
    std::fprintf(stderr, "audit_bench: %s\n", e.what());
    return e.exit_status();
  }
}
