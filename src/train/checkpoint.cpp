#include "train/checkpoint.h"

#include <filesystem>
#include <fstream>

#include "elastic/error.h"
#include "elastic/fileio.h"

namespace elastic::train {

using json = nlohmann::json;

void state_items_add(std::vector<SafetensorsWriteItem>& items, TrainEngine& eng, ParamGroup g,
                     const std::vector<StatePart>& parts) {
  ParamSet<float> set(eng.layout(g));
  for (const StatePart& part : parts) {
    set.data = eng.get(g, part.state);
    for (SafetensorsWriteItem& it : params_items(set, DType::f32, part.prefix))
      items.push_back(std::move(it));
  }
}

std::vector<float> state_tensor_read(const SafetensorsFile& file, const std::string& path,
                                     const std::string& name, const Shape& shape,
                                     const std::string& missing_hint) {
  if (!file.contains(name))
    throw Error(path + ": tensor '" + name + "' is missing (" + missing_hint + ")");
  const TensorView t = file.get(name);
  if (t.shape != shape)
    throw Error(path + ": tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " +
                shape_str(shape) + " for this model");
  return t.to_f32();
}

void state_items_load(const SafetensorsFile& file, const std::string& path, TrainEngine& eng,
                      ParamGroup g, const std::vector<StatePart>& parts,
                      const std::string& missing_hint) {
  const ParamLayout& lay = eng.layout(g);
  for (const StatePart& part : parts) {
    std::vector<float> v(static_cast<size_t>(lay.total()));
    for (const ParamInfo& p : lay.tensors()) {
      const std::vector<float> t =
          state_tensor_read(file, path, part.prefix + p.name, p.shape, missing_hint);
      std::copy(t.begin(), t.end(), v.begin() + p.offset);
    }
    eng.set(g, part.state, v);
  }
}

json state_meta_checked(const SafetensorsFile& file, const std::string& path,
                        const std::string& key, int version, const json& fingerprint,
                        const std::string& what, const std::string& resume_hint) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end())
    throw Error(path + ": not " + what + " (no " + key + " metadata)");
  json meta;
  try {
    meta = json::parse(it->second);
  } catch (const json::exception&) {
    throw Error(path + ": the training-state metadata is not valid JSON");
  }
  if (meta.value("version", 0) != version)
    throw Error(path + ": training-state version " + std::to_string(meta.value("version", 0)) +
                ", expected " + std::to_string(version));
  const json& saved = meta["fingerprint"];
  for (const auto& [k, value] : fingerprint.items())
    if (!saved.contains(k) || saved[k] != value)
      throw Error(path + ": the saved run has " + k + " = " +
                  (saved.contains(k) ? saved[k].dump() : std::string("(none)")) + ", this run " +
                  value.dump() + " (" + resume_hint + ")");
  return meta;
}

void run_folder_check(const std::string& out_dir, const char* state_file, bool resume) {
  const bool have_state = std::filesystem::exists(std::filesystem::path(out_dir) / state_file);
  if (have_state && !resume)
    throw Error(out_dir + " already holds a training run (" + state_file +
                "): pass --resume to continue it, or choose another --out");
  if (!have_state && resume)
    throw Error("--resume: " + out_dir + " holds no training state (" + state_file + ")");
}

void metrics_truncate(const std::string& path, int64_t step) {
  std::ifstream f(path);
  if (!f) return;
  std::string line, kept;
  while (std::getline(f, line)) {
    try {
      if (json::parse(line).value("step", int64_t(0)) <= step) kept += line + "\n";
    } catch (const json::exception&) {
      break;  // a torn last line from a crash
    }
  }
  write_file_atomic(path, kept);
}

}  // namespace elastic::train
