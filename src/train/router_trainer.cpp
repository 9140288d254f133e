// router_train_run (train.h): the router-training loop.
//
//   per optimizer step t (1-based) of N:
//     packs = the next `batch` packed sequences of the epoch's shuffled order
//     global stats = labelled tokens, samples per task, tasks present (over all packs)
//     for each pack: forward + backward (engine), Gumbel uniforms from Philox(seed; t, sample)
//     clip the router gradient to global norm `clip`; AdamW on the router (lr schedule);
//     AdamW ascent on the multipliers (their own lr, same schedule, weight decay as the reference)
//     metrics line; checkpoint every save_every steps, at the end and when asked to stop
//
// Checkpoint invariant: train_state.safetensors alone determines the continuation (router,
// multipliers, both optimizers' moments, step, data position, seed and the options that shape
// the run); it is written atomically after router.safetensors, so a crash between the two leaves
// a state that resumes correctly and rewrites the export.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "elastic/chat.h"
#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/plot.h"
#include "elastic/router.h"
#include "elastic/tensor_parallel.h"
#include "elastic/train.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/engine.h"
#include "train/rng.h"

namespace elastic {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace train;

namespace {

constexpr const char* kStateFile = "train_state.safetensors";
constexpr const char* kStateKey = "elastic_train_state";
constexpr int kStateVersion = 1;

double lr_at(const RouterTrainConfig& c, double base, int64_t step0) {
  return lr_warmup_cosine(base, c.warmup, 0.0, c.steps, step0);  // cosine to 0
}

double temperature_at(const RouterTrainConfig& c, int64_t step0) {
  const double progress = double(step0) / double(std::max<int64_t>(1, c.steps));
  if (c.temp_schedule == "exp")  // the paper's T = max(T_min, T_0 exp(-0.6 p)), p = progress
    return std::max(c.temp_end, c.temp_start * std::exp(-0.6 * progress));
  const double p = std::min(1.0, progress / c.temp_fraction);
  return c.temp_end + (c.temp_start - c.temp_end) * 0.5 * (1.0 + std::cos(M_PI * p));
}

void config_validate(const RouterTrainConfig& c) {
  auto bad = [](const std::string& what) { throw Error("train-router: " + what); };
  if (c.steps < 1) bad("--steps must be >= 1");
  if (c.batch < 1) bad("--batch must be >= 1");
  if (c.max_tokens < 2) bad("--max-tokens must be >= 2");
  for (auto [v, name] : {std::pair{c.lr, "--lr"}, {c.lambda_lr, "--lambda-lr"}})
    if (!(std::isfinite(v) && v >= 0)) bad(std::string(name) + " must be a finite number >= 0");
  if (!(c.warmup >= 0 && c.warmup <= 1)) bad("--warmup must be in [0, 1]");
  if (!(c.clip > 0)) bad("--clip must be > 0");
  if (!(c.temp_start > 0 && c.temp_end > 0 && c.temp_fraction > 0 && c.temp_fraction <= 1))
    bad("temperatures must be > 0 and --temp-fraction in (0, 1]");
  if (c.temp_schedule != "cosine" && c.temp_schedule != "exp")
    bad("--temp-schedule must be cosine or exp");
  if (c.lambda_init != "zero" && c.lambda_init != "uniform")
    bad("--lambda-init must be zero or uniform");
  if (c.router_init != "auto" && c.router_init != "default" && c.router_init != "fa-bias")
    bad("--router-init must be auto, default or fa-bias");
  if (c.save_every < 1) bad("--save-every must be >= 1");
  if (c.out_dir.empty()) bad("missing --out DIR");
  if (c.data_parallel < 1) bad("--dp must be >= 1");
  if (c.comm == "nccl" && c.data_parallel > 1)
    bad("--dp-comm nccl runs one rank for now (world size 1 through NCCL); ranks on several GPUs "
        "need an engine on each rank's GPU (issue 14)");
  if (c.data_parallel > 1 && c.backend != "cpu")
    bad("--dp " + std::to_string(c.data_parallel) +
        " runs its ranks as threads of this process on the CPU (--backend cpu); data parallelism "
        "across GPUs needs an NCCL communicator (issue 14)");
}

// PyTorch's default Linear init, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, from Philox.
void router_init_random(ParamSet<float>& r, const ModelConfig& c, uint64_t seed, bool fa_bias) {
  const std::array<uint32_t, 2> key = {uint32_t(seed), uint32_t(seed >> 32)};
  uint32_t tensor = 0;
  for (const ParamInfo& p : r.layout.tensors()) {
    // The weight of [out, in] has fan_in = in; its bias shares the weight's bound.
    const std::string wname = p.name.substr(0, p.name.rfind('.')) + ".weight";
    const int64_t in = r.layout.at(wname).shape[1];
    const double bound = 1.0 / std::sqrt(double(in));
    float* dst = r.ptr(p.name);
    for (int64_t i = 0; i < p.numel(); ++i) {
      const auto x = philox4x32_10({uint32_t(i), tensor, 0, 0x494e4954u}, key);  // "INIT"
      const double u = double((uint64_t(x[0]) << 21) ^ (uint64_t(x[1]) >> 11)) * 0x1p-53;
      dst[i] = static_cast<float>((2 * u - 1) * bound);
    }
    ++tensor;
  }
  if (!fa_bias) return;
  // Last layer at zero weights with a bias favouring FA (SPEC §7): training starts dense.
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = router_tensor_prefix(l) + "cls_router_head_agnostic.4.";
    float* w = r.ptr(p + "weight");
    std::fill(w, w + 2 * c.head_dim, 0.f);
    float* b = r.ptr(p + "bias");
    b[0] = 0.f;  // SA
    b[1] = 1.f;  // FA
  }
}

// The Elastic config.json of the output: the backbone's config plus the Elastic keys.
std::string elastic_config_json(const std::string& model_dir, const ModelConfig& c,
                                const RouterTrainConfig& rc, const SsaOptions& ssa) {
  json j = json::parse(read_file((fs::path(model_dir) / "config.json").string()));
  j["architectures"] = json::array({c.family == ModelFamily::qwen3   ? "PawQwen3ForCausalLM"
                                    : c.family == ModelFamily::qwen2 ? "PawQwen2ForCausalLM"
                                                                     : "PawLlamaForCausalLM"});
  j["enable_ada_sparsity"] = true;
  j["toggle_type"] = "streaming";
  j["retrieval_mode"] = "full";
  j["sink_size"] = ssa.sink_tokens;
  j["local_window_size"] = ssa.local_tokens;
  j["block_size"] = ssa.block;
  j["pool_tokens"] = rc.pool_tokens;
  j["pooling_mode"] = "ctx_q";
  j["use_softmax"] = true;
  return j.dump(2) + "\n";
}

struct State {
  int64_t step = 0;   // optimizer steps done
  int64_t epoch = 0;  // data position: epoch and next pack
  int64_t pack = 0;
  std::vector<float> lambda1, lambda2, l1_m, l1_v, l2_m, l2_v;  // [K]
};

json state_fingerprint(const RouterTrainConfig& rc, const ModelConfig& c, const TaskTable& tasks,
                       const SsaOptions& ssa) {
  json f;
  f["layers"] = c.num_layers;
  f["kv_heads"] = c.num_kv_heads;
  f["head_dim"] = c.head_dim;
  f["hidden_size"] = c.hidden_size;
  f["vocab_size"] = c.vocab_size;
  json t = json::array();
  for (const TaskSpec& s : tasks.tasks) t.push_back({s.name, s.target});
  f["tasks"] = t;
  f["steps"] = rc.steps;
  f["batch"] = rc.batch;
  f["max_tokens"] = rc.max_tokens;
  f["seed"] = rc.seed;
  f["ssa"] = {ssa.block, ssa.sink_tokens, ssa.local_tokens};
  f["pool_tokens"] = rc.pool_tokens;
  f["labels"] = rc.answer_only_labels ? "answer" : "all";
  f["pooling"] = rc.segment_mean_pooling ? "segment_mean" : "boundary";
  return f;
}

const std::vector<StatePart> kRouterParts = {{ParamState::value, "router."},
                                             {ParamState::adam_m, "adam_m."},
                                             {ParamState::adam_v, "adam_v."}};
constexpr const char* kRouterMissing = "a router checkpoint to resume needs it";

void state_save(const std::string& out, TrainEngine& eng, const State& st,
                const json& fingerprint) {
  std::vector<SafetensorsWriteItem> items;
  state_items_add(items, eng, ParamGroup::router, kRouterParts);
  const int64_t K = static_cast<int64_t>(st.lambda1.size());
  const std::pair<const std::vector<float>*, const char*> lam[] = {
      {&st.lambda1, "lambda1"},     {&st.lambda2, "lambda2"},     {&st.l1_m, "lambda1.adam_m"},
      {&st.l1_v, "lambda1.adam_v"}, {&st.l2_m, "lambda2.adam_m"}, {&st.l2_v, "lambda2.adam_v"}};
  for (auto [v, name] : lam) items.push_back(safetensors_item_f32(name, {K}, v->data()));
  json meta;
  meta["version"] = kStateVersion;
  meta["step"] = st.step;
  meta["epoch"] = st.epoch;
  meta["pack"] = st.pack;
  meta["fingerprint"] = fingerprint;
  safetensors_write((fs::path(out) / kStateFile).string(), items, {{kStateKey, meta.dump()}});
}

State state_load(const std::string& out, TrainEngine& eng, const json& fingerprint, int64_t K) {
  const std::string path = (fs::path(out) / kStateFile).string();
  const auto file = SafetensorsFile::open(path);
  const json meta = state_meta_checked(
      *file, path, kStateKey, kStateVersion, fingerprint, "a training state",
      "resume with the same model shape, data tasks and options, or use another --out");
  state_items_load(*file, path, eng, ParamGroup::router, kRouterParts, kRouterMissing);
  auto read = [&](const char* name) {
    return state_tensor_read(*file, path, name, {K}, kRouterMissing);
  };
  State st;
  st.step = meta.value("step", int64_t(0));
  st.epoch = meta.value("epoch", int64_t(0));
  st.pack = meta.value("pack", int64_t(0));
  st.lambda1 = read("lambda1");
  st.lambda2 = read("lambda2");
  st.l1_m = read("lambda1.adam_m");
  st.l1_v = read("lambda1.adam_v");
  st.l2_m = read("lambda2.adam_m");
  st.l2_v = read("lambda2.adam_v");
  return st;
}

// Router tensors of the export (F32) and the index mapping backbone and router tensors.
void export_checkpoint(const std::string& out, TrainEngine& eng, const WeightStore& backbone) {
  const ParamLayout& lay = eng.layout(ParamGroup::router);
  const std::vector<float> v = eng.get(ParamGroup::router, ParamState::value);
  std::vector<SafetensorsWriteItem> items;
  for (const ParamInfo& p : lay.tensors())
    items.push_back(safetensors_item_f32(p.name, p.shape, v.data() + p.offset));
  safetensors_write((fs::path(out) / "router.safetensors").string(), items, {{"format", "pt"}});
  json index;
  index["metadata"] = json::object();
  json& map = index["weight_map"];
  for (const std::string& name : backbone.names())
    if (name.find(".mask_allocator.") == std::string::npos) map[name] = "backbone.safetensors";
  for (const ParamInfo& p : lay.tensors()) map[p.name] = "router.safetensors";
  write_file_atomic((fs::path(out) / "model.safetensors.index.json").string(),
                    index.dump(2) + "\n");
}

// Once per output folder: the backbone tensors (as stored, without router tensors), the
// tokenizer and generation files, the Elastic config.
void prepare_output(const RouterTrainConfig& rc, const ModelConfig& c, const WeightStore& store,
                    const SsaOptions& ssa) {
  const fs::path out(rc.out_dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw Error(rc.out_dir + ": cannot create the output folder: " + ec.message());
  if (fs::equivalent(fs::path(rc.model_dir), out, ec))
    throw Error("--out " + rc.out_dir + " is the model folder itself: choose another folder");
  if (!fs::exists(out / "backbone.safetensors")) {
    std::vector<SafetensorsWriteItem> items;
    for (const std::string& name : store.names()) {
      if (name.find(".mask_allocator.") != std::string::npos) continue;
      const TensorView t = store.get(name);
      SafetensorsWriteItem it;
      it.name = name;
      it.dtype = t.dtype;
      it.shape = t.shape;
      const auto* b = static_cast<const unsigned char*>(t.data);
      it.bytes.assign(b, b + t.nbytes());
      items.push_back(std::move(it));
    }
    safetensors_write((out / "backbone.safetensors").string(), items, {{"format", "pt"}});
  }
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json", "tokenizer.model", "vocab.json", "merges.txt"}) {
    const fs::path src = fs::path(rc.model_dir) / f;
    if (fs::exists(src)) write_file_atomic((out / f).string(), read_file(src.string()));
  }
  write_file_atomic((out / "config.json").string(), elastic_config_json(rc.model_dir, c, rc, ssa));
}

}  // namespace

