// A tensor registered under two names (the fork's duplicate original_layer.* copies) is one
// parameter: the run equals the run with the tensor registered once, and both names are saved.
#include <gtest/gtest.h>

#include "experiments/trainer.h"
#include "io/checkpoint.h"
#include "test_util.h"

namespace mtt::experiments {
namespace {

TEST(Trainer, AliasedParameterIsUpdatedOnce) {
  at::manual_seed(0);
  const at::Tensor x = at::randn({8, 3}), y = at::randn({8, 2}), w0 = at::randn({2, 3});
  TrainConfig cfg;
  cfg.max_steps = 3;
  cfg.lr = 0.1;
  cfg.max_norm = 0.5;
  auto run = [&](bool alias, const std::string& dir) {
    at::Tensor w = w0.clone().requires_grad_(true);
    NamedParams p = {{"layer.weight", w}};
    if (alias) p.push_back({"layer.copy.weight", w});
    auto r = train(p, cfg, [&](int, int) { return StepLoss{(at::matmul(x, w.t()) - y).pow(2).mean(), 8}; }, dir,
                   nlohmann::json::object(), {},
                   false);
    return std::make_pair(w.detach().clone(), r.history.back().grad_norm);
  };
  test::TempDir dir;
  auto [once, gn_once] = run(false, "");
  auto [twice, gn_twice] = run(true, (dir / "run").string());
  EXPECT_TRUE(at::equal(once, twice));
  EXPECT_EQ(gn_once, gn_twice);
  auto ck = io::Checkpoint::open((dir / "run").string());
  EXPECT_EQ(ck.keys().size(), 2u);
}

}  // namespace
}  // namespace mtt::experiments
