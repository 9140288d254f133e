// Line charts and scatter plots: a grid of panels, each with round ticks, a light grid, series
// with a legend in the emptiest corner. Non-finite points (and y <= 0 on a log axis) are gaps;
// they are counted, never mapped to pixels.
#include <algorithm>
#include <array>
#include <cmath>

#include "elastic/error.h"
#include "elastic/plot.h"
#include "report/plot_draw.h"

namespace elastic {

using namespace plot_detail;

namespace {

constexpr double kPad = 10, kTickLength = 4, kLineWidth = 2, kMarkerSize = 9;

bool point_drawable(const PlotPanel& p, double x, double y) {
  return std::isfinite(x) && std::isfinite(y) && (!p.log_y || y > 0);
}

bool panel_has_points(const PlotPanel& p) {
  return std::any_of(p.series.begin(), p.series.end(),
                     [](const PlotSeries& s) { return !s.line || s.marker != PlotMarker::none; });
}

// Axis limits from the finite data (or as given), then round ticks.
struct PanelAxes {
  Ticks x, y;
  int gaps = 0;  // points not drawn
};

PanelAxes panel_axes(const PlotPanel& p, double width, double height) {
  PanelAxes a;
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const PlotSeries& s : p.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!point_drawable(p, s.x[i], s.y[i])) {
        ++a.gaps;
        continue;
      }
      x_lo = std::min(x_lo, s.x[i]), x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
    }
  // Beyond +-1e300 the span itself would overflow; such points are drawn at the edge.
  x_lo = std::max(x_lo, -1e300), x_hi = std::min(x_hi, 1e300);
  y_lo = std::max(y_lo, -1e300), y_hi = std::min(y_hi, 1e300);
  if (!(x_lo <= x_hi)) x_lo = 0, x_hi = 1;
  if (!(y_lo <= y_hi)) y_lo = p.log_y ? 1 : 0, y_hi = p.log_y ? 10 : 1;
  // Points get a 5 % margin and limits that are not rounded (no marker cut in half on an edge,
  // no empty tick interval beside the data). Lines get limits rounded out to the next ticks.
  const bool points = panel_has_points(p);
  const double margin = points ? 0.05 : 0;
  auto spread = [&](double& lo, double& hi, bool log) {
    if (log) {
      if (lo == hi) lo /= 2, hi *= 2;
      const double f = std::pow(hi / lo, margin);
      lo /= f, hi *= f;
      return;
    }
    if (hi - lo <= 1e-12 * std::max({1.0, std::fabs(lo), std::fabs(hi)})) {
      const double pad = lo != 0 ? std::fabs(lo) * 0.1 : 1;
      lo -= pad, hi += pad;
    }
    const double m = (hi - lo) * margin;
    lo -= m, hi += m;
  };
  const double data_y_lo = y_lo, data_y_hi = y_hi;
  spread(x_lo, x_hi, false);
  spread(y_lo, y_hi, p.log_y);
  const bool x_given = std::isfinite(p.x_min) && std::isfinite(p.x_max) && p.x_min < p.x_max;
  const bool y_given = std::isfinite(p.y_min) && std::isfinite(p.y_max) && p.y_min < p.y_max &&
                       (!p.log_y || p.y_min > 0);
  if (x_given) x_lo = p.x_min, x_hi = p.x_max;
  if (y_given) y_lo = p.y_min, y_hi = p.y_max;
  const int x_count = std::max(3, static_cast<int>(width / 90));
  const int y_count = std::max(3, static_cast<int>(height / 55));
  a.x = ticks_linear(x_lo, x_hi, x_count, !x_given && !points);
  const bool y_widen = !y_given && !points;
  a.y = p.log_y ? ticks_log(y_lo, y_hi, y_widen) : ticks_linear(y_lo, y_hi, y_count, y_widen);
  if (y_widen) {  // a line on the top or bottom edge would be half hidden by it: 3 % more room
    auto f = [&](double v) { return p.log_y ? std::log10(v) : v; };
    auto f_inv = [&](double v) { return p.log_y ? std::pow(10.0, v) : v; };
    const double lo = f(a.y.lo), hi = f(a.y.hi), room = 0.03 * (hi - lo);
    if (f(data_y_hi) > hi - room / 3) a.y.hi = f_inv(hi + room);
    if (f(data_y_lo) < lo + room / 3) a.y.lo = f_inv(lo - room);
  }
  return a;
}

