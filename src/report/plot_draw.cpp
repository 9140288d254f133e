// Drawing helpers shared by the figures (see plot_draw.h).
#include "report/plot_draw.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "elastic/error.h"
#include "elastic/fileio.h"

namespace elastic::plot_detail {

// Cairo's image surfaces hold up to 32767 pixels a side; a figure larger than this is a mistake.
constexpr int kMaxSide = 16384;

Canvas canvas_create(int width, int height, const std::string& path) {
  if (width < 1 || height < 1 || width > kMaxSide || height > kMaxSide)
    throw Error(path + ": a figure of " + std::to_string(width) + " x " + std::to_string(height) +
                " pixels, expected 1 to " + std::to_string(kMaxSide) + " a side");
  Canvas c;
  c.width = width, c.height = height;
  c.surface.reset(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height));
  c.context.reset(cairo_create(c.surface.get()));
  if (cairo_status(c.cr()) != CAIRO_STATUS_SUCCESS)
    throw Error(path + ": cannot draw: " + cairo_status_to_string(cairo_status(c.cr())));
  cairo_font_options_t* fo = cairo_font_options_create();
  cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
  cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
  cairo_set_font_options(c.cr(), fo);
  cairo_font_options_destroy(fo);
  cairo_set_source_rgb(c.cr(), 1, 1, 1);
  cairo_paint(c.cr());
  return c;
}

Canvas canvas_measure() { return canvas_create(1, 1, "(text measurement)"); }

void canvas_write_png(Canvas& canvas, const std::string& path) {
  cairo_status_t st = cairo_status(canvas.cr());
  if (st != CAIRO_STATUS_SUCCESS)
    throw Error(path + ": cannot draw: " + cairo_status_to_string(st));
  cairo_surface_flush(canvas.surface.get());
  std::string bytes;
  auto append = [](void* out, const unsigned char* data, unsigned n) {
    static_cast<std::string*>(out)->append(reinterpret_cast<const char*>(data), n);
    return CAIRO_STATUS_SUCCESS;
  };
  st = cairo_surface_write_to_png_stream(canvas.surface.get(), append, &bytes);
  if (st != CAIRO_STATUS_SUCCESS)
    throw Error(path + ": cannot encode the PNG: " + cairo_status_to_string(st));
  write_file_atomic(path, bytes);
}

void set_colour(cairo_t* cr, PlotColour c) { cairo_set_source_rgb(cr, c.r, c.g, c.b); }

double luminance(PlotColour c) { return 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b; }

PlotColour mix(PlotColour a, PlotColour b, double t) {
  return {a.r + t * (b.r - a.r), a.g + t * (b.g - a.g), a.b + t * (b.b - a.b)};
}

namespace {

struct TextRun {
  std::string text;
  bool subscript;
};

// "Ω_{MSR} = 0.5" -> {"Ω", normal}, {"MSR", subscript}, {" = 0.5", normal}.
std::vector<TextRun> text_runs(const std::string& s) {
  std::vector<TextRun> runs;
  std::string plain;
  for (size_t i = 0; i < s.size();) {
    const size_t close = s.compare(i, 2, "_{") == 0 ? s.find('}', i + 2) : std::string::npos;
    if (close == std::string::npos) {
      plain += s[i++];
      continue;
    }
    if (!plain.empty()) runs.push_back({plain, false});
    plain.clear();
    runs.push_back({s.substr(i + 2, close - i - 2), true});
    i = close + 1;
  }
  if (!plain.empty()) runs.push_back({plain, false});
  return runs;
}

constexpr double kSubscriptScale = 0.72, kSubscriptDrop = 0.22;

void font_set(cairo_t* cr, Font font, bool subscript) {
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                         font.bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, subscript ? font.size * kSubscriptScale : font.size);
}

double run_width(cairo_t* cr, const TextRun& run, Font font) {
  font_set(cr, font, run.subscript);
  cairo_text_extents_t e;
  cairo_text_extents(cr, run.text.c_str(), &e);
  return e.x_advance;
}

}  // namespace

double text_width(cairo_t* cr, const std::string& text, Font font) {
  double w = 0;
  for (const TextRun& run : text_runs(text)) w += run_width(cr, run, font);
  return w;
}

