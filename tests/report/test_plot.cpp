// The plotting module: line charts, scatters and heatmaps written as PNG, decoded with libpng
// and checked where the data should (and should not) have left ink; non-finite values; errors
// that name the path and leave nothing behind.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/plot.h"
#include "report/png_test_util.h"

namespace elastic {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
const PlotColour kWhite{1, 1, 1};
const PlotColour kRed = plot_colour_hex(0xE15759);

// The smallest distance to `want` among the pixels within `radius` of (x, y): a 2-pixel line
// drawn with antialiasing covers at least one of them fully.
double nearest_distance(const DecodedPng& img, double x, double y, PlotColour want,
                        int radius = 1) {
  double best = 10;
  for (int dy = -radius; dy <= radius; ++dy)
    for (int dx = -radius; dx <= radius; ++dx)
      best = std::min(best, colour_distance(img.at(x + dx, y + dy), want));
  return best;
}

PlotPanel line_panel(std::vector<double> x, std::vector<double> y) {
  PlotPanel p;
  p.title = "rising", p.x_label = "step", p.y_label = "loss";
  PlotSeries s;
  s.colour = kRed;
  s.x = std::move(x), s.y = std::move(y);
  p.series = {s};
  return p;
}

TEST(PlotLine, RisingSeriesLeavesInkOnItsLineAndNowhereNear) {
  const std::string path = plot_temp_dir("rising") + "/rising.png";
  PlotFigure f;
  std::vector<double> x, y;
  for (int i = 0; i <= 10; ++i) x.push_back(i), y.push_back(i);
  f.panels = {line_panel(x, y)};
  f.panels[0].x_min = 0, f.panels[0].x_max = 10, f.panels[0].y_min = 0, f.panels[0].y_max = 10;
  const std::vector<PlotArea> areas = plot_write_png(f, path);
  ASSERT_EQ(areas.size(), 1u);
  const DecodedPng img = png_decode(path);
  EXPECT_EQ(img.width, f.panel_width);
  EXPECT_EQ(img.height, f.panel_height);
  const PlotArea& a = areas[0];
  EXPECT_GT(a.width, 0.6 * f.panel_width);
  EXPECT_GT(a.height, 0.6 * f.panel_height);
  EXPECT_EQ(a.x_max, 10);
  EXPECT_EQ(a.y_max, 10);
  for (double t : {0.7, 2.3, 4.5, 6.1, 8.8}) {
    EXPECT_LT(nearest_distance(img, a.x_pixel(t), a.y_pixel(t), kRed), 0.1)
        << "on the line, x " << t;
    // 15 pixels above and below the line: no red.
    EXPECT_GT(nearest_distance(img, a.x_pixel(t), a.y_pixel(t) - 15, kRed), 0.5) << t;
    EXPECT_GT(nearest_distance(img, a.x_pixel(t), a.y_pixel(t) + 15, kRed), 0.5) << t;
  }
  // Outside the axes (the margins) there is no red either.
  EXPECT_GT(nearest_distance(img, 3, 3, kRed), 0.5);
}

TEST(PlotLine, LimitsFromTheDataAreRoundAndContainIt) {
  const std::string path = plot_temp_dir("limits") + "/limits.png";
  PlotFigure f;
  f.panels = {line_panel({3, 47, 993}, {2.31, 0.42, 1.87})};
  const PlotArea a = plot_write_png(f, path)[0];
  EXPECT_LE(a.x_min, 3);
  EXPECT_GE(a.x_max, 993);
  EXPECT_LE(a.y_min, 0.42);
  EXPECT_GE(a.y_max, 2.31);
  // Widened to round values (multiples of the tick step), not to the data's own digits.
  EXPECT_DOUBLE_EQ(a.x_min, 0);
  EXPECT_DOUBLE_EQ(a.x_max, 1000);
  EXPECT_NEAR(a.y_max * 10, std::round(a.y_max * 10), 1e-9);
}

TEST(PlotLine, NonFiniteValuesAreGapsNotCrashes) {
  const std::string path = plot_temp_dir("gaps") + "/gaps.png";
  PlotFigure f;
  f.panels = {line_panel({0, 1, 2, 3, 4}, {0, 1, kNaN, 3, 4})};
  f.panels[0].x_min = 0, f.panels[0].x_max = 4, f.panels[0].y_min = 0, f.panels[0].y_max = 4;
  const PlotArea a = plot_write_png(f, path)[0];
  const DecodedPng img = png_decode(path);
  for (double t : {0.5, 3.5})
    EXPECT_LT(nearest_distance(img, a.x_pixel(t), a.y_pixel(t), kRed), 0.1) << "segment at " << t;
  for (double t : {1.5, 2.5})
    EXPECT_GT(nearest_distance(img, a.x_pixel(t), a.y_pixel(t), kRed), 0.5) << "gap at " << t;
}

TEST(PlotLine, HostileValuesDrawAValidPng) {
  // NaN, infinities, values at the ends of double's range, zero and negatives on a log axis,
  // a panel whose every value is NaN, inverted explicit limits: a PNG, never a crash.
  const std::string dir = plot_temp_dir("hostile");
  const std::vector<double> x = {kNaN, kInf, -kInf, 1e308, -1e308, 0, -1, 2};
  const std::vector<double> y = {1, 2, 3, 1e308, -1e308, 0, -1, kInf};
  for (bool log_y : {false, true}) {
    PlotFigure f;
    f.panels = {line_panel(x, y), line_panel({1, 2}, {kNaN, kNaN}), line_panel({5}, {5})};
    f.panels[2].x_min = 3, f.panels[2].x_max = 1;  // inverted: ignored, limits from the data
    for (PlotPanel& p : f.panels) p.log_y = log_y;
    const std::string path = dir + (log_y ? "/log.png" : "/linear.png");
    const std::vector<PlotArea> areas = plot_write_png(f, path);
    const DecodedPng img = png_decode(path);
    EXPECT_EQ(img.width, 2 * f.panel_width);
    for (const PlotArea& a : areas) {
      EXPECT_TRUE(std::isfinite(a.x_min) && std::isfinite(a.x_max) && a.x_min < a.x_max);
      EXPECT_TRUE(std::isfinite(a.y_min) && std::isfinite(a.y_max) && a.y_min < a.y_max);
      EXPECT_TRUE(!log_y || a.y_min > 0);
    }
  }
}

TEST(PlotLine, DashedTargetLineHasDashesAndGaps) {
  const std::string path = plot_temp_dir("dashed") + "/dashed.png";
  PlotFigure f;
  PlotPanel p = line_panel({0, 10}, {0.55, 0.55});  // not on a grid line
  p.series[0].dash = PlotDash::dashed;
  p.series[0].name = "target";
  p.x_min = 0, p.x_max = 10, p.y_min = 0, p.y_max = 1;
  f.panels = {p};
  const PlotArea a = plot_write_png(f, path)[0];
  const DecodedPng img = png_decode(path);
  int ink = 0, paper = 0;
  const double y = a.y_pixel(0.55);
  for (double x = a.left + 20; x < a.left + a.width / 2; x += 1) {  // the left half: no legend
    const double d = std::min(colour_distance(img.at(x, y - 0.5), kRed),
                              colour_distance(img.at(x, y + 0.5), kRed));
    ink += d < 0.15;
    paper += d > 0.8;
  }
  const int n = static_cast<int>(a.width / 2 - 20);
  EXPECT_GT(ink, n / 4) << "dashes";
  EXPECT_GT(paper, n / 5) << "gaps between dashes";
}

TEST(PlotScatter, MarkersSitOnThePointsInTheirSeriesColours) {
  const std::string path = plot_temp_dir("scatter") + "/scatter.png";
  PlotPanel p;
  p.title = "accuracy vs \u03a9", p.x_label = "\u03a9_{MSR}", p.y_label = "accuracy (%)";
  PlotSeries dense, elastic;
  dense.name = "dense", dense.x = {0.0}, dense.y = {97.5};
  elastic.name = "elastic", elastic.x = {0.31, 0.52}, elastic.y = {96.0, 71.0};
  dense.line = false, elastic.line = false;
  elastic.point_labels = {"niah", "kv"};
  p.series = {dense, elastic};
  PlotFigure f;
  f.panels = {p};
  const PlotArea a = plot_write_png(f, path)[0];
  const DecodedPng img = png_decode(path);
  EXPECT_LT(colour_distance(img.at(a.x_pixel(0.0), a.y_pixel(97.5)), plot_palette(0)), 0.05);
  EXPECT_LT(colour_distance(img.at(a.x_pixel(0.31), a.y_pixel(96.0)), plot_palette(1)), 0.05);
  EXPECT_LT(colour_distance(img.at(a.x_pixel(0.52), a.y_pixel(71.0)), plot_palette(1)), 0.05);
  // Points are inside the axes, not on their edges (a margin around the data).
  EXPECT_GT(a.x_pixel(0.0), a.left + 3);
  EXPECT_LT(a.x_pixel(0.52), a.left + a.width - 3);
  EXPECT_GT(a.y_pixel(97.5), a.top + 3);
  EXPECT_LT(a.y_pixel(71.0), a.top + a.height - 3);
}

TEST(PlotFigureGrid, PanelsFillRowsThenColumns) {
  const std::string path = plot_temp_dir("grid") + "/grid.png";
  PlotFigure f;
  f.title = "training";
  f.columns = 2;
  f.panels = {line_panel({0, 1}, {0, 1}), line_panel({0, 1}, {1, 0}), line_panel({0, 1}, {1, 1})};
  f.panels[1].log_y = true;
  const std::vector<PlotArea> areas = plot_write_png(f, path);
  const DecodedPng img = png_decode(path);
  EXPECT_EQ(img.width, 2 * f.panel_width);
  EXPECT_GT(img.height, 2 * f.panel_height);  // and the title
  ASSERT_EQ(areas.size(), 3u);
  EXPECT_GT(areas[1].left, f.panel_width);
  EXPECT_LT(areas[2].left, f.panel_width);
  EXPECT_GT(areas[2].top, areas[0].top + f.panel_height - 1);
}

TEST(PlotHeatmap, ContinuousCellsFollowTheColourMapAndNaNIsNa) {
  const std::string path = plot_temp_dir("heat") + "/heat.png";
  Heatmap m;
  m.title = "rho", m.x_label = "query head", m.y_label = "layer", m.value_label = "rho";
  m.rows = 2, m.columns = 3;
  m.values = {0, 0.5, 1, kNaN, 0.25, -kInf};
  const HeatmapLayout l = plot_write_heatmap_png(m, path);
  const DecodedPng img = png_decode(path);
  EXPECT_EQ(img.width, l.width);
  EXPECT_EQ(img.height, l.height);
  auto cell = [&](int r, int c) {  // a pixel near the cell's corner, clear of any cell text
    return img.at(l.left + c * l.cell_width + 4, l.top + r * l.cell_height + 4);
  };
  EXPECT_LT(colour_distance(cell(0, 0), plot_colour_hex(0x440154)), 0.02);  // viridis(0)
  EXPECT_LT(colour_distance(cell(0, 2), plot_colour_hex(0xFDE725)), 0.02);  // viridis(1)
  EXPECT_LT(colour_distance(cell(1, 0), plot_na_colour()), 0.01);
  EXPECT_LT(colour_distance(cell(1, 2), plot_na_colour()), 0.01);
  EXPECT_GT(colour_distance(cell(0, 1), plot_na_colour()), 0.3);
  // The legend shows the n/a swatch right of the grid.
  bool na_in_legend = false;
  for (int y = 0; y < img.height; ++y)
    for (int x = static_cast<int>(l.left + 3 * l.cell_width + 2); x < img.width; ++x)
      na_in_legend |= colour_distance(img.at(x, y), plot_na_colour()) < 0.01;
  EXPECT_TRUE(na_in_legend);
  // A white grid line between cells.
  EXPECT_LT(colour_distance(img.at(l.left + l.cell_width, l.top + 4), kWhite), 0.01);
}

TEST(PlotHeatmap, CategoriesColourCellsAndOutOfRangeIsNa) {
  const std::string path = plot_temp_dir("cat") + "/cat.png";
  Heatmap m;
  m.rows = 2, m.columns = 2;
  m.categories = {{"a", plot_colour_hex(0x2B5C9E)}, {"b", plot_colour_hex(0xF28E2B)}};
  m.category = {0, 1, 7, -1};
  m.cell_text = {"x", "y", "", "z"};
  const HeatmapLayout l = plot_write_heatmap_png(m, path);
  const DecodedPng img = png_decode(path);
  auto cell = [&](int r, int c) {
    return img.at(l.left + c * l.cell_width + 4, l.top + r * l.cell_height + 4);
  };
  EXPECT_LT(colour_distance(cell(0, 0), m.categories[0].colour), 0.01);
  EXPECT_LT(colour_distance(cell(0, 1), m.categories[1].colour), 0.01);
  EXPECT_LT(colour_distance(cell(1, 0), plot_na_colour()), 0.01);
  EXPECT_LT(colour_distance(cell(1, 1), plot_na_colour()), 0.01);
}

template <typename F>
void expect_error_naming(F&& f, const std::string& path, const std::string& also = "") {
  try {
    f();
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(also), std::string::npos) << e.what();
  }
}