// Pixel coordinates far outside the canvas would overflow Cairo's fixed-point numbers.
double clamp_pixel(double v) { return std::isnan(v) ? 0 : std::clamp(v, -1e5, 1e5); }

void marker_path(cairo_t* cr, PlotMarker m, double x, double y, double size) {
  const double r = size / 2;
  switch (m) {
    case PlotMarker::none:
      return;
    case PlotMarker::circle:
      cairo_new_sub_path(cr);
      cairo_arc(cr, x, y, r, 0, 2 * M_PI);
      return;
    case PlotMarker::square:
      cairo_rectangle(cr, x - r * 0.9, y - r * 0.9, 1.8 * r, 1.8 * r);
      return;
    case PlotMarker::triangle:
      cairo_move_to(cr, x, y - 1.15 * r);
      cairo_line_to(cr, x + 1.1 * r, y + 0.8 * r);
      cairo_line_to(cr, x - 1.1 * r, y + 0.8 * r);
      cairo_close_path(cr);
      return;
    case PlotMarker::diamond:
      cairo_move_to(cr, x, y - 1.25 * r);
      cairo_line_to(cr, x + r, y);
      cairo_line_to(cr, x, y + 1.25 * r);
      cairo_line_to(cr, x - r, y);
      cairo_close_path(cr);
      return;
  }
}

void marker_draw(cairo_t* cr, PlotMarker m, double x, double y, PlotColour c) {
  marker_path(cr, m, x, y, kMarkerSize);
  set_colour(cr, c);
  cairo_fill_preserve(cr);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
}

// How a series looks once defaults are applied.
struct SeriesStyle {
  PlotColour colour;
  PlotMarker marker;
};

SeriesStyle series_style(const PlotSeries& s, size_t index) {
  static constexpr std::array<PlotMarker, 4> kShapes = {PlotMarker::circle, PlotMarker::square,
                                                        PlotMarker::triangle, PlotMarker::diamond};
  SeriesStyle st{s.colour.value_or(plot_palette(index)), s.marker};
  if (!s.line && st.marker == PlotMarker::none) st.marker = kShapes[index % kShapes.size()];
  return st;
}

void series_draw(cairo_t* cr, const PlotPanel& p, const PlotSeries& s, SeriesStyle st,
                 const PlotArea& area) {
  const size_t n = s.x.size();
  auto ok = [&](size_t i) { return i < n && point_drawable(p, s.x[i], s.y[i]); };
  auto px = [&](size_t i) { return clamp_pixel(area.x_pixel(s.x[i])); };
  auto py = [&](size_t i) { return clamp_pixel(area.y_pixel(s.y[i])); };
  set_colour(cr, st.colour);
  if (s.line) {
    cairo_set_line_width(cr, kLineWidth);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    const double dash[] = {7, 5};
    cairo_set_dash(cr, dash, s.dash == PlotDash::dashed ? 2 : 0, 0);
    for (size_t i = 0; i < n; ++i) {
      if (!ok(i)) continue;
      const bool starts = i == 0 || !ok(i - 1);
      if (starts) cairo_move_to(cr, px(i), py(i));
      if (!starts) cairo_line_to(cr, px(i), py(i));
      if (starts && !ok(i + 1) && st.marker == PlotMarker::none) {  // a lone point: a dot
        cairo_new_sub_path(cr);
        cairo_arc(cr, px(i), py(i), 0.75 * kLineWidth, 0, 2 * M_PI);
      }
    }
    cairo_stroke(cr);
    cairo_set_dash(cr, nullptr, 0, 0);
  }
  for (size_t i = 0; i < n; ++i)
    if (ok(i)) marker_draw(cr, st.marker, px(i), py(i), st.colour);
}

