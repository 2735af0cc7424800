// ttt-infer's real-time factor (wall seconds per audio second; < 1 is faster than real time) for
// the whole speech-to-speech loop (Mimi streaming encode, LMGen step with the depformer, Mimi
// streaming decode) on models with random weights: the tiny Moshi-TTT, the 300M shape with 3 TTT
// layers and, on a GPU, the moshiko 7B shape in bf16 with 3 TTT layers (issue: RTF <= 0.5 on an H100).
// The per-component ratios against PyPI moshi are moshi_bench's and mimi_bench's.
//
//   infer_bench [--preset tiny,medium_300m] [--seconds S] [--ttt-layers SPEC] [--dtype f32|bf16]
//               [--device cpu|cuda] [--threads N] [--json]
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "infer/infer.h"
#include "io/audio.h"

int main(int argc, char** argv) {
  CLI::App app{"infer_bench: real-time factor of ttt-infer's loop on random-weight models"};
  std::vector<std::string> presets{"tiny", "medium_300m"};
  double seconds = 0;
  std::string ttt_layers, dtype = "f32", device = "cpu";
  int threads = 0;
  bool json = false;
  app.add_option("--preset", presets, "tiny, medium_300m, moshiko_7b")->delimiter(',');
  app.add_option("--seconds", seconds, "audio length (default: 8 s tiny, 4 s others)");
  app.add_option("--ttt-layers", ttt_layers, "TTT layers of the non-tiny presets (default: the 3 middle layers)");
  app.add_option("--dtype", dtype, "LM dtype")->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  app.add_option("--threads", threads, "intra-op threads (0: LibTorch default)");
  app.add_flag("--json", json, "print JSON");
  CLI11_PARSE(app, argc, argv);
  try {
    if (threads > 0) at::set_num_threads(threads);
    namespace fs = std::filesystem;
    const fs::path tmp = fs::temp_directory_path() / ("infer_bench_" + std::to_string(::getpid()));
    fs::create_directories(tmp);
    nlohmann::json all = nlohmann::json::array();
    for (const auto& preset : presets) {
      const double s = seconds > 0 ? seconds : (preset == "tiny" ? 8.0 : 4.0);
      std::vector<float> pcm(static_cast<size_t>(s * 24000));
      for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = static_cast<float>(0.3 * std::sin(0.03 * static_cast<double>(i)));
      const fs::path in = tmp / "in.wav", out = tmp / "out.wav";
      mtt::io::write_wav(in.string(), pcm, 1, 24000);
      mtt::infer::InferOptions o;
      o.input = in.string();
      o.output = out.string();
      if (preset == "tiny") {
        o.tiny = true;
      } else {
        o.random_preset = preset;
        // Three TTT layers in the middle, as the user's 7B runs ("29,30,31" of 32 is the fork's
        // example; the middle keeps the same count for any depth).
        const int64_t n = preset == "moshiko_7b" ? 32 : 16;
        o.ttt_layers = !ttt_layers.empty() ? ttt_layers
                                           : std::to_string(n / 2 - 1) + "," + std::to_string(n / 2) + "," +
                                                 std::to_string(n / 2 + 1);
      }
      o.dtype = dtype;
      o.device = device;
      o.progress = !json;
      o.threads = threads;
      std::ostringstream log;
      auto r = mtt::infer::run_inference(o, log);
      nlohmann::json j = {{"preset", preset},          {"ttt_layers", preset == "tiny" ? "all" : o.ttt_layers},
                          {"dtype", dtype},            {"device", device},
                          {"threads", at::get_num_threads()}, {"audio_seconds", r.audio_seconds},
                          {"frames", r.frames},        {"wall_seconds", r.wall_seconds},
                          {"rtf", r.rtf},              {"ms_per_frame", 1000.0 * r.wall_seconds / std::max<int64_t>(1, r.frames)}};
      all.push_back(j);
      if (!json)
        std::printf("%-12s ttt %-8s %s %s: %.1f s audio in %.2f s wall, RTF %.3f (%.1f ms/frame, 80 ms = real time)\n",
                    preset.c_str(), j["ttt_layers"].get<std::string>().c_str(), dtype.c_str(), device.c_str(),
                    r.audio_seconds, r.wall_seconds, r.rtf, j["ms_per_frame"].get<double>());
    }
    fs::remove_all(tmp);
    if (json) std::cout << all.dump(2) << "\n";
    return 0;
  } catch (const mtt::Error& e) {
    std::fprintf(stderr, "infer_bench: %s\n", e.what());
    return e.exit_status();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "infer_bench: %s\n", e.what());
    return mtt::kExitInternal;
  }
}