TEST(PlotErrors, InconsistentFiguresNameThePath) {
  const std::string path = plot_temp_dir("bad") + "/bad.png";
  PlotFigure f;
  expect_error_naming([&] { plot_write_png(f, path); }, path, "no panels");
  f.panels = {line_panel({1, 2, 3}, {1, 2})};
  expect_error_naming([&] { plot_write_png(f, path); }, path, "3 x values for 2 y values");
  f.panels = {line_panel({1, 2}, {1, 2})};
  f.panels[0].series[0].point_labels = {"one"};
  expect_error_naming([&] { plot_write_png(f, path); }, path, "point labels");
  Heatmap m;
  expect_error_naming([&] { plot_write_heatmap_png(m, path); }, path, "0 x 0 cells");
  m.rows = 2, m.columns = 2, m.values = {1, 2, 3};
  expect_error_naming([&] { plot_write_heatmap_png(m, path); }, path, "3 values, expected 4");
  m.values.push_back(4), m.row_labels = {"only one"};
  expect_error_naming([&] { plot_write_heatmap_png(m, path); }, path, "row labels");
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(PlotErrors, UnwritablePathThrowsNamingItAndLeavesNothing) {
  const std::string dir = plot_temp_dir("unwritable");
  PlotFigure f;
  f.panels = {line_panel({0, 1}, {0, 1})};
  // A folder that does not exist.
  const std::string missing = dir + "/no/such/folder/curves.png";
  expect_error_naming([&] { plot_write_png(f, missing); }, missing);
  // A path whose parent is a regular file.
  write_file_atomic(dir + "/file", "x");
  const std::string under_file = dir + "/file/curves.png";
  expect_error_naming([&] { plot_write_png(f, under_file); }, under_file);
  // A target that is a non-empty folder: the temporary file is written, the rename fails, and
  // the temporary file is removed again.
  std::filesystem::create_directories(dir + "/taken.png/inside");
  expect_error_naming([&] { plot_write_png(f, dir + "/taken.png"); }, dir + "/taken.png");
  Heatmap m;
  m.rows = 1, m.columns = 1, m.values = {1};
  expect_error_naming([&] { plot_write_heatmap_png(m, dir + "/taken.png"); }, dir + "/taken.png");
  std::vector<std::string> left = dir_entries(dir);
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"file", "taken.png"}));
  EXPECT_TRUE(std::filesystem::is_directory(dir + "/taken.png/inside"));
}

TEST(PlotErrors, RewritingReplacesTheFileWhole) {
  const std::string dir = plot_temp_dir("rewrite");
  const std::string path = dir + "/curves.png";
  PlotFigure f;
  f.panels = {line_panel({0, 1}, {0, 1})};
  plot_write_png(f, path);
  f.panel_width = 300;
  plot_write_png(f, path);
  EXPECT_EQ(png_decode(path).width, 300);
  EXPECT_EQ(dir_entries(dir), std::vector<std::string>{"curves.png"});
}

}  // namespace
}  // namespace elastic
