// Stand-ins for a build configured with -DELASTIC_PLOT=OFF (no Cairo, as on the GPU machine):
// every figure is an error naming the path, never a silently missing file.
#include "elastic/error.h"
#include "elastic/plot.h"

namespace elastic {
namespace {

[[noreturn]] void plot_unavailable(const std::string& path) {
  throw Error(path +
              ": this build draws no figures (configured with -DELASTIC_PLOT=OFF; "
              "install libcairo2-dev and reconfigure)");
}

}  // namespace

bool plot_available() { return false; }

std::vector<PlotArea> plot_write_png(const PlotFigure&, const std::string& path) {
  plot_unavailable(path);
}

HeatmapLayout plot_write_heatmap_png(const Heatmap&, const std::string& path) {
  plot_unavailable(path);
}

}  // namespace elastic
