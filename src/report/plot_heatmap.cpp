// Heatmaps: a grid of cells with row and column labels, coloured by value through a colour map
// (with a colour bar) or by category (with a legend); optional text in each cell. A cell without
// a finite value or with a category out of range gets plot_na_colour(), listed in the legend.
#include <algorithm>
#include <cmath>

#include "elastic/error.h"
#include "elastic/plot.h"
#include "report/plot_draw.h"

namespace elastic {

using namespace plot_detail;

namespace {

constexpr double kPad = 14, kSwatch = 16, kLegendRow = 22, kBarWidth = 18;

void heatmap_check(const Heatmap& m, const std::string& path) {
  auto fail = [&](const std::string& what) { throw Error(path + ": heatmap: " + what); };
  if (m.rows < 1 || m.columns < 1 || m.rows > 4096 || m.columns > 4096)
    fail(std::to_string(m.rows) + " x " + std::to_string(m.columns) +
         " cells, expected 1 to 4096 rows and columns");
  const size_t cells = static_cast<size_t>(m.rows * m.columns);
  auto sized = [&](size_t n, size_t want, const char* what, bool optional) {
    if (n != want && !(optional && n == 0))
      fail(std::to_string(n) + " " + what + ", expected " + std::to_string(want));
  };
  if (m.categories.empty()) sized(m.values.size(), cells, "values", false);
  if (!m.categories.empty()) sized(m.category.size(), cells, "category indices", false);
  sized(m.cell_text.size(), cells, "cell texts", true);
  sized(m.row_labels.size(), static_cast<size_t>(m.rows), "row labels", true);
  sized(m.column_labels.size(), static_cast<size_t>(m.columns), "column labels", true);
  if (m.cell_width < 8 || m.cell_height < 8 || m.cell_width > 400 || m.cell_height > 400)
    fail("cells of " + std::to_string(m.cell_width) + " x " + std::to_string(m.cell_height) +
         " pixels, expected 8 to 400");
}

std::string row_label(const Heatmap& m, int64_t r) {
  return m.row_labels.empty() ? std::to_string(r) : m.row_labels[r];
}
std::string column_label(const Heatmap& m, int64_t c) {
  return m.column_labels.empty() ? std::to_string(c) : m.column_labels[c];
}

// The colour of each cell, and whether any is n/a.
struct CellColours {
  std::vector<PlotColour> fill;  // [rows * columns]
  bool any_na = false;
  double lo = 0, hi = 1;  // the continuous range
};

CellColours cell_colours(const Heatmap& m) {
  CellColours c;
  const size_t cells = static_cast<size_t>(m.rows * m.columns);
  c.fill.resize(cells);
  if (!m.categories.empty()) {
    for (size_t i = 0; i < cells; ++i) {
      const int k = m.category[i];
      const bool na = k < 0 || k >= static_cast<int>(m.categories.size());
      c.any_na |= na;
      c.fill[i] = na ? plot_na_colour() : m.categories[k].colour;
    }
    return c;
  }
  double lo = INFINITY, hi = -INFINITY;
  for (double v : m.values)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!(lo <= hi)) lo = 0, hi = 1;
  if (std::isfinite(m.value_min)) lo = m.value_min;
  if (std::isfinite(m.value_max)) hi = m.value_max;
  if (!(lo < hi)) lo -= 0.5, hi = lo + 1;
  c.lo = lo, c.hi = hi;
  for (size_t i = 0; i < cells; ++i) {
    const double v = m.values[i];
    c.any_na |= !std::isfinite(v);
    c.fill[i] =
        std::isfinite(v) ? colour_map(m.colour_map, (v - lo) / (hi - lo)) : plot_na_colour();
  }
  return c;
}

// The legend to the right of the grid: categories (or a colour bar), n/a, notes.
struct Legend {
  double width = 0, height = 0;
};

Legend legend_layout(cairo_t* cr, const Heatmap& m, const CellColours& cc, double bar_height) {
  const Font font{kLegendSize, false};
  Legend g;
  double rows = 0;
  if (!m.categories.empty()) {
    for (const HeatmapCategory& k : m.categories)
      g.width = std::max(g.width, kSwatch + 8 + text_width(cr, k.name, font));
    rows = static_cast<double>(m.categories.size());
    g.height = rows * kLegendRow;
  } else {
    const Ticks t = ticks_linear(cc.lo, cc.hi, 5, false);
    double tick_w = 0;
    for (double v : t.values) tick_w = std::max(tick_w, text_width(cr, tick_label(t, v), font));
    g.width = std::max(kBarWidth + 8 + tick_w, text_width(cr, m.value_label, font));
    g.height = (m.value_label.empty() ? 0 : kLegendRow) + bar_height + 10;
  }
  if (cc.any_na) {
    g.width = std::max(g.width, kSwatch + 8 + text_width(cr, m.na_label, font));
    g.height += kLegendRow;
  }
  if (!m.notes.empty()) g.height += 8;
  for (const std::string& note : m.notes) {
    g.width = std::max(g.width, text_width(cr, note, font));
    g.height += kLegendRow - 4;
  }
  return g;
}

void swatch_draw(cairo_t* cr, double x, double y, PlotColour c, const std::string& name) {
  cairo_rectangle(cr, x + 0.5, y + 0.5, kSwatch, kSwatch);
  set_colour(cr, c);
  cairo_fill_preserve(cr);
  set_colour(cr, kGrey);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  set_colour(cr, kInk);
  text_draw(cr, name, x + kSwatch + 8, y + kSwatch / 2, {kLegendSize, false}, Align::start,
            Align::centre);
}

void legend_draw(cairo_t* cr, const Heatmap& m, const CellColours& cc, double x, double y,
                 double bar_height) {
  const Font font{kLegendSize, false};
  if (!m.categories.empty()) {
    for (const HeatmapCategory& k : m.categories) {
      swatch_draw(cr, x, y, k.colour, k.name);
      y += kLegendRow;
    }
  } else {
    if (!m.value_label.empty()) {
      set_colour(cr, kInk);
      text_draw(cr, m.value_label, x, y, font, Align::start, Align::start);
      y += kLegendRow;
    }
    // The bar, high values at the top, one line per pixel row.
    for (int i = 0; i < static_cast<int>(bar_height); ++i) {
      set_colour(cr, colour_map(m.colour_map, 1.0 - i / std::max(1.0, bar_height - 1)));
      cairo_rectangle(cr, x, y + i, kBarWidth, 1);
      cairo_fill(cr);
    }
    const Ticks t = ticks_linear(cc.lo, cc.hi, 5, false);
    set_colour(cr, kInk);
    cairo_set_line_width(cr, 1);
    for (double v : t.values) {
      const double ty = std::round(y + (cc.hi - v) / (cc.hi - cc.lo) * (bar_height - 1)) + 0.5;
      cairo_move_to(cr, x + kBarWidth, ty), cairo_line_to(cr, x + kBarWidth + 4, ty);
      text_draw(cr, tick_label(t, v), x + kBarWidth + 7, ty, font, Align::start, Align::centre);
    }
    cairo_stroke(cr);
    y += bar_height + 10;
  }
  if (cc.any_na) {
    swatch_draw(cr, x, y, plot_na_colour(), m.na_label);
    y += kLegendRow;
  }
  if (!m.notes.empty()) y += 8;
  for (const std::string& note : m.notes) {
    set_colour(cr, kGrey);
    text_draw(cr, note, x, y, font, Align::start, Align::start);
    y += kLegendRow - 4;
  }
}

}  // namespace

