// The evaluation's figure: accuracy against Omega_MSR per routing configuration (the paper's
// accuracy-vs-sparsity style).
#include <algorithm>

#include "elastic/error.h"
#include "elastic/eval.h"

namespace elastic {

namespace {

// Kind of a task name: 0 sensitive, 1 robust, 2 a task the suite does not know (imported).
int kind_index(const std::string& task) {
  for (const TaskInfo& t : eval_tasks())
    if (t.name == task) return t.kind == TaskKind::sensitive ? 0 : 1;
  return 2;
}

template <class T>
size_t index_of(std::vector<T>& v, const T& x) {
  const auto it = std::find(v.begin(), v.end(), x);
  if (it != v.end()) return static_cast<size_t>(it - v.begin());
  v.push_back(x);
  return v.size() - 1;
}

}  // namespace

std::vector<EvalPlotPoint> eval_plot_points(const std::vector<EvalResult>& results) {
  // Sums over the tasks of each (kind, config, length), in order of first appearance.
  std::vector<EvalPlotPoint> points;
  std::vector<int64_t> tasks;
  for (const EvalResult& r : results) {
    const int kind = kind_index(r.task);
    auto it = std::find_if(points.begin(), points.end(), [&](const EvalPlotPoint& p) {
      return p.kind == kind && p.config == r.config && p.length == r.length;
    });
    if (it == points.end()) {
      points.push_back({kind, r.config, r.length, 0.0, 0.0});
      tasks.push_back(0);
      it = points.end() - 1;
    }
    it->omega_msr += r.omega_msr;
    it->accuracy += r.accuracy;
    tasks[static_cast<size_t>(it - points.begin())] += 1;
  }
  for (size_t i = 0; i < points.size(); ++i) {
    points[i].omega_msr /= static_cast<double>(tasks[i]);
    points[i].accuracy /= static_cast<double>(tasks[i]);
  }
  return points;
}

std::vector<PlotArea> eval_plot_write_png(const std::vector<EvalResult>& results,
                                          const std::string& path, const std::string& title) {
  if (results.empty()) throw Error(path + ": no evaluation results to plot");
  const char* kind_titles[] = {"sensitive tasks", "robust tasks", "other tasks"};
  const std::vector<EvalPlotPoint> points = eval_plot_points(results);
  std::vector<int> kinds;
  std::vector<std::string> configs;
  std::vector<int64_t> lengths;
  for (const EvalPlotPoint& p : points) {
    index_of(configs, p.config);
    index_of(lengths, p.length);
  }
  for (int k = 0; k < 3; ++k)
    for (const EvalPlotPoint& p : points)
      if (p.kind == k && std::find(kinds.begin(), kinds.end(), k) == kinds.end())
        kinds.push_back(k);

  PlotFigure fig;
  fig.title = title;
  fig.columns = static_cast<int>(kinds.size());
  for (int k : kinds) {
    PlotPanel panel;
    panel.title = kind_titles[k];
    panel.x_label = "\u03a9_{MSR} (fraction of KV heads sparse)";
    panel.y_label = "accuracy (%)";
    // The whole range of both, as the paper draws it, with room for markers at the ends.
    panel.x_min = -0.05, panel.x_max = 1.05;
    panel.y_min = -5, panel.y_max = 105;
    for (size_t c = 0; c < configs.size(); ++c) {
      PlotSeries s;
      s.name = configs[c];
      s.colour = plot_palette(c);  // the same colour for a configuration in every panel
      s.line = false;
      const PlotMarker markers[] = {PlotMarker::circle, PlotMarker::square, PlotMarker::triangle,
                                    PlotMarker::diamond};
      s.marker = markers[c % 4];
      for (const EvalPlotPoint& p : points) {
        if (p.kind != k || p.config != configs[c]) continue;
        // One length: the legend says it all; several: each point names its length, and
        // points that coincide share one marker and list both lengths.
        const std::string label =
            lengths.size() > 1 && p.length > 0 ? std::to_string(p.length) : "";
        size_t same = 0;
        while (same < s.x.size() && !(s.x[same] == p.omega_msr && s.y[same] == 100.0 * p.accuracy))
          ++same;
        if (same < s.x.size()) {
          if (!label.empty())
            s.point_labels[same] += (s.point_labels[same].empty() ? "" : ", ") + label;
          continue;
        }
        s.x.push_back(p.omega_msr);
        s.y.push_back(100.0 * p.accuracy);
        s.point_labels.push_back(label);
      }
      if (!s.x.empty()) panel.series.push_back(std::move(s));
    }
    fig.panels.push_back(std::move(panel));
  }
  return plot_write_png(fig, path);
}

}  // namespace elastic
