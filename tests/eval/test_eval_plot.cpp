// The evaluation figure: per-kind means of accuracy and Omega_MSR, and markers drawn where those
// means are, in one colour per configuration across panels.
#include <gtest/gtest.h>
#include <unistd.h>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "report/png_test_util.h"

namespace elastic {
namespace {

std::vector<EvalResult> fake_results() {
  auto row = [](const char* task, int64_t length, const char* config, double acc, double omega) {
    EvalResult r;
    r.task = task, r.length = length, r.config = config, r.n = 10;
    r.accuracy = acc, r.omega_msr = omega;
    return r;
  };
  return {row("niah_single", 2048, "dense", 1.0, 0.0),
          row("niah_single", 2048, "all-sa", 0.0, 1.0),
          row("kv_retrieval", 2048, "dense", 0.5, 0.0),
          row("kv_retrieval", 2048, "all-sa", 0.2, 1.0),
          row("repeat_last_line", 2048, "dense", 1.0, 0.0),
          row("repeat_last_line", 2048, "all-sa", 0.9, 1.0),
          row("my_task", 0, "all-sa", 0.4, 1.0)};
}

TEST(EvalPlot, PointsAreMeansOverTheTasksOfAKind) {
  const std::vector<EvalPlotPoint> p = eval_plot_points(fake_results());
  ASSERT_EQ(p.size(), 5u);
  EXPECT_EQ(p[0].kind, 0);
  EXPECT_EQ(p[0].config, "dense");
  EXPECT_DOUBLE_EQ(p[0].accuracy, 0.75);
  EXPECT_DOUBLE_EQ(p[1].accuracy, 0.1);
  EXPECT_DOUBLE_EQ(p[1].omega_msr, 1.0);
  EXPECT_EQ(p[2].kind, 1);
  EXPECT_EQ(p[4].kind, 2);  // a task the suite does not know
  EXPECT_EQ(p[4].length, 0);
}

TEST(EvalPlot, MarkersSitOnTheMeansInTheConfigColours) {
  const std::string path = plot_temp_dir("eval_" + std::to_string(getpid())) + "/eval.png";
  const std::vector<PlotArea> areas = eval_plot_write_png(fake_results(), path, "suite");
  ASSERT_EQ(areas.size(), 3u);  // sensitive, robust, other
  const DecodedPng img = png_decode(path);
  auto colour_at = [&](size_t panel, double omega, double acc) {
    return img.at(areas[panel].x_pixel(omega), areas[panel].y_pixel(acc));
  };
  EXPECT_LT(colour_distance(colour_at(0, 0.0, 75.0), plot_palette(0)),
            0.05);  // dense
  EXPECT_LT(colour_distance(colour_at(0, 1.0, 10.0), plot_palette(1)),
            0.05);  // all-sa
  EXPECT_LT(colour_distance(colour_at(1, 1.0, 90.0), plot_palette(1)), 0.05);
  // all-sa keeps its colour in the panel where it is the only configuration.
  EXPECT_LT(colour_distance(colour_at(2, 1.0, 40.0), plot_palette(1)), 0.05);
  EXPECT_THROW(eval_plot_write_png({}, path), Error);
}

}  // namespace
}  // namespace elastic