void text_draw(cairo_t* cr, const std::string& text, double x, double y, Font font, Align h,
               Align v, double angle) {
  if (!std::isfinite(x) || !std::isfinite(y) || text.empty()) return;
  const std::vector<TextRun> runs = text_runs(text);
  double width = 0;
  for (const TextRun& run : runs) width += run_width(cr, run, font);
  // Cap height stands in for the ascent, so centred text looks centred on digits and capitals.
  const double ascent = 0.73 * font.size, descent = 0.2 * font.size;
  double pen = h == Align::start ? 0 : h == Align::centre ? -width / 2 : -width;
  const double baseline = v == Align::start ? ascent : v == Align::centre ? ascent / 2 : -descent;
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, angle);
  for (const TextRun& run : runs) {
    font_set(cr, font, run.subscript);
    cairo_move_to(cr, pen, baseline + (run.subscript ? kSubscriptDrop * font.size : 0));
    cairo_show_text(cr, run.text.c_str());
    pen += run_width(cr, run, font);
  }
  cairo_restore(cr);
}

namespace {

// 1, 2 or 5 times a power of ten, nearest to raw (> 0).
double nice_step(double raw) {
  const double e = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / e;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * e;
}

}  // namespace

Ticks ticks_linear(double lo, double hi, int count, bool widen) {
  Ticks t;
  t.lo = lo, t.hi = hi;
  const double step = nice_step((hi - lo) / std::max(1, count));
  if (!std::isfinite(step) || step <= 0) {  // a range beyond double's: two plain ticks
    t.values = {lo, hi};
    return t;
  }
  const double first = (widen ? std::floor(lo / step) : std::ceil(lo / step - 1e-9)) * step;
  const double last = (widen ? std::ceil(hi / step) : std::floor(hi / step + 1e-9)) * step;
  if (widen) t.lo = first, t.hi = last;
  const int n = static_cast<int>(std::lround((last - first) / step));
  for (int i = 0; i <= std::min(n, 100); ++i) {
    double v = first + i * step;
    if (std::fabs(v) < step * 1e-9) v = 0;  // no "-0.0"
    t.values.push_back(v);
  }
  t.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return t;
}

Ticks ticks_log(double lo, double hi, bool widen) {
  Ticks t;
  t.log = true;
  const int k0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  const int k1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  t.lo = widen ? std::pow(10.0, k0) : lo;
  t.hi = widen ? std::pow(10.0, k1) : hi;
  const int decades = k1 - k0;
  const int stride = std::max(1, (decades + 7) / 8);
  for (int k = k0; k <= k1; k += decades < 3 ? 1 : stride)
    for (double m : {1.0, 2.0, 5.0}) {
      if (decades >= 3 && m != 1.0) continue;
      const double v = m * std::pow(10.0, k);
      if (v >= t.lo * (1 - 1e-9) && v <= t.hi * (1 + 1e-9)) t.values.push_back(v);
    }
  if (t.values.size() < 2) {  // less than a factor 2.5 between the limits: linear ticks
    t.values = ticks_linear(t.lo, t.hi, 4, false).values;
  }
  return t;
}

std::string tick_label(const Ticks& ticks, double v) {
  char buf[64];
  const double big = std::max(std::fabs(ticks.lo), std::fabs(ticks.hi));
  if (ticks.log || big >= 1e6 || ticks.decimals > 5)
    std::snprintf(buf, sizeof buf, "%g", v);
  else
    std::snprintf(buf, sizeof buf, "%.*f", ticks.decimals, v);
  return buf;
}

PlotColour colour_map(PlotColourMap map, double t) {
  if (!std::isfinite(t)) return plot_na_colour();
  // viridis at 0, 0.1, ..., 1 (matplotlib's table, as hex).
  static const PlotColour kViridis[] = {
      plot_colour_hex(0x440154), plot_colour_hex(0x482475), plot_colour_hex(0x414487),
      plot_colour_hex(0x355F8D), plot_colour_hex(0x2A788E), plot_colour_hex(0x21918C),
      plot_colour_hex(0x22A884), plot_colour_hex(0x35B779), plot_colour_hex(0x7AD151),
      plot_colour_hex(0xBDDF26), plot_colour_hex(0xFDE725)};
  static const PlotColour kBlueOrange[] = {{0.129, 0.353, 0.620},
                                           {0.569, 0.749, 0.871},
                                           {0.969, 0.969, 0.969},
                                           {0.992, 0.757, 0.486},
                                           {0.851, 0.412, 0.063}};
  const PlotColour* stops = map == PlotColourMap::viridis ? kViridis : kBlueOrange;
  const int n = map == PlotColourMap::viridis ? 11 : 5;
  const double x = std::clamp(t, 0.0, 1.0) * (n - 1);
  const int i = std::min(n - 2, static_cast<int>(x));
  return mix(stops[i], stops[i + 1], x - i);
}

}  // namespace elastic::plot_detail
