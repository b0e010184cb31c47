#include "server/model/mlp_model.h"

#include <cmath>
#include <memory>
#include <regex>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model/safetensors.h"

namespace fp8serve {

namespace {

absl::Status Error(const SafetensorsFile& f, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(f.path(), ": ", what));
}
absl::Status TensorError(const SafetensorsFile& f, const std::string& tensor, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(f.path(), ": tensor '", tensor, "': ", what));
}
std::string ShapeString(const std::vector<int64_t>& s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

bool IsFloat(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

absl::StatusOr<Activation> ParseActivation(const SafetensorsFile& f) {
  const auto it = f.metadata().find("activation");
  if (it == f.metadata().end() || it->second == "relu") return Activation::kRelu;
  if (it->second == "identity" || it->second == "none") return Activation::kIdentity;
  return Error(f, absl::StrCat("__metadata__ activation '", it->second, "' is not supported (relu, identity)"));
}

// Reads a [out] bias of a float dtype.
absl::Status ReadBias(const SafetensorsFile& f, const TensorInfo& t, int out, MlpLayer& layer) {
  if (!IsFloat(t.dtype)) return TensorError(f, t.name, absl::StrCat("bias must be F32, BF16 or F16, not ", DTypeName(t.dtype)));
  if (t.shape.size() != 1 || t.shape[0] != out) {
    return TensorError(f, t.name, absl::StrCat("bias shape ", ShapeString(t.shape), " does not match [", out, "]"));
  }
  absl::StatusOr<std::vector<float>> b = f.ReadAsFloat(t);
  if (!b.ok()) return b.status();
  layer.bias = *std::move(b);
  return absl::OkStatus();
}

absl::Status CheckChain(const SafetensorsFile& f, const std::vector<MlpLayer>& layers) {
  if (layers.empty()) return Error(f, "no layers: expected tensors named layers.0.weight, layers.1.weight, ...");
  for (size_t i = 0; i + 1 < layers.size(); ++i) {
    if (layers[i].out != layers[i + 1].in) {
      return Error(f, absl::StrCat("shapes do not chain: layer ", i, " has ", layers[i].out, " outputs but layer ", i + 1,
                                   " takes ", layers[i + 1].in, " inputs"));
    }
  }
  return absl::OkStatus();
}

// A layer index: decimal digits without leading zeros, at most 6 of them (no model has a million layers).
absl::StatusOr<int64_t> ParseIndex(const std::string& s) {
  if (s.empty() || s.size() > 6 || (s.size() > 1 && s[0] == '0')) return absl::InvalidArgumentError("bad index");
  int64_t v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

// Weights are [out, in] with both sizes in 1..2^20.
bool PlausibleWeightShape(const std::vector<int64_t>& s) {
  return s.size() == 2 && s[0] > 0 && s[1] > 0 && s[0] <= (1 << 20) && s[1] <= (1 << 20);
}

}  // namespace

absl::StatusOr<MlpModel> LoadMlpModel(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(path);
  if (!opened.ok()) return opened.status();
  const SafetensorsFile& f = **opened;

  MlpModel model;
  model.metadata = f.metadata();
  const auto fmt = f.metadata().find("format");
  if (fmt == f.metadata().end()) return Error(f, absl::StrCat("__metadata__ has no \"format\" (want \"", kMlpFormatV1, "\")"));
  if (fmt->second != kMlpFormatV1) {
    return Error(f, absl::StrCat("__metadata__ format '", fmt->second, "' is not '", kMlpFormatV1, "'"));
  }
  absl::StatusOr<Activation> act = ParseActivation(f);
  if (!act.ok()) return act.status();
  model.weights.activation = *act;

  // Group tensors by layer; anything not named layers.{i}.{weight,weight_scale,bias} is an error,
  // since an unexpected tensor usually means a file for another model.
  static const std::regex kName(R"(layers\.(\d+)\.(weight|weight_scale|bias))");
  struct Parts {
    const TensorInfo* weight = nullptr;
    const TensorInfo* scale = nullptr;
    const TensorInfo* bias = nullptr;
  };
  std::map<int64_t, Parts> parts;
  for (const TensorInfo& t : f.tensors()) {
    std::smatch m;
    absl::StatusOr<int64_t> idx = absl::InvalidArgumentError("");
    if (std::regex_match(t.name, m, kName)) idx = ParseIndex(m[1].str());
    if (!idx.ok()) {
      return TensorError(f, t.name, "unexpected tensor (want layers.{i}.weight, layers.{i}.weight_scale, layers.{i}.bias)");
    }
    Parts& p = parts[*idx];
    const std::string kind = m[2].str();
    (kind == "weight" ? p.weight : kind == "bias" ? p.bias : p.scale) = &t;
  }
  const int64_t num_layers = parts.empty() ? 0 : parts.rbegin()->first + 1;
  for (int64_t i = 0; i < num_layers; ++i) {
    const auto it = parts.find(i);
    if (it == parts.end() || it->second.weight == nullptr) {
      return Error(f, absl::StrCat("layer ", i, " is missing: no tensor layers.", i, ".weight (the file has layers up to ",
                                   num_layers - 1, ")"));
    }
    const Parts& p = it->second;
    const TensorInfo& w = *p.weight;
    if (!PlausibleWeightShape(w.shape)) {
      return TensorError(f, w.name, absl::StrCat("weight shape ", ShapeString(w.shape), " is not [out, in] with sizes in 1..2^20"));
    }
    MlpLayer layer;
    layer.out = static_cast<int>(w.shape[0]);
    layer.in = static_cast<int>(w.shape[1]);
    if (IsFloat(w.dtype)) {
      if (p.scale != nullptr) return TensorError(f, p.scale->name, "a weight_scale is only allowed with FP8 weights");
      layer.quantized = false;
      absl::StatusOr<std::vector<float>> v = f.ReadAsFloat(w);
      if (!v.ok()) return v.status();
      layer.f32 = *std::move(v);
    } else {
      layer.quantized = true;
      layer.format = w.dtype == DType::kF8E4M3 ? Fp8Format::kE4M3 : Fp8Format::kE5M2;
      if (p.scale == nullptr) {
        return Error(f, absl::StrCat("layer ", i, ": FP8 weight ", w.name, " has no layers.", i, ".weight_scale"));
      }
      const TensorInfo& s = *p.scale;
      if (s.dtype != DType::kF32) return TensorError(f, s.name, absl::StrCat("weight_scale must be F32, not ", DTypeName(s.dtype)));
      const int out = layer.out, in = layer.in;
      if (s.shape.empty()) {
        layer.granularity = ScaleGranularity::kPerTensor;
      } else if (s.shape.size() == 1 && s.shape[0] == out) {
        layer.granularity = ScaleGranularity::kPerChannel;
      } else if (s.shape.size() == 2 && s.shape[0] == CeilDiv(out, kQuantBlock) && s.shape[1] == CeilDiv(in, kQuantBlock)) {
        layer.granularity = ScaleGranularity::kBlock128;
      } else {
        return TensorError(f, s.name, absl::StrCat("scale shape ", ShapeString(s.shape), " matches no granularity for weight [",
                                                   out, ", ", in, "]: want [] (tensor), [", out, "] (channel) or [",
                                                   CeilDiv(out, kQuantBlock), ", ", CeilDiv(in, kQuantBlock), "] (128x128 block)"));
      }
      absl::StatusOr<std::vector<float>> scales = f.ReadAsFloat(s);
      if (!scales.ok()) return scales.status();
      for (size_t k = 0; k < scales->size(); ++k) {
        const float v = (*scales)[k];
        if (!std::isfinite(v) || !(v > 0.0f)) {
          return TensorError(f, s.name, absl::StrCat("scale #", k, " is ", v, ": scales must be finite and positive"));
        }
      }
      layer.scales = *std::move(scales);
      const std::span<const uint8_t> data = f.Data(w);
      layer.fp8.assign(data.begin(), data.end());
    }
    if (p.bias != nullptr) {
      if (absl::Status st = ReadBias(f, *p.bias, layer.out, layer); !st.ok()) return st;
    }
    model.weights.layers.push_back(std::move(layer));
  }
  if (absl::Status st = CheckChain(f, model.weights.layers); !st.ok()) return st;
  return model;
}

absl::Status SaveMlpModel(const std::string& path, const MlpWeights& weights,
                          const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> meta = {
      {"format", kMlpFormatV1}, {"activation", weights.activation == Activation::kRelu ? "relu" : "identity"}};
  for (const auto& [k, v] : metadata) {
    if (k != "format") meta[k] = v;
  }
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < weights.layers.size(); ++i) {
    const MlpLayer& l = weights.layers[i];
    const std::string prefix = absl::StrCat("layers.", i, ".");
    if (l.quantized) {
      tensors.push_back({prefix + "weight", l.format == Fp8Format::kE4M3 ? DType::kF8E4M3 : DType::kF8E5M2,
                         {l.out, l.in}, AsBytes(l.fp8)});
      std::vector<int64_t> sshape;
      if (l.granularity == ScaleGranularity::kPerChannel) sshape = {l.out};
      if (l.granularity == ScaleGranularity::kBlock128) sshape = {CeilDiv(l.out, kQuantBlock), CeilDiv(l.in, kQuantBlock)};
      tensors.push_back({prefix + "weight_scale", DType::kF32, sshape, AsBytes(l.scales)});
    } else {
      tensors.push_back({prefix + "weight", DType::kF32, {l.out, l.in}, AsBytes(l.f32)});
    }
    if (!l.bias.empty()) tensors.push_back({prefix + "bias", DType::kF32, {l.out}, AsBytes(l.bias)});
  }
  return WriteSafetensors(path, tensors, meta);
}

absl::StatusOr<MlpModel> LoadFloatCheckpoint(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(path);
  if (!opened.ok()) return opened.status();
  const SafetensorsFile& f = **opened;
  MlpModel model;
  model.metadata = f.metadata();
  absl::StatusOr<Activation> act = ParseActivation(f);
  if (!act.ok()) return act.status();
  model.weights.activation = *act;

  // Our naming, or "<prefix><j>.weight" with one common prefix (nn.Sequential's state dict).
  static const std::regex kOurs(R"(layers\.(\d+)\.(weight|bias))");
  static const std::regex kSequential(R"((.*?)(\d+)\.(weight|bias))");
  std::map<int64_t, std::pair<const TensorInfo*, const TensorInfo*>> layers;  // index -> (weight, bias)
  std::set<std::string> prefixes;
  bool ours = false, sequential = false;
  for (const TensorInfo& t : f.tensors()) {
    std::smatch m;
    absl::StatusOr<int64_t> idx = absl::InvalidArgumentError("");
    bool is_weight = false;
    if (std::regex_match(t.name, m, kOurs)) {
      ours = true;
      idx = ParseIndex(m[1].str());
      is_weight = m[2] == "weight";
    } else if (std::regex_match(t.name, m, kSequential)) {
      sequential = true;
      prefixes.insert(m[1].str());
      idx = ParseIndex(m[2].str());
      is_weight = m[3] == "weight";
    } else if (t.name.ends_with(".weight_scale")) {
      return TensorError(f, t.name, "the checkpoint is already quantized (it has weight scales); quantize its FP32 original");
    } else {
      return TensorError(f, t.name, "unexpected tensor in a float checkpoint (want layers.{i}.weight/bias or {j}.weight/bias)");
    }
    if (!idx.ok()) return TensorError(f, t.name, "layer index is not a plain number below 1000000");
    auto& slot = layers[*idx];
    (is_weight ? slot.first : slot.second) = &t;
  }
  if (ours && sequential) return Error(f, "mixes layers.{i}.* names with nn.Sequential {j}.* names");
  if (prefixes.size() > 1) return Error(f, absl::StrCat("tensors under several prefixes: ", absl::StrJoin(prefixes, ", ")));
  int64_t expect = 0;
  for (const auto& [idx, wb] : layers) {
    if (wb.first == nullptr) {
      return TensorError(f, wb.second->name, "bias without a matching weight");
    }
    if (ours && idx != expect) return Error(f, absl::StrCat("layer ", expect, " is missing: no tensor layers.", expect, ".weight"));
    ++expect;
    const TensorInfo& w = *wb.first;
    if (!IsFloat(w.dtype)) return TensorError(f, w.name, absl::StrCat("expected a float weight, found ", DTypeName(w.dtype)));
    if (!PlausibleWeightShape(w.shape)) {
      return TensorError(f, w.name, absl::StrCat("weight shape ", ShapeString(w.shape), " is not [out, in] with sizes in 1..2^20"));
    }
    MlpLayer layer;
    layer.quantized = false;
    layer.out = static_cast<int>(w.shape[0]);
    layer.in = static_cast<int>(w.shape[1]);
    absl::StatusOr<std::vector<float>> v = f.ReadAsFloat(w);
    if (!v.ok()) return v.status();
    for (float x : *v) {
      if (!std::isfinite(x)) return TensorError(f, w.name, "contains NaN or inf");
    }
    layer.f32 = *std::move(v);
    if (wb.second != nullptr) {
      if (absl::Status st = ReadBias(f, *wb.second, layer.out, layer); !st.ok()) return st;
    }
    model.weights.layers.push_back(std::move(layer));
  }
  if (absl::Status st = CheckChain(f, model.weights.layers); !st.ok()) return st;
  return model;
}

}  // namespace fp8serve