TrainStatus router_train_run(const RouterTrainConfig& rc, const RouterTrainCallbacks& cb) {
  config_validate(rc);
  const ModelConfig c = config_load(rc.model_dir);
  const WeightStore store = WeightStore::open(rc.model_dir);
  const Tokenizer tok = Tokenizer::load(rc.model_dir);
  const TaskTable tasks =
      rc.task_targets.empty() ? task_table_default() : task_table_load(rc.task_targets);
  DatasetOptions dopt;
  dopt.labels = rc.answer_only_labels ? LabelMode::answer : LabelMode::all;
  dopt.max_tokens = rc.max_tokens;
  dopt.chat_template = rc.chat_template;
  dopt.model_dir = rc.model_dir;
  const std::vector<TrainSample> data = dataset_load(rc.data_path, tok, tasks, dopt);
  const int64_t K = static_cast<int64_t>(tasks.tasks.size());
  const int64_t L = c.num_layers, Hkv = c.num_kv_heads;

  TrainOptions opt;
  opt.ssa = rc.ssa;
  opt.pool_tokens = rc.pool_tokens;
  opt.pooling = rc.segment_mean_pooling ? RouterPooling::segment_mean : RouterPooling::boundary;
  attn_options_validate(AttnOptions{opt.ssa, XaOptions{}});

  const fs::path out(rc.out_dir);
  run_folder_check(rc.out_dir, kStateFile, rc.resume);

  ParamSet<float> backbone(backbone_layout(c)), router(router_layout(c));
  params_load(backbone, store);
  const bool has_router =
      store.contains(router_tensor_prefix(0) + "cls_router_head_agnostic.4.weight");
  if (rc.router_init == "auto" && has_router)
    params_load(router, store);
  else
    router_init_random(router, c, rc.seed, rc.router_init != "default");
  // One engine a data-parallel rank, each with the whole model; rank 0's is the one saved.
  const int W = static_cast<int>(rc.data_parallel);
  std::vector<std::unique_ptr<TrainEngine>> engines;
  for (int r = 1; r < W; ++r)
    engines.push_back(train_engine_create(rc.backend, c, backbone, router, opt));
  engines.insert(engines.begin(),
                 train_engine_create(rc.backend, c, std::move(backbone), std::move(router), opt));
  TrainEngine* eng = engines[0].get();
  // The ranks' communicators, made once (an NCCL group's setup is slow); none for one rank of
  // the thread group (the plain path).
  const bool grouped = W > 1 || rc.comm != "threads";
  std::vector<std::shared_ptr<TpComm>> comms;
  if (grouped) comms = tp_group_create(rc.comm, W);
  const json fingerprint = state_fingerprint(rc, c, tasks, opt.ssa);

  State st;
  if (rc.resume) {
    st = state_load(rc.out_dir, *eng, fingerprint, K);
    for (int r = 1; r < W; ++r)  // every rank continues from the same router and moments
      for (ParamState ps : {ParamState::value, ParamState::adam_m, ParamState::adam_v})
        engines[size_t(r)]->set(ParamGroup::router, ps, eng->get(ParamGroup::router, ps));
    if (cb.on_note)
      cb.on_note("resuming at step " + std::to_string(st.step) + " of " + std::to_string(rc.steps));
  } else {
    st.lambda1.assign(size_t(K), 0.f);
    st.lambda2.assign(size_t(K), 0.f);
    if (rc.lambda_init == "uniform") {  // U[0, 0.5) as the reference
      const std::array<uint32_t, 2> key = {uint32_t(rc.seed), uint32_t(rc.seed >> 32)};
      for (int64_t k = 0; k < K; ++k) {
        const auto x = philox4x32_10({uint32_t(k), 0, 0, 0x4c414d42u}, key);  // "LAMB"
        st.lambda1[size_t(k)] = float(0.5 * double(x[0]) * 0x1p-32);
        st.lambda2[size_t(k)] = float(0.5 * double(x[1]) * 0x1p-32);
      }
    }
    st.l1_m.assign(size_t(K), 0.f), st.l1_v.assign(size_t(K), 0.f);
    st.l2_m.assign(size_t(K), 0.f), st.l2_v.assign(size_t(K), 0.f);
  }
  prepare_output(rc, c, store, opt.ssa);
  const std::string metrics_path = (out / "metrics.jsonl").string();
  if (rc.resume)
    metrics_truncate(metrics_path, st.step);
  else
    write_file_atomic(metrics_path, "");
  std::vector<std::pair<std::string, double>> targets;
  for (const TaskSpec& t : tasks.tasks) targets.emplace_back(t.name, t.target);
  auto save = [&] {
    export_checkpoint(rc.out_dir, *eng, store);
    state_save(rc.out_dir, *eng, st, fingerprint);
    if (st.step > 0 && plot_available())
      router_train_curves_write(metrics_path, targets, (out / "curves.png").string());
    if (cb.on_note)
      cb.on_note("checkpoint at step " + std::to_string(st.step) + " in " + rc.out_dir);
  };
  if (!rc.resume) save();  // step 0: a valid Elastic checkpoint exists from the start

  std::vector<Pack> packs = packs_for_epoch(data, rc.max_tokens, rc.seed, st.epoch);
  std::ofstream metrics(metrics_path, std::ios::app);
  AdamWConfig router_opt{rc.lr, rc.beta1, rc.beta2, 1e-8, rc.weight_decay};
  while (st.step < rc.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t step0 = st.step;  // 0-based index of this step
    // The step's packs (epochs roll over).
    std::vector<Pack> mine;  // copies: an epoch rollover replaces `packs`
    for (int64_t b = 0; b < rc.batch; ++b) {
      if (st.pack >= static_cast<int64_t>(packs.size())) {
        ++st.epoch;
        st.pack = 0;
        packs = packs_for_epoch(data, rc.max_tokens, rc.seed, st.epoch);
      }
      mine.push_back(packs[size_t(st.pack++)]);
    }
    // Global normalisation of the step: labelled tokens, samples per task, tasks present.
    int64_t labelled = 0, tokens = 0;
    std::map<int64_t, int64_t> per_task;
    for (const Pack& p : mine)
      for (int64_t s : p.samples) {
        const TrainSample& ts = data[size_t(s)];
        for (int64_t y : ts.labels) labelled += y != -100;
        tokens += static_cast<int64_t>(ts.ids.size());
        ++per_task[ts.task];
      }
    const double temperature = temperature_at(rc, step0);
    RouterTrainMetrics m;
    m.step = step0 + 1;
    m.steps = rc.steps;
    m.temperature = temperature;
    m.tokens = tokens;
    // What one rank sums over its packs (r, r + W, ...); the ranks' sums are added in rank order.
    struct RankSums {
      double ce = 0, sparsity_loss = 0, grad_norm = 0;
      std::vector<double> omega_sum, d1, d2;  // [K]
    };
    std::vector<RankSums> sums(static_cast<size_t>(W));
    m.lr = lr_at(rc, rc.lr, step0);
    router_opt.lr = m.lr;
    auto rank_step = [&](int r, TpComm* comm) {
      TrainEngine& e = *engines[size_t(r)];
      RankSums& o = sums[size_t(r)];
      o.omega_sum.assign(size_t(K), 0.0), o.d1.assign(size_t(K), 0.0), o.d2.assign(size_t(K), 0.0);
      e.zero_grad();
      for (size_t i = size_t(r); i < mine.size(); i += size_t(W)) {
        const Pack* p = &mine[i];
        Batch batch;
        StepRouting routing;
        routing.temperature = temperature;
        StepLoss loss;
        loss.ce_scale = labelled > 0 ? 1.0 / double(labelled) : 0.0;
        loss.targets.resize(size_t(K));
        for (int64_t k = 0; k < K; ++k) loss.targets[size_t(k)] = tasks.tasks[size_t(k)].target;
        loss.lambda1.assign(st.lambda1.begin(), st.lambda1.end());
        loss.lambda2.assign(st.lambda2.begin(), st.lambda2.end());
        for (int64_t smp : p->samples) {
          const TrainSample& ts = data[size_t(smp)];
          batch.add(ts.ids.data(), static_cast<int64_t>(ts.ids.size()));
          loss.labels.insert(loss.labels.end(), ts.labels.begin(), ts.labels.end());
          loss.task.push_back(ts.task);
          // at(): the ranks read the map concurrently (every task of the step is in it)
          loss.sample_weight.push_back(1.0 / double(per_task.size() * per_task.at(ts.task)));
          const std::vector<double> u = gumbel_uniforms(rc.seed, step0, ts.index, L, Hkv);
          routing.gumbel_u.insert(routing.gumbel_u.end(), u.begin(), u.end());
        }
        const StepResult res = e.step(batch, routing, loss);
        o.ce += res.ce;
        o.sparsity_loss += res.sparsity_loss;
        for (size_t j = 0; j < p->samples.size(); ++j)
          o.omega_sum[size_t(loss.task[j])] += res.omega[j];
        for (int64_t k = 0; k < K; ++k) {
          o.d1[size_t(k)] += res.d_lambda1[size_t(k)];
          o.d2[size_t(k)] += res.d_lambda2[size_t(k)];
        }
      }
      if (comm) {  // the router gradient of the whole step on every rank
        std::vector<float> g = e.get(ParamGroup::router, ParamState::grad);
        comm->all_reduce_sum(g.data(), static_cast<int64_t>(g.size()));
        e.set(ParamGroup::router, ParamState::grad, g);
      }
      o.grad_norm = std::sqrt(e.grad_norm_squared(ParamGroup::router));
      const double scale = o.grad_norm > rc.clip ? rc.clip / (o.grad_norm + 1e-6) : 1.0;
      e.adamw_step(ParamGroup::router, router_opt, scale, step0 + 1);
    };
    if (!grouped) {
      rank_step(0, nullptr);
    } else {
      tp_run(comms, std::max(1, omp_get_max_threads() / W),
             [&](std::shared_ptr<TpComm> comm) { rank_step(comm->rank(), comm.get()); });
    }
    std::vector<double> omega_sum(static_cast<size_t>(K), 0.0), d1(static_cast<size_t>(K), 0.0),
        d2(static_cast<size_t>(K), 0.0);
    for (const RankSums& o : sums) {
      m.ce += o.ce;
      m.sparsity_loss += o.sparsity_loss;
      for (int64_t k = 0; k < K; ++k) {
        omega_sum[size_t(k)] += o.omega_sum[size_t(k)];
        d1[size_t(k)] += o.d1[size_t(k)];
        d2[size_t(k)] += o.d2[size_t(k)];
      }
    }
    m.loss = m.ce + m.sparsity_loss;
    m.grad_norm = sums[0].grad_norm;  // the same on every rank (the all-reduced gradient)
    // Multipliers maximise the Lagrangian: AdamW on the negated gradient.
    const AdamWConfig lambda_opt{lr_at(rc, rc.lambda_lr, step0), rc.beta1, rc.beta2, 1e-8,
                                 rc.weight_decay};
    std::vector<float> g1(static_cast<size_t>(K)), g2(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k)
      g1[size_t(k)] = float(-d1[size_t(k)]), g2[size_t(k)] = float(-d2[size_t(k)]);
    adamw_update(st.lambda1.data(), g1.data(), st.l1_m.data(), st.l1_v.data(), K, lambda_opt, 1.0,
                 step0 + 1);
    adamw_update(st.lambda2.data(), g2.data(), st.l2_m.data(), st.l2_v.data(), K, lambda_opt, 1.0,
                 step0 + 1);
    st.step = step0 + 1;

    for (int64_t k = 0; k < K; ++k) {
      m.tasks.push_back(tasks.tasks[size_t(k)].name);
      m.targets.push_back(tasks.tasks[size_t(k)].target);
      const auto it = per_task.find(k);
      m.omega.push_back(it == per_task.end() ? std::numeric_limits<double>::quiet_NaN()
                                             : omega_sum[size_t(k)] / double(it->second));
      m.lambda1.push_back(st.lambda1[size_t(k)]);
      m.lambda2.push_back(st.lambda2[size_t(k)]);
    }
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json line = {{"step", m.step},
                 {"loss", m.loss},
                 {"ce", m.ce},
                 {"sparsity_loss", m.sparsity_loss},
                 {"grad_norm", m.grad_norm},
                 {"lr", m.lr},
                 {"temperature", m.temperature},
                 {"tokens", m.tokens}};
    for (int64_t k = 0; k < K; ++k) {
      const std::string& t = m.tasks[size_t(k)];
      line["omega"][t] = std::isnan(m.omega[size_t(k)]) ? json(nullptr) : json(m.omega[size_t(k)]);
      line["lambda1"][t] = m.lambda1[size_t(k)];
      line["lambda2"][t] = m.lambda2[size_t(k)];
    }
    metrics << line.dump() << "\n" << std::flush;
    if (cb.on_step) cb.on_step(m);
    const bool stop = cb.should_stop && cb.should_stop();
    if (st.step % rc.save_every == 0 || st.step == rc.steps || stop) save();
    if (stop && st.step < rc.steps) return TrainStatus::interrupted;
  }
  if (!rc.eval_path.empty()) {
    const RouterEval ev = router_eval_omega(rc.out_dir, rc.eval_path, rc.chat_template);
    json tasks_j = json::array(), samples_j = json::array();
    for (const RouterEvalTask& t : ev.tasks)
      tasks_j.push_back({{"task", t.task}, {"n", t.n}, {"omega_msr", t.omega_msr}});
    for (const RouterEvalSample& smp : ev.samples)
      samples_j.push_back({{"task", smp.task},
                           {"omega_msr", smp.omega_msr},
                           {"decisions", smp.decisions},
                           {"prompt_ids", smp.prompt_ids}});
    write_file_atomic((out / "eval.json").string(),
                      json{{"heldout", tasks_j}, {"samples", samples_j}}.dump() + "\n");
    if (cb.on_note)
      for (const RouterEvalTask& t : ev.tasks)
        cb.on_note("held-out " + t.task + ": Omega_MSR " + std::to_string(t.omega_msr) + " over " +
                   std::to_string(t.n) + " prompts");
  }
  return TrainStatus::finished;
}

}  // namespace elastic