void point_labels_draw(cairo_t* cr, const PlotPanel& p, const PlotSeries& s, const PlotArea& area) {
  for (size_t i = 0; i < s.point_labels.size(); ++i) {
    if (!point_drawable(p, s.x[i], s.y[i]) || s.point_labels[i].empty()) continue;
    const double x = area.x_pixel(s.x[i]), y = area.y_pixel(s.y[i]);
    if (x < area.left || x > area.left + area.width || y < area.top || y > area.top + area.height)
      continue;
    set_colour(cr, kInk);
    text_draw(cr, s.point_labels[i], x + 7, y - 5, {11, false}, Align::start, Align::end);
  }
}

// Pixels the panel's data covers: its points, and its lines every few pixels.
std::vector<std::array<double, 2>> panel_ink(const PlotPanel& p, const PlotArea& area) {
  std::vector<std::array<double, 2>> ink;
  for (const PlotSeries& s : p.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!point_drawable(p, s.x[i], s.y[i])) continue;
      const double x = clamp_pixel(area.x_pixel(s.x[i])), y = clamp_pixel(area.y_pixel(s.y[i]));
      ink.push_back({x, y});
      if (!s.line || i == 0 || !point_drawable(p, s.x[i - 1], s.y[i - 1])) continue;
      const double x0 = clamp_pixel(area.x_pixel(s.x[i - 1]));
      const double y0 = clamp_pixel(area.y_pixel(s.y[i - 1]));
      const int steps = std::min(1000, static_cast<int>(std::hypot(x - x0, y - y0) / 4));
      for (int k = 1; k < steps; ++k)
        ink.push_back({x0 + (x - x0) * k / steps, y0 + (y - y0) * k / steps});
    }
  return ink;
}

// The legend box goes into the corner of the area that covers the fewest data points.
void legend_draw(cairo_t* cr, const PlotPanel& p, const PlotArea& area, int gaps) {
  struct Entry {
    std::string text;
    const PlotSeries* series;
    SeriesStyle style;
  };
  std::vector<Entry> entries;
  for (size_t i = 0; i < p.series.size(); ++i)
    if (!p.series[i].name.empty())
      entries.push_back({p.series[i].name, &p.series[i], series_style(p.series[i], i)});
  if (gaps > 0)
    entries.push_back(
        {std::to_string(gaps) + " non-finite value" + (gaps > 1 ? "s" : "") + " (gaps)",
         nullptr,
         {}});
  if (entries.empty()) return;
  const Font font{kLegendSize, false};
  const double row = 18, sample = 26, inner = 7;
  double text_w = 0;
  for (const Entry& e : entries) text_w = std::max(text_w, text_width(cr, e.text, font));
  const double w = inner + sample + 6 + text_w + inner, h = 2 * inner + row * entries.size() - 4;
  const std::array<std::array<double, 2>, 4> corners = {{
      {area.left + area.width - w - 6, area.top + 6},
      {area.left + 6, area.top + 6},
      {area.left + area.width - w - 6, area.top + area.height - h - 6},
      {area.left + 6, area.top + area.height - h - 6},
  }};
  const std::vector<std::array<double, 2>> ink = panel_ink(p, area);
  size_t best = 0, best_count = SIZE_MAX;
  for (size_t c = 0; c < corners.size(); ++c) {
    size_t count = 0;
    for (const auto& [x, y] : ink)
      count += x >= corners[c][0] - 4 && x <= corners[c][0] + w + 4 && y >= corners[c][1] - 4 &&
               y <= corners[c][1] + h + 4;
    if (count < best_count) best = c, best_count = count;
  }
  const double x0 = corners[best][0], y0 = corners[best][1];
  cairo_rectangle(cr, x0, y0, w, h);
  cairo_set_source_rgba(cr, 1, 1, 1, 0.88);
  cairo_fill_preserve(cr);
  set_colour(cr, kGrid);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  for (size_t k = 0; k < entries.size(); ++k) {
    const Entry& e = entries[k];
    const double y = y0 + inner + row * k + 6, xs = x0 + inner;
    if (e.series) {
      if (e.series->line) {
        const double dash[] = {5, 3};
        cairo_set_dash(cr, dash, e.series->dash == PlotDash::dashed ? 2 : 0, 0);
        set_colour(cr, e.style.colour);
        cairo_set_line_width(cr, kLineWidth);
        cairo_move_to(cr, xs, y);
        cairo_line_to(cr, xs + sample, y);
        cairo_stroke(cr);
        cairo_set_dash(cr, nullptr, 0, 0);
      }
      marker_draw(cr, e.style.marker, xs + sample / 2, y, e.style.colour);
    }
    set_colour(cr, e.series ? kInk : kGrey);
    text_draw(cr, e.text, xs + sample + 6, y, font, Align::start, Align::centre);
  }
}

