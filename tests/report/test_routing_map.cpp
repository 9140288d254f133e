// The routing map (issue 13 items 5 and 14): FA and SA heads in clearly distinct colours whatever
// the router's confidence, the probability as cell text, readable cells, and a NaN router logit
// drawn as an n/a cell instead of a crash.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/report.h"
#include "report/png_test_util.h"

namespace elastic {
namespace {

// The (SA, retrieval) logit pair whose retrieval probability is p.
std::vector<float> logits_for(double p) { return {0.f, static_cast<float>(std::log(p / (1 - p)))}; }

std::vector<float> concat(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

// 2 layers x 2 KV heads: layer 0 FA (p = 0.527, barely retrieval) + SSA (p = 0.2), layer 1 SSA
// (p = 0.4) + FA (p = 0.99).
RequestReport two_by_two() {
  RequestReport r;
  r.tokens = 150, r.layers = 2, r.heads = 4, r.kv_heads = 2, r.head_dim = 8;
  r.decisions = {{1, 0}, {0, 1}};
  r.modes = {{AttnMode::fa, AttnMode::ssa}, {AttnMode::ssa, AttnMode::fa}};
  r.router_logits = {concat(logits_for(0.527), logits_for(0.2)),
                     concat(logits_for(0.4), logits_for(0.99))};
  r.rho = {{0, 0, 0.6, 0.6}, {0.6, 0.6, 0, 0}};
  r.omega_msr = 0.5;
  return r;
}

struct Map {
  Heatmap heatmap;
  HeatmapLayout layout;
  DecodedPng image;
  PlotColour cell(int r, int c) const {  // near the top-left corner, clear of the cell text
    return image.at(layout.left + c * layout.cell_width + 3,
                    layout.top + r * layout.cell_height + 3);
  }
};

Map draw(const RequestReport& r, const std::string& name) {
  Map m;
  const std::string path = plot_temp_dir("routing_" + name) + "/map.png";
  m.heatmap = report_routing_heatmap(r);
  m.layout = plot_write_heatmap_png(m.heatmap, path);
  m.image = png_decode(path);
  return m;
}

TEST(RoutingMap, FaAndSaHeadsAreClearlyDistinctWhateverTheProbability) {
  const Map m = draw(two_by_two(), "distinct");
  const PlotColour fa_barely = m.cell(0, 0), sa = m.cell(0, 1), sa2 = m.cell(1, 0),
                   fa_sure = m.cell(1, 1);
  // Colour is by decision: p = 0.527 looks like p = 0.99, not like the sparse heads.
  EXPECT_LT(colour_distance(fa_barely, fa_sure), 0.02);
  EXPECT_LT(colour_distance(sa, sa2), 0.02);
  EXPECT_GT(colour_distance(fa_barely, sa), 0.6);
  EXPECT_GT(fa_barely.b, fa_barely.r + 0.2);  // blue retrieval
  EXPECT_GT(sa.r, sa.b + 0.2);                // orange sparse
  // The probability is in the cell, the modes in the legend.
  EXPECT_EQ(m.heatmap.cell_text, (std::vector<std::string>{"0.53", "0.20", "0.40", "0.99"}));
  EXPECT_EQ(m.heatmap.categories[0].name, "sparse (SSA)");
  EXPECT_EQ(m.heatmap.categories[1].name, "retrieval (FA)");
  EXPECT_NE(m.heatmap.title.find("\u03a9_{MSR} = 0.500"), std::string::npos) << m.heatmap.title;
  EXPECT_EQ(m.heatmap.x_label, "KV head");
  EXPECT_EQ(m.heatmap.y_label, "layer");
}

TEST(RoutingMap, ReadableSize) {
  const Map m = draw(two_by_two(), "size");
  EXPECT_GE(m.layout.cell_width, 28);
  EXPECT_GE(m.layout.cell_height, 28);
  EXPECT_GE(m.image.width, 300);  // labels, legend and title beside a 2 x 2 grid
  EXPECT_GE(m.image.height, 150);
}

TEST(RoutingMap, WriterDrawsTheSameMap) {
  const std::string dir = plot_temp_dir("routing_writer");
  const RequestReport r = two_by_two();
  report_write_routing_map_png(r, dir + "/a.png");
  plot_write_heatmap_png(report_routing_heatmap(r), dir + "/b.png");
  EXPECT_EQ(read_file(dir + "/a.png"), read_file(dir + "/b.png"));
}

TEST(RoutingMap, NonFiniteRouterLogitIsAnNaCellNotACrash) {
  // Issue 13 item 5: a NaN router logit went through std::clamp into a colour-table index.
  RequestReport r = two_by_two();
  r.router_logits[0][0] = std::numeric_limits<float>::quiet_NaN();  // layer 0, head 0: SA logit
  r.router_logits[1][3] = std::numeric_limits<float>::infinity();   // layer 1, head 1: retrieval
  const Map m = draw(r, "nan");
  EXPECT_LT(colour_distance(m.cell(0, 0), plot_na_colour()), 0.01);
  EXPECT_LT(colour_distance(m.cell(1, 1), plot_na_colour()), 0.01);
  EXPECT_GT(colour_distance(m.cell(0, 1), plot_na_colour()), 0.3);
  EXPECT_EQ(m.heatmap.cell_text[0], "n/a");
  EXPECT_EQ(m.heatmap.cell_text[3], "n/a");
  EXPECT_NE(m.heatmap.na_label.find("non-finite"), std::string::npos);
  // Every logit NaN: still a map.
  for (auto& row : r.router_logits)
    for (float& v : row) v = std::numeric_limits<float>::quiet_NaN();
  const Map all = draw(r, "all_nan");
  EXPECT_LT(colour_distance(all.cell(1, 0), plot_na_colour()), 0.01);
  report_write_routing_map_png(r, plot_temp_dir("routing_nan_writer") + "/map.png");
}

TEST(RoutingMap, StaticRoutingShowsTheModes) {
  RequestReport r = two_by_two();
  r.router_logits = {{}, {}};
  r.modes = {{AttnMode::fa, AttnMode::xa}, {AttnMode::xa, AttnMode::fa}};
  const Map m = draw(r, "static");
  EXPECT_EQ(m.heatmap.cell_text, (std::vector<std::string>{"FA", "XA", "XA", "FA"}));
  EXPECT_EQ(m.heatmap.categories[0].name, "sparse (XA)");
  EXPECT_GT(colour_distance(m.cell(0, 0), m.cell(0, 1)), 0.6);
}

TEST(RoutingMap, EmptyReportThrowsNamingThePath) {
  RequestReport r;
  const std::string path = plot_temp_dir("routing_empty") + "/map.png";
  try {
    report_write_routing_map_png(r, path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace elastic
