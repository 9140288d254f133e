// Drawing helpers shared by the line charts and the heatmaps: a Cairo canvas that encodes to PNG
// in memory, text with `_{...}` subscripts, round tick values, colour maps.
#pragma once

#include <cairo.h>

#include <memory>
#include <string>
#include <vector>

#include "elastic/plot.h"

namespace elastic::plot_detail {

// Font sizes in pixels (the PNG is drawn at 1 pixel per unit).
inline constexpr double kTitleSize = 16, kPanelTitleSize = 14, kLabelSize = 13, kTickSize = 12,
                        kLegendSize = 12, kCellTextSize = 12;
inline const PlotColour kInk{0.13, 0.13, 0.13}, kGrey{0.45, 0.45, 0.45}, kGrid{0.89, 0.89, 0.89};

struct Canvas {
  std::unique_ptr<cairo_surface_t, void (*)(cairo_surface_t*)> surface{nullptr,
                                                                       cairo_surface_destroy};
  std::unique_ptr<cairo_t, void (*)(cairo_t*)> context{nullptr, cairo_destroy};
  int width = 0, height = 0;
  cairo_t* cr() const { return context.get(); }
};

// A white canvas of w x h pixels; throws naming `path` when the size is beyond Cairo's limits.
Canvas canvas_create(int width, int height, const std::string& path);
// A 1 x 1 canvas for measuring text before the layout is known.
Canvas canvas_measure();
// Encodes the canvas as PNG and writes it atomically to path.
void canvas_write_png(Canvas& canvas, const std::string& path);

void set_colour(cairo_t* cr, PlotColour c);
// Relative luminance (0 black .. 1 white), to pick dark or light text on a fill.
double luminance(PlotColour c);
PlotColour mix(PlotColour a, PlotColour b, double t);  // a at t = 0, b at t = 1

struct Font {
  double size = kTickSize;
  bool bold = false;
};
enum class Align { start, centre, end };

double text_width(cairo_t* cr, const std::string& text, Font font);
// Draws text with its anchor at (x, y): `h` along the text, `v` across it (start = top);
// angle in radians, counter-clockwise (-pi/2 for a y-axis label read bottom to top).
void text_draw(cairo_t* cr, const std::string& text, double x, double y, Font font, Align h,
               Align v, double angle = 0);

struct Ticks {
  std::vector<double> values;  // ascending, within [lo, hi]
  double lo = 0, hi = 1;       // the axis limits
  int decimals = 0;            // for tick_label on a linear axis
  bool log = false;
};

// Round tick values over [lo, hi] (finite, lo < hi): about `count` steps of 1, 2 or 5 times a
// power of ten; `widen` moves the limits out to the nearest ticks.
Ticks ticks_linear(double lo, double hi, int count, bool widen);
// Ticks at powers of ten over [lo, hi] (0 < lo < hi), with 2 and 5 between when the range spans
// fewer than three decades; `widen` moves the limits out to the nearest ticks.
Ticks ticks_log(double lo, double hi, bool widen);
std::string tick_label(const Ticks& ticks, double v);

PlotColour colour_map(PlotColourMap map, double t);  // t in [0, 1]; clamped, NaN gives n/a

}  // namespace elastic::plot_detail