HeatmapLayout plot_write_heatmap_png(const Heatmap& m, const std::string& path) {
  heatmap_check(m, path);
  const CellColours cc = cell_colours(m);
  const double cw = m.cell_width, ch = m.cell_height;
  const double grid_w = cw * m.columns, grid_h = ch * m.rows;
  const double bar_height = std::clamp(grid_h, 120.0, 320.0);

  // Measure the labels, then lay out: title; y label, row labels, grid, legend; column labels,
  // x label.
  Canvas probe = canvas_measure();
  const Font tick_font{kTickSize, false};
  double row_w = 0, column_w = 0;
  for (int64_t r = 0; r < m.rows; ++r)
    row_w = std::max(row_w, text_width(probe.cr(), row_label(m, r), tick_font));
  for (int64_t c = 0; c < m.columns; ++c)
    column_w = std::max(column_w, text_width(probe.cr(), column_label(m, c), tick_font));
  const bool columns_upright = column_w > cw - 4;  // long labels stand on end
  const Legend legend = legend_layout(probe.cr(), m, cc, bar_height);
  const double title_w = text_width(probe.cr(), m.title, {kTitleSize, true});

  HeatmapLayout out;
  out.cell_width = cw, out.cell_height = ch;
  out.left = std::round(kPad + (m.y_label.empty() ? 0 : kLabelSize + 12) + row_w + 8);
  out.top = std::round(kPad + (m.title.empty() ? 0 : kTitleSize + 16));
  const double legend_x = out.left + grid_w + 22;
  const double below =
      6 + (columns_upright ? column_w : kTickSize) + (m.x_label.empty() ? 0 : kLabelSize + 14);
  const double content_w = legend_x + legend.width + kPad;
  const double width = std::max(content_w, title_w + 2 * kPad);
  const double height = std::max(out.top + grid_h + below, out.top + legend.height) + kPad;
  // A title wider than the content centres the content under it.
  const double shift = std::round((width - content_w) / 2);
  out.left += shift;
  out.width = static_cast<int>(std::ceil(width)), out.height = static_cast<int>(std::ceil(height));
  if (out.width > 16384 || out.height > 16384)
    throw Error(path + ": heatmap of " + std::to_string(out.width) + " x " +
                std::to_string(out.height) + " pixels, too large: use smaller cells");

  Canvas canvas = canvas_create(out.width, out.height, path);
  cairo_t* cr = canvas.cr();
  set_colour(cr, kInk);
  if (!m.title.empty())
    text_draw(cr, m.title, width / 2, kPad, {kTitleSize, true}, Align::centre, Align::start);
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.columns; ++c) {
      const size_t i = static_cast<size_t>(r * m.columns + c);
      const double x = out.left + c * cw, y = out.top + r * ch;
      cairo_rectangle(cr, x + 1, y + 1, cw - 1, ch - 1);
      set_colour(cr, cc.fill[i]);
      cairo_fill(cr);
      if (m.cell_text.empty() || m.cell_text[i].empty()) continue;
      set_colour(cr, luminance(cc.fill[i]) < 0.5 ? PlotColour{1, 1, 1} : kInk);
      text_draw(cr, m.cell_text[i], x + (cw + 1) / 2, y + (ch + 1) / 2, {kCellTextSize, false},
                Align::centre, Align::centre);
    }
  set_colour(cr, kInk);
  for (int64_t r = 0; r < m.rows; ++r)
    text_draw(cr, row_label(m, r), out.left - 6, out.top + (r + 0.5) * ch + 0.5, tick_font,
              Align::end, Align::centre);
  for (int64_t c = 0; c < m.columns; ++c) {
    const double x = out.left + (c + 0.5) * cw + 0.5, y = out.top + grid_h + 6;
    if (columns_upright)
      text_draw(cr, column_label(m, c), x, y, tick_font, Align::end, Align::centre, -M_PI / 2);
    else
      text_draw(cr, column_label(m, c), x, y, tick_font, Align::centre, Align::start);
  }
  if (!m.x_label.empty())
    text_draw(cr, m.x_label, out.left + grid_w / 2, out.top + grid_h + below, {kLabelSize, false},
              Align::centre, Align::end);
  if (!m.y_label.empty())
    text_draw(cr, m.y_label, shift + kPad, out.top + grid_h / 2, {kLabelSize, false}, Align::centre,
              Align::start, -M_PI / 2);
  legend_draw(cr, m, cc, legend_x + shift, out.top, bar_height);
  canvas_write_png(canvas, path);
  return out;
}

}  // namespace elastic
