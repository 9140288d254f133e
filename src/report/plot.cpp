// The parts of the plotting module that need no drawing library: colours and pixel mapping.
#include "elastic/plot.h"

#include <array>
#include <cmath>

namespace elastic {

PlotColour plot_colour_hex(uint32_t rgb) {
  return {((rgb >> 16) & 255) / 255.0, ((rgb >> 8) & 255) / 255.0, (rgb & 255) / 255.0};
}

PlotColour plot_palette(size_t i) {
  static constexpr std::array<uint32_t, 10> kTableau10 = {0x4E79A7, 0xF28E2B, 0xE15759, 0x76B7B2,
                                                          0x59A14F, 0xEDC948, 0xB07AA1, 0xFF9DA7,
                                                          0x9C755F, 0xBAB0AC};
  return plot_colour_hex(kTableau10[i % kTableau10.size()]);
}

PlotColour plot_na_colour() { return {0.82, 0.82, 0.82}; }

double PlotArea::x_pixel(double x) const { return left + (x - x_min) / (x_max - x_min) * width; }

double PlotArea::y_pixel(double y) const {
  const double f = log_y ? std::log10(y) : y;
  const double lo = log_y ? std::log10(y_min) : y_min, hi = log_y ? std::log10(y_max) : y_max;
  return top + height - (f - lo) / (hi - lo) * height;
}

}  // namespace elastic
