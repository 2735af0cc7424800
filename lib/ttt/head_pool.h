#pragma once
// The worker pool of the fused CPU scan (scan_cpu_fused.cpp): runs body(next) on
// at::get_num_threads() threads (the caller's included); next() hands out (batch, head) indices one
// at a time (-1 when none is left). Plain std::threads: at::parallel_for is header-only OpenMP and
// runs inline in a translation unit built without -fopenmp, as the scan's is. Dynamic rather than
// static chunks: one head's scan is a long sequential job, and on a shared machine a descheduled
// thread would otherwise hold back the whole call with its fixed share. Each thread runs its BLAS
// calls single-threaded (MKL would otherwise start its own team per GEMM). An exception in a worker
// stops the hand-out and is rethrown in the caller.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

#include "ttt/scan_cpu_kernels.h"

namespace mtt::ttt {

template <typename Body>
void for_each_head(int64_t BH, Body&& body) {
  std::atomic<int64_t> counter{0};
  auto next = [&]() -> int64_t {
    const int64_t i = counter.fetch_add(1, std::memory_order_relaxed);
    return i < BH ? i : -1;
  };
  const int64_t workers = std::min<int64_t>(BH, at::get_num_threads());
  if (workers <= 1) {
    body(next);  // one worker: BLAS may use LibTorch's threads itself
    return;
  }
  cpu::NoOpenMpTeams no_teams;
  std::vector<std::exception_ptr> errors(workers);
  auto run = [&](int64_t t) {
    try {
      cpu::SingleThreadBlas single;
      body(next);
    } catch (...) {
      errors[t] = std::current_exception();
      counter.store(BH);  // stop handing out heads
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  for (int64_t t = 1; t < workers; ++t) threads.emplace_back(run, t);
  run(0);
  for (auto& th : threads) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace mtt::ttt
