// Figures as PNG, drawn with Cairo in DejaVu Sans: line charts in a grid of panels (training
// curves), scatter plots with labelled points (accuracy against Omega), and heatmaps with a colour
// bar or categories (the routing map). Plain structs in, an atomically written PNG out.
//
// Invariants: a non-finite value never indexes anything. In a line chart it is a gap (and on a
// log axis so is a value <= 0); in a heatmap its cell gets plot_na_colour(). Either way the
// legend says how many there were. Errors (an inconsistent figure, a file that cannot be
// written) throw elastic::Error naming the output path; nothing is left behind on failure.
//
// Text may carry subscripts as `_{...}`: "Ω_{MSR}".
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace elastic {

struct PlotColour {
  double r = 0, g = 0, b = 0;  // each in [0, 1]
};

// 0xRRGGBB -> PlotColour.
PlotColour plot_colour_hex(uint32_t rgb);
// Series colour i (cycles through ten colours that stay apart in print and for most
// colour-blind readers; Tableau 10).
PlotColour plot_palette(size_t i);
// The colour of heatmap cells without a finite value (a light grey with no hue).
PlotColour plot_na_colour();

enum class PlotDash { solid, dashed };
enum class PlotMarker { none, circle, square, triangle, diamond };

struct PlotSeries {
  std::string name;                  // legend entry; empty: left out of the legend
  std::vector<double> x, y;          // [n] each
  std::optional<PlotColour> colour;  // default: plot_palette(index of the series in its panel)
  PlotDash dash = PlotDash::solid;
  bool line = true;                       // false: points only (a scatter)
  PlotMarker marker = PlotMarker::none;   // points only and none: a shape per series index
  std::vector<std::string> point_labels;  // [n] or empty: text beside each point
};

struct PlotPanel {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  bool log_y = false;
  // Axis limits; NaN: from the finite data, widened to round tick values.
  double x_min = std::numeric_limits<double>::quiet_NaN();
  double x_max = std::numeric_limits<double>::quiet_NaN();
  double y_min = std::numeric_limits<double>::quiet_NaN();
  double y_max = std::numeric_limits<double>::quiet_NaN();
};

struct PlotFigure {
  std::string title;                          // above all panels; empty: none
  std::vector<PlotPanel> panels;              // row by row
  int columns = 2;                            // panels per row (fewer when there are fewer panels)
  int panel_width = 460, panel_height = 320;  // pixels per panel, its titles and labels included
};

// Where a panel's data went, in pixels of the PNG (x to the right, y down).
struct PlotArea {
  double left = 0, top = 0, width = 0, height = 0;    // the rectangle inside the axes
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;  // the limits drawn, in data units
  bool log_y = false;
  double x_pixel(double x) const;
  double y_pixel(double y) const;
};

// False in a build without Cairo (-DELASTIC_PLOT=OFF), where every figure is an error: callers
// that draw optional figures (training curves) skip them there.
bool plot_available();

// Draws the figure and writes it atomically as PNG; returns the area of each panel.
std::vector<PlotArea> plot_write_png(const PlotFigure& figure, const std::string& path);

enum class PlotColourMap {
  viridis,            // sequential, dark violet (low) to yellow (high)
  blue_white_orange,  // diverging around the middle of the range
};

struct HeatmapCategory {
  std::string name;  // legend entry
  PlotColour colour;
};

// Rows top to bottom, columns left to right. Two modes:
// - continuous (categories empty): each cell coloured by `values` through colour_map over
//   [value_min, value_max], with a colour bar titled value_label;
// - categorical: each cell coloured by categories[category[i]], with a legend.
// A cell is n/a when its value is not finite (continuous) or its category is out of range.
struct Heatmap {
  std::string title, x_label, y_label;
  int64_t rows = 0, columns = 0;
  std::vector<std::string> row_labels, column_labels;  // [rows], [columns]; empty: 0, 1, 2, ...
  std::vector<double> values;                          // [rows * columns], row-major
  PlotColourMap colour_map = PlotColourMap::viridis;
  std::string value_label;
  double value_min = std::numeric_limits<double>::quiet_NaN();  // NaN: from the finite values
  double value_max = std::numeric_limits<double>::quiet_NaN();
  std::vector<HeatmapCategory> categories;
  std::vector<int> category;              // [rows * columns] when categories is not empty
  std::vector<std::string> cell_text;     // [rows * columns] or empty: written in each cell
  std::string na_label = "n/a";           // legend entry of n/a cells, shown when there are any
  std::vector<std::string> notes;         // lines under the legend
  int cell_width = 44, cell_height = 30;  // pixels
};

// Where the cells went: cell (r, c) spans [left + c * cell_width, + cell_width) x
// [top + r * cell_height, + cell_height), a 1-pixel white grid line included on its left and top.
struct HeatmapLayout {
  double left = 0, top = 0, cell_width = 0, cell_height = 0;
  int width = 0, height = 0;  // of the PNG
};

HeatmapLayout plot_write_heatmap_png(const Heatmap& heatmap, const std::string& path);

}  // namespace elastic
