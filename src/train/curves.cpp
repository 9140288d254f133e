// Training curves of a router-training run (train.h), drawn from its metrics.jsonl like the
// paper's training figure: loss and CE, the sparsity loss, Omega per task beside its target
// (dashed), both multipliers per task, and the temperature / learning rate schedules.
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "elastic/error.h"
#include "elastic/plot.h"
#include "elastic/train.h"

namespace elastic {

void router_train_curves_write(const std::string& metrics_path,
                               const std::vector<std::pair<std::string, double>>& targets,
                               const std::string& png_path) {
  using json = nlohmann::json;
  std::ifstream f(metrics_path);
  if (!f) throw Error(metrics_path + ": cannot open the metrics");
  std::vector<double> step, loss, ce, sparsity, temperature, lr;
  std::map<std::string, std::vector<double>> omega, lambda1, lambda2;
  std::string line;
  auto num = [](const json& v) {
    return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
  };
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      break;  // a torn last line
    }
    step.push_back(num(j["step"]));
    loss.push_back(num(j["loss"]));
    ce.push_back(num(j["ce"]));
    sparsity.push_back(num(j["sparsity_loss"]));
    temperature.push_back(num(j["temperature"]));
    lr.push_back(num(j["lr"]));
    for (const auto& [name, target] : targets) {
      omega[name].push_back(j.contains("omega") ? num(j["omega"].value(name, json())) : NAN);
      lambda1[name].push_back(j.contains("lambda1") ? num(j["lambda1"].value(name, json())) : NAN);
      lambda2[name].push_back(j.contains("lambda2") ? num(j["lambda2"].value(name, json())) : NAN);
    }
  }
  if (step.empty()) throw Error(metrics_path + ": no metrics to plot");
  // Tasks seen in the run (a task of the table without samples has no curve).
  std::vector<std::pair<std::string, double>> seen;
  for (const auto& [name, target] : targets)
    for (double x : omega[name])
      if (std::isfinite(x)) {
        seen.emplace_back(name, target);
        break;
      }
  auto series = [&](const std::string& name, const std::vector<double>& y) {
    PlotSeries s;
    s.name = name;
    s.x = step;
    s.y = y;
    return s;
  };
  PlotFigure fig;
  fig.title = "Router training";
  fig.columns = 3;
  PlotPanel p_loss{"Loss", "step", "nats", {series("loss", loss), series("CE", ce)}};
  PlotPanel p_sp{"Sparsity loss", "step", "", {series("sparsity loss", sparsity)}};
  PlotPanel p_omega{"Ω_{MSR} per task (dashed: target)", "step", "Ω_{MSR}", {}};
  p_omega.y_min = 0;
  p_omega.y_max = 1;
  PlotPanel p_l1{"λ_{1} per task", "step", "", {}}, p_l2{"λ_{2} per task", "step", "", {}};
  for (size_t k = 0; k < seen.size(); ++k) {
    const auto& [name, target] = seen[k];
    PlotSeries o = series(name, omega[name]);
    o.colour = plot_palette(k);
    p_omega.series.push_back(o);
    PlotSeries t = series("", std::vector<double>(step.size(), target));
    t.colour = plot_palette(k);
    t.dash = PlotDash::dashed;
    p_omega.series.push_back(t);
    PlotSeries a = series(name, lambda1[name]), b = series(name, lambda2[name]);
    a.colour = b.colour = plot_palette(k);
    p_l1.series.push_back(a);
    p_l2.series.push_back(b);
  }
  PlotPanel p_t{
      "Temperature and learning rate (x 1000)", "step", "", {series("temperature", temperature)}};
  std::vector<double> lr_k(lr.size());
  for (size_t i = 0; i < lr.size(); ++i) lr_k[i] = lr[i] * 1000.0;
  p_t.series.push_back(series("lr x 1000", lr_k));
  fig.panels = {p_loss, p_sp, p_omega, p_l1, p_l2, p_t};
  plot_write_png(fig, png_path);
}

}  // namespace elastic
