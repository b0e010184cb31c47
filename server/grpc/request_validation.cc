#include "server/grpc/request_validation.h"

#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fp8serve {

namespace {

absl::Status Invalid(const std::string& model, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("model '", model, "': ", what));
}

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ","), "]");
}

// An integer request parameter, whichever integer field the client used.
absl::StatusOr<int64_t> IntParameter(const inference::InferParameter& p, const std::string& name) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kInt64Param: return p.int64_param();
    case inference::InferParameter::kUint64Param:
      if (p.uint64_param() > static_cast<uint64_t>(INT64_MAX)) break;
      return static_cast<int64_t>(p.uint64_param());
    default: break;
  }
  return absl::InvalidArgumentError(absl::StrCat("parameter '", name, "' must be an integer"));
}

}  // namespace

const char* ProtocolDataType(inference::DataType t) {
  switch (t) {
    case inference::TYPE_BOOL: return "BOOL";
    case inference::TYPE_UINT8: return "UINT8";
    case inference::TYPE_UINT16: return "UINT16";
    case inference::TYPE_UINT32: return "UINT32";
    case inference::TYPE_UINT64: return "UINT64";
    case inference::TYPE_INT8: return "INT8";
    case inference::TYPE_INT16: return "INT16";
    case inference::TYPE_INT32: return "INT32";
    case inference::TYPE_INT64: return "INT64";
    case inference::TYPE_FP16: return "FP16";
    case inference::TYPE_FP32: return "FP32";
    case inference::TYPE_FP64: return "FP64";
    case inference::TYPE_STRING: return "BYTES";
    case inference::TYPE_BF16: return "BF16";
    default: return "INVALID";
  }
}

absl::StatusOr<int64_t> ParseModelVersion(const std::string& version) {
  if (version.empty()) return 0;
  int64_t v = 0;
  if (!absl::SimpleAtoi(version, &v) || v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("model version '", version, "' is not a positive integer"));
  }
  return v;
}