PlotArea panel_draw(cairo_t* cr, const PlotPanel& p, double ox, double oy, double pw, double ph) {
  const double top = oy + kPad + (p.title.empty() ? 4 : kPanelTitleSize + 12);
  const double bottom = oy + ph - kPad - kTickLength - 4 - kTickSize - (p.x_label.empty() ? 0 : 22);
  PanelAxes axes = panel_axes(p, pw - 80, bottom - top);
  const Font tick_font{kTickSize, false};
  double tick_w = 0;
  for (double v : axes.y.values)
    tick_w = std::max(tick_w, text_width(cr, tick_label(axes.y, v), tick_font));
  PlotArea a;
  a.left = ox + kPad + (p.y_label.empty() ? 0 : kLabelSize + 10) + tick_w + 6 + kTickLength;
  a.top = top;
  a.width = ox + pw - kPad - 14 - a.left;
  a.height = bottom - top;
  a.x_min = axes.x.lo, a.x_max = axes.x.hi, a.y_min = axes.y.lo, a.y_max = axes.y.hi;
  a.log_y = p.log_y;
  if (a.width < 10 || a.height < 10) return a;  // too small to draw into

  if (!p.title.empty()) {
    set_colour(cr, kInk);
    text_draw(cr, p.title, a.left + a.width / 2, oy + kPad, {kPanelTitleSize, true}, Align::centre,
              Align::start);
  }
  // Grid, then the data clipped to the area, then axes and labels on top.
  cairo_set_line_width(cr, 1);
  set_colour(cr, kGrid);
  for (double v : axes.x.values) {
    const double x = std::round(a.x_pixel(v)) + 0.5;
    cairo_move_to(cr, x, a.top), cairo_line_to(cr, x, a.top + a.height);
  }
  for (double v : axes.y.values) {
    const double y = std::round(a.y_pixel(v)) + 0.5;
    cairo_move_to(cr, a.left, y), cairo_line_to(cr, a.left + a.width, y);
  }
  cairo_stroke(cr);
  cairo_save(cr);
  cairo_rectangle(cr, a.left, a.top, a.width, a.height);
  cairo_clip(cr);
  for (size_t i = 0; i < p.series.size(); ++i)
    series_draw(cr, p, p.series[i], series_style(p.series[i], i), a);
  cairo_restore(cr);
  for (const PlotSeries& s : p.series) point_labels_draw(cr, p, s, a);

  set_colour(cr, kInk);
  cairo_set_line_width(cr, 1);
  const double x_axis = std::round(a.top + a.height) + 0.5, y_axis = std::round(a.left) - 0.5;
  cairo_move_to(cr, y_axis, a.top), cairo_line_to(cr, y_axis, x_axis);
  cairo_line_to(cr, a.left + a.width, x_axis);
  for (double v : axes.x.values) {
    const double x = std::round(a.x_pixel(v)) + 0.5;
    cairo_move_to(cr, x, x_axis), cairo_line_to(cr, x, x_axis + kTickLength);
    text_draw(cr, tick_label(axes.x, v), x, x_axis + kTickLength + 3, tick_font, Align::centre,
              Align::start);
  }
  for (double v : axes.y.values) {
    const double y = std::round(a.y_pixel(v)) + 0.5;
    cairo_move_to(cr, y_axis, y), cairo_line_to(cr, y_axis - kTickLength, y);
    text_draw(cr, tick_label(axes.y, v), y_axis - kTickLength - 3, y, tick_font, Align::end,
              Align::centre);
  }
  cairo_stroke(cr);
  if (!p.x_label.empty())
    text_draw(cr, p.x_label, a.left + a.width / 2, oy + ph - kPad, {kLabelSize, false},
              Align::centre, Align::end);
  if (!p.y_label.empty())
    text_draw(cr, p.y_label, ox + kPad, a.top + a.height / 2, {kLabelSize, false}, Align::centre,
              Align::start, -M_PI / 2);
  legend_draw(cr, p, a, axes.gaps);
  return a;
}

