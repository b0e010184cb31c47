// Fuzz target: a ModelInferRequest as it arrives on the wire (serialized protobuf), checked the way
// the service checks it and then, when valid, run through a live model with the CPU backend.
//
// Every input either gets a clean refusal or an answer, and a valid request's answer must be the
// forward of exactly its own rows: its bytes (FP32, FP16 or BF16; raw or typed) decoded here
// independently of the server and run through the fast forward. Two configs see each request: a
// batched model (max_batch_size 8, three priority levels) and one without batching.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>  // SetLogHandler, to quiet protobuf's parse warnings

#include "absl/time/clock.h"
#include "kernels/numerics/fp8.h"
#include "server/execution/servable_model.h"
#include "server/grpc/request_validation.h"
#include "server/repository/model_config.h"
#include "tests/fuzz/fuzz_serving.h"

namespace fp8serve {
namespace {

using fuzz::Fail;
using fuzz::kModelIn;
using fuzz::kModelOut;

struct Served {
  inference::ModelConfig config;
  std::shared_ptr<ServableModel> model;
};

inference::ModelConfig MakeConfig(const std::string& name, int max_batch_size) {
  inference::ModelConfig c;
  c.set_name(name);
  c.set_platform(kPlatform);
  c.set_max_batch_size(max_batch_size);
  auto* in = c.add_input();
  in->set_name("input");
  in->set_data_type(inference::TYPE_FP32);
  in->add_dims(kModelIn);
  auto* out = c.add_output();
  out->set_name("logits");
  out->set_data_type(inference::TYPE_FP32);
  out->add_dims(kModelOut);
  return c;
}

const MlpWeights& Weights() {
  static const MlpWeights w = fuzz::SmallMlp(/*seed=*/5);
  return w;
}

Served& Model(bool batched) {
  static Served* served[2] = {nullptr, nullptr};
  Served*& s = served[batched ? 1 : 0];
  if (s == nullptr) {
    s = new Served;  // lives for the process: its threads must outlive every run
    s->config = MakeConfig(batched ? "batched" : "single", batched ? 8 : 0);
    ServableModel::Options o;
    o.name = s->config.name();
    o.max_batch_size = batched ? 8 : 1;
    o.priority_levels = batched ? 3 : 1;
    o.default_priority_level = batched ? 2 : 1;
    o.max_queue_delay = absl::Microseconds(50);
    o.backend = BackendKind::kCpu;
    absl::StatusOr<std::shared_ptr<ServableModel>> m = ServableModel::Create(o, Weights());
    if (!m.ok()) Fail("the model did not start: " + m.status().ToString());
    s->model = *std::move(m);
  }
  return *s;
}

// The request's rows as FP32, decoded from its own fields without the server's code.
std::vector<float> DecodeRows(const inference::ModelInferRequest& req, const ValidatedRequest& v) {
  const size_t n = static_cast<size_t>(v.rows) * kModelIn;
  std::vector<float> x(n);
  if (req.raw_input_contents_size() == 0) {
    for (size_t i = 0; i < n; ++i) x[i] = req.inputs(0).contents().fp32_contents(static_cast<int>(i));
    return x;
  }
  const std::string& raw = req.raw_input_contents(0);
  const size_t elem = v.input_type == InputType::kFp32 ? 4 : 2;
  if (raw.size() != n * elem) Fail("a valid request's raw bytes do not match its shape");
  if (v.input != raw.data()) Fail("a valid request's input does not point at its raw bytes");
  for (size_t i = 0; i < n; ++i) {
    if (elem == 4) {
      std::memcpy(&x[i], raw.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      x[i] = v.input_type == InputType::kBf16 ? Bf16ToFloat(h) : F16ToFloat(h);
    }
  }
  return x;
}

void Run(const inference::ModelInferRequest& req, bool batched) {
  Served& s = Model(batched);
  absl::StatusOr<ValidatedRequest> v = ValidateInferRequest(req, s.config);
  if (!v.ok()) {
    if (v.status().code() != absl::StatusCode::kInvalidArgument) Fail("a refusal that is not INVALID_ARGUMENT");
    return;
  }
  if (v->rows < 1 || v->rows > (batched ? 8 : 1)) Fail("a valid request with a row count outside the model's range");
  const std::vector<float> x = DecodeRows(req, *v);

  const absl::Time deadline = v->timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + v->timeout;
  const fuzz::Answer a = fuzz::Ask(*s.model, v->rows, v->priority, deadline, v->input, v->input_type);
  if (!a.queued.ok()) {
    // Refused at the queue: a priority above the model's levels, or a deadline already past.
    if (a.queued.code() != absl::StatusCode::kInvalidArgument && a.queued.code() != absl::StatusCode::kDeadlineExceeded) {
      Fail("the queue refused a valid request with " + a.queued.ToString());
    }
    return;
  }
  if (!a.status.ok()) {
    if (a.status.code() == absl::StatusCode::kDeadlineExceeded && v->timeout != absl::InfiniteDuration()) return;
    Fail("a valid request failed: " + a.status.ToString());
  }
  if (a.rows != v->rows || a.cols != kModelOut) Fail("an answer of the wrong shape");
  // The forward of its own rows. Values beyond FP32's comfortable range may overflow differently
  // in another summation order, and non-finite ones compare as such: check the tame ones.
  for (float f : x) {
    if (!std::isfinite(f) || std::fabs(f) > 1e4f) return;
  }
  const std::vector<float> want = test::FastOutputs(Weights(), x, v->rows);
  if (!test::RowsClose(a.out, want, kModelOut, test::kVsOtherBatch)) Fail("an answer that is not its request's forward");
}

}  // namespace
}  // namespace fp8serve

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field with invalid UTF-8 that it refuses to parse.
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inference::ModelInferRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  fp8serve::Run(req, /*batched=*/true);
  fp8serve::Run(req, /*batched=*/false);
  return 0;
}