absl::StatusOr<ValidatedRequest> ValidateInferRequest(const inference::ModelInferRequest& req,
                                                      const inference::ModelConfig& config) {
  const std::string& model = config.name();
  const inference::ModelInput& in_cfg = config.input(0);
  const inference::ModelOutput& out_cfg = config.output(0);
  const int64_t width = in_cfg.dims(0);
  const bool batched = config.max_batch_size() > 0;
  ValidatedRequest v;

  // Inputs: exactly the model's one input, once.
  if (req.inputs_size() != 1) {
    std::vector<std::string> names;
    for (const auto& i : req.inputs()) names.push_back("'" + i.name() + "'");
    return Invalid(model, absl::StrCat("expected 1 input ('", in_cfg.name(), "') but got ", req.inputs_size(),
                                       names.empty() ? "" : ": " + absl::StrJoin(names, ", ")));
  }
  const inference::ModelInferRequest::InferInputTensor& in = req.inputs(0);
  if (in.name() != in_cfg.name()) {
    return Invalid(model, absl::StrCat("unknown input '", in.name(), "' (the model's input is '", in_cfg.name(), "')"));
  }

  // Datatype: FP32 as configured, or FP16/BF16 which the server converts.
  if (in.datatype() == "FP32") {
    v.input_type = InputType::kFp32;
  } else if (in.datatype() == "FP16") {
    v.input_type = InputType::kFp16;
  } else if (in.datatype() == "BF16") {
    v.input_type = InputType::kBf16;
  } else {
    return Invalid(model, absl::StrCat("input '", in.name(), "' has datatype '", in.datatype(),
                                       "'; expected FP32 (FP16 and BF16 are also accepted)"));
  }

  // Shape: [rows, width] with 1 <= rows <= max_batch_size, or [width] for a model without batching.
  const auto& shape = in.shape();
  const std::string expect =
      batched ? absl::StrCat("[-1,", width, "] with 1 to ", config.max_batch_size(), " rows") : absl::StrCat("[", width, "]");
  if (batched) {
    if (shape.size() != 2) {
      return Invalid(model, absl::StrCat("input '", in.name(), "' has shape ", ShapeString(shape), " (rank ", shape.size(),
                                         "); expected ", expect));
    }
    if (shape[1] != width) {
      return Invalid(model, absl::StrCat("input '", in.name(), "' has shape ", ShapeString(shape), "; expected ", expect));
    }
    if (shape[0] < 1) return Invalid(model, absl::StrCat("input '", in.name(), "' has batch size ", shape[0], "; expected >= 1"));
    if (shape[0] > config.max_batch_size()) {
      return Invalid(model, absl::StrCat("inference request batch-size must be <= ", config.max_batch_size(),
                                         " for '", model, "', got ", shape[0]));
    }
    v.rows = static_cast<int>(shape[0]);
  } else {
    if (shape.size() != 1 || shape[0] != width) {
      return Invalid(model, absl::StrCat("input '", in.name(), "' has shape ", ShapeString(shape), "; expected ", expect));
    }
    v.rows = 1;
  }
  const size_t elems = static_cast<size_t>(v.rows) * static_cast<size_t>(width);

  // Contents: raw bytes or typed values, exactly one of them.
  const bool has_raw = req.raw_input_contents_size() > 0;
  const bool has_typed = in.has_contents() && in.contents().ByteSizeLong() > 0;
  if (has_raw && has_typed) {
    return Invalid(model, absl::StrCat("input '", in.name(), "' has both raw_input_contents and typed contents; send one"));
  }
  if (!has_raw && !has_typed) return Invalid(model, absl::StrCat("input '", in.name(), "' has no data"));
  if (has_raw) {
    if (req.raw_input_contents_size() != 1) {
      return Invalid(model, absl::StrCat("expected 1 raw_input_contents entry (one per input) but got ",
                                         req.raw_input_contents_size()));
    }
    const std::string& raw = req.raw_input_contents(0);
    const size_t want = elems * InputTypeSize(v.input_type);
    if (raw.size() != want) {
      return Invalid(model, absl::StrCat("input '", in.name(), "' has ", raw.size(), " bytes of raw data but shape ",
                                         ShapeString(shape), " of ", in.datatype(), " needs ", want));
    }
    v.input = raw.data();
  } else {
    if (v.input_type != InputType::kFp32) {
      return Invalid(model, absl::StrCat("input '", in.name(), "' of ", in.datatype(),
                                         " must use raw_input_contents (the protocol has no typed field for it)"));
    }
    const auto& c = in.contents();
    if (c.fp32_contents_size() == 0) {
      return Invalid(model, absl::StrCat("input '", in.name(), "' is FP32 but its typed contents are not in fp32_contents"));
    }
    if (static_cast<size_t>(c.fp32_contents_size()) != elems) {
      return Invalid(model, absl::StrCat("input '", in.name(), "' has ", c.fp32_contents_size(), " fp32_contents values but shape ",
                                         ShapeString(shape), " needs ", elems));
    }
    v.input = c.fp32_contents().data();
  }

  // Requested outputs: none means all; each must exist, once, and classification is not offered.
  std::set<std::string> seen;
  for (const auto& o : req.outputs()) {
    if (o.name() != out_cfg.name()) {
      return Invalid(model, absl::StrCat("unknown output '", o.name(), "' requested (the model's output is '", out_cfg.name(), "')"));
    }
    if (!seen.insert(o.name()).second) return Invalid(model, absl::StrCat("output '", o.name(), "' requested twice"));
    if (auto it = o.parameters().find("classification"); it != o.parameters().end()) {
      return Invalid(model, "the classification extension is not supported; request the raw logits");
    }
  }

  // Request parameters fp8serve honours: priority and timeout (microseconds).
  if (auto it = req.parameters().find("priority"); it != req.parameters().end()) {
    absl::StatusOr<int64_t> p = IntParameter(it->second, "priority");
    if (!p.ok()) return Invalid(model, std::string(p.status().message()));
    if (*p < 0 || *p > 1'000'000) return Invalid(model, absl::StrCat("priority ", *p, " is out of range"));
    v.priority = static_cast<int>(*p);
  }
  if (auto it = req.parameters().find("timeout"); it != req.parameters().end()) {
    absl::StatusOr<int64_t> t = IntParameter(it->second, "timeout");
    if (!t.ok()) return Invalid(model, std::string(t.status().message()));
    if (*t < 0) return Invalid(model, absl::StrCat("timeout ", *t, " must be >= 0 microseconds"));
    if (*t > 0) v.timeout = absl::Microseconds(*t);
  }
  return v;
}

}  // namespace fp8serve
