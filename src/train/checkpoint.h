// What the training loops (router training, backbone pretraining) share about their checkpoints:
// a training state is one safetensors file holding the parameter groups' values and AdamW
// moments under name prefixes, with a JSON metadata entry (version, step, and a fingerprint of
// the run's shape and options that a resume must match); metrics.jsonl is cut back to the saved
// step when a run resumes.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "elastic/safetensors.h"
#include "train/engine.h"

namespace elastic::train {

struct StatePart {
  ParamState state;
  const char* prefix;  // tensor names are prefix + parameter name
};

// Appends a group's states to `items`, one tensor per parameter and part.
void state_items_add(std::vector<SafetensorsWriteItem>& items, TrainEngine& eng, ParamGroup g,
                     const std::vector<StatePart>& parts);

// Sets a group's states from `file` (at `path`); a missing tensor is an error naming it and
// `missing_hint`, a shape other than the model's names both shapes.
void state_items_load(const SafetensorsFile& file, const std::string& path, TrainEngine& eng,
                      ParamGroup g, const std::vector<StatePart>& parts,
                      const std::string& missing_hint);

// One tensor of `file` as fp32, checked as above.
std::vector<float> state_tensor_read(const SafetensorsFile& file, const std::string& path,
                                     const std::string& name, const Shape& shape,
                                     const std::string& missing_hint);

// The metadata under `key`, checked: present, valid JSON, `version`, and every entry of
// `fingerprint` equal to the saved one. `what` names the state in the errors ("a training
// state"); `resume_hint` ends the fingerprint error.
nlohmann::json state_meta_checked(const SafetensorsFile& file, const std::string& path,
                                  const std::string& key, int version,
                                  const nlohmann::json& fingerprint, const std::string& what,
                                  const std::string& resume_hint);

// The output folder of a run against --resume: a run into a folder that holds `state_file` needs
// --resume, a resume needs it; each mismatch is an error naming the folder and the file.
void run_folder_check(const std::string& out_dir, const char* state_file, bool resume);

// Keeps the lines of a metrics.jsonl with "step" <= step (a resumed run rewrites what followed);
// stops at a torn last line. Written atomically; no file: nothing to do.
void metrics_truncate(const std::string& path, int64_t step);

}  // namespace elastic::train
