// router_eval_omega (train.h): held-out Omega_MSR per task of an Elastic checkpoint, routed by
// the inference engine exactly as `elastic route` routes a prompt.
#include <map>

#include "elastic/model.h"
#include "elastic/router.h"
#include "elastic/safetensors.h"
#include "elastic/tokenizer.h"
#include "elastic/train.h"
#include "train/data.h"

namespace elastic {

RouterEval router_eval_omega(const std::string& dir, const std::string& data_path,
                                              const std::string& chat_template) {
  const Model model = model_load(dir);
  const WeightStore store = WeightStore::open(dir);
  RouterOptions ro;
  ro.pool_tokens = model.config.elastic.pool_tokens;
  RouterRouting routing(router_weights_load(store, model.config), ro);
  const Tokenizer tok = Tokenizer::load(dir);
  std::map<std::string, RouterEvalTask> by_task;
  RouterEval out;
  for (const train::EncodedRecord& r : train::records_load(data_path, tok, chat_template, dir)) {
    Request req = request_start(model, &routing);
    PrefillOptions po;
    po.logits = LogitsOutput::none;
    model_prefill(model, req, r.prompt.data(), static_cast<int64_t>(r.prompt.size()), po);
    RouterEvalSample smp;
    smp.task = r.task;
    smp.prompt_ids = r.prompt;
    for (const LayerRoute& route : req.routes)
      for (size_t h = 0; h < route.modes.size(); ++h)
        smp.decisions.push_back(layer_route_is_retrieval(route, h) ? 1 : 0);
    double fa = 0;
    for (uint8_t x : smp.decisions) fa += x;
    smp.omega_msr = 1.0 - fa / double(smp.decisions.size());
    RouterEvalTask& t = by_task[r.task];
    t.task = r.task;
    t.omega_msr += smp.omega_msr;
    ++t.n;
    out.samples.push_back(std::move(smp));
  }
  for (auto& [name, t] : by_task) {
    t.omega_msr /= double(t.n);
    out.tasks.push_back(t);
  }
  return out;
}

}  // namespace elastic
