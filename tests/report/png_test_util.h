// Reading back the PNGs the plotting module writes (libpng's simplified API), for pixel checks.
#pragma once

#include <png.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "elastic/plot.h"

namespace elastic {

struct DecodedPng {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // [height, width, 3]

  PlotColour at(double x, double y) const {
    const int ix = static_cast<int>(std::floor(x)), iy = static_cast<int>(std::floor(y));
    if (ix < 0 || iy < 0 || ix >= width || iy >= height)
      throw std::out_of_range("pixel (" + std::to_string(ix) + ", " + std::to_string(iy) +
                              ") outside the image");
    const uint8_t* p = rgb.data() + (static_cast<size_t>(iy) * width + ix) * 3;
    return {p[0] / 255.0, p[1] / 255.0, p[2] / 255.0};
  }
};

inline DecodedPng png_decode(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str()))
    throw std::runtime_error(path + ": not a PNG libpng reads: " + image.message);
  image.format = PNG_FORMAT_RGB;
  DecodedPng out;
  out.width = static_cast<int>(image.width), out.height = static_cast<int>(image.height);
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr))
    throw std::runtime_error(path + ": libpng: " + image.message);
  return out;
}

// Euclidean distance in RGB, each channel in [0, 1]: 0 same colour, sqrt(3) black to white.
inline double colour_distance(PlotColour a, PlotColour b) {
  return std::sqrt((a.r - b.r) * (a.r - b.r) + (a.g - b.g) * (a.g - b.g) +
                   (a.b - b.b) * (a.b - b.b));
}

inline std::string plot_temp_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/elastic_plot_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Names in dir, to show that a failed write left nothing (no ".x.png.tmp.XXXXXX").
inline std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  return names;
}

}  // namespace elastic