void figure_check(const PlotFigure& f, const std::string& path) {
  if (f.panels.empty()) throw Error(path + ": a figure with no panels");
  if (f.columns < 1)
    throw Error(path + ": columns " + std::to_string(f.columns) + ", expected >= 1");
  if (f.panel_width < 120 || f.panel_height < 100)
    throw Error(path + ": panels of " + std::to_string(f.panel_width) + " x " +
                std::to_string(f.panel_height) + " pixels, expected at least 120 x 100");
  for (const PlotPanel& p : f.panels)
    for (const PlotSeries& s : p.series) {
      const std::string where = path + ": panel '" + p.title + "', series '" + s.name + "': ";
      if (s.x.size() != s.y.size())
        throw Error(where + std::to_string(s.x.size()) + " x values for " +
                    std::to_string(s.y.size()) + " y values");
      if (!s.point_labels.empty() && s.point_labels.size() != s.x.size())
        throw Error(where + std::to_string(s.point_labels.size()) + " point labels for " +
                    std::to_string(s.x.size()) + " points");
    }
}

}  // namespace

bool plot_available() { return true; }

std::vector<PlotArea> plot_write_png(const PlotFigure& figure, const std::string& path) {
  figure_check(figure, path);
  const int n = static_cast<int>(figure.panels.size());
  const int cols = std::min(figure.columns, n), rows = (n + cols - 1) / cols;
  const int title_h = figure.title.empty() ? 0 : 36;
  const int64_t width = int64_t(cols) * figure.panel_width;
  const int64_t height = title_h + int64_t(rows) * figure.panel_height;
  Canvas canvas = canvas_create(static_cast<int>(std::min<int64_t>(width, INT32_MAX)),
                                static_cast<int>(std::min<int64_t>(height, INT32_MAX)), path);
  cairo_t* cr = canvas.cr();
  if (!figure.title.empty()) {
    set_colour(cr, kInk);
    text_draw(cr, figure.title, width / 2.0, 12, {kTitleSize, true}, Align::centre, Align::start);
  }
  std::vector<PlotArea> areas;
  for (int i = 0; i < n; ++i) {
    const double ox = (i % cols) * figure.panel_width;
    const double oy = title_h + (i / cols) * figure.panel_height;
    areas.push_back(
        panel_draw(cr, figure.panels[i], ox, oy, figure.panel_width, figure.panel_height));
  }
  canvas_write_png(canvas, path);
  return areas;
}

}  // namespace elastic
