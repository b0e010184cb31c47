// Prometheus metrics: a real loopback server, real HTTP scrapes of /metrics, exact counts against
// what was sent, Prometheus' own promtool on the scraped text, series following loads and
// unloads, bounded labels for unknown models, GPU gauges through a fake NVML, scraping under load,
// and the fp8serve binary's --metrics-address / --allow-metrics / --metrics-port-file flags.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/execution/backend.h"
#include "server/metrics/gpu_metrics.h"
#include "server/metrics/metrics.h"
#include "tests/server/testing/test_models.h"

extern char** environ;

namespace fp8serve::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Labels = std::map<std::string, std::string>;

constexpr int kIn = 64;

// ---- Scraping ---------------------------------------------------------------------------------

struct HttpResponse {
  int status = 0;
  std::string headers, body;
};

// Sends `req` as is to 127.0.0.1:<port> and reads the response until the server closes.
absl::StatusOr<HttpResponse> HttpRequest(int port, const std::string& req, absl::Duration timeout = absl::Seconds(10)) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket");
  timeval tv{};
  tv.tv_sec = absl::ToInt64Seconds(timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port, ": ", std::strerror(errno)));
  }
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return absl::InternalError("send");
  }
  std::string raw;
  char buf[65536];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      close(fd);
      return absl::DeadlineExceededError(absl::StrCat("recv: ", std::strerror(errno)));
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t split = raw.find("\r\n\r\n");
  if (split == std::string::npos || raw.rfind("HTTP/1.", 0) != 0) return absl::InternalError("bad HTTP response: " + raw);
  HttpResponse r;
  r.status = std::atoi(raw.c_str() + raw.find(' ') + 1);
  r.headers = raw.substr(0, split);
  r.body = raw.substr(split + 4);
  return r;
}

// GET http://127.0.0.1:<port><path> with HTTP/1.0 (the server closes the connection after the body).
absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path) {
  return HttpRequest(port, absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"));
}

struct Sample {
  std::string name;
  Labels labels;
  double value;
};

// Parses Prometheus' text format (what prometheus-cpp writes: no timestamps needed).
std::vector<Sample> ParseExposition(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t i = line.find_first_of("{ ");
    s.name = line.substr(0, i);
    if (i != std::string::npos && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        const std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;  // past ="
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // past }
    }
    s.value = std::strtod(line.c_str() + line.find_first_not_of(' ', i), nullptr);
    out.push_back(std::move(s));
  }
  return out;
}

class Scrape {
 public:
  explicit Scrape(std::string text) : text_(std::move(text)), samples_(ParseExposition(text_)) {}
  const std::string& text() const { return text_; }
  // The sample with exactly these labels, if present.
  std::optional<double> Get(const std::string& name, const Labels& labels) const {
    for (const Sample& s : samples_) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return std::nullopt;
  }
  // Get(), with 0 for a missing sample reported as a failure.
  double Value(const std::string& name, const Labels& labels) const {
    std::optional<double> v = Get(name, labels);
    EXPECT_TRUE(v.has_value()) << "no sample " << name << Describe(labels);
    return v.value_or(-1);
  }
  // Every sample of any metric whose labels include all of `labels`.
  std::vector<Sample> Matching(const Labels& labels) const {
    std::vector<Sample> out;
    for (const Sample& s : samples_) {
      bool all = true;
      for (const auto& [k, v] : labels) {
        auto it = s.labels.find(k);
        all = all && it != s.labels.end() && it->second == v;
      }
      if (all) out.push_back(s);
    }
    return out;
  }
  std::vector<Sample> Named(const std::string& name) const {
    std::vector<Sample> out;
    for (const Sample& s : samples_) {
      if (s.name == name) out.push_back(s);
    }
    return out;
  }
  static std::string Describe(const Labels& labels) {
    std::string s = "{";
    for (const auto& [k, v] : labels) absl::StrAppend(&s, s.size() > 1 ? "," : "", k, "=\"", v, "\"");
    return s + "}";
  }

 private:
  std::string text_;
  std::vector<Sample> samples_;
};

absl::StatusOr<Scrape> ScrapeMetrics(int port) {
  absl::StatusOr<HttpResponse> r = HttpGet(port, "/metrics");
  if (!r.ok()) return r.status();
  if (r->status != 200) return absl::InternalError(absl::StrCat("HTTP ", r->status, ": ", r->body));
  return Scrape(r->body);
}

Labels MV(const std::string& model, const std::string& version) { return {{"model", model}, {"version", version}}; }
Labels MVO(const std::string& model, const std::string& version, const std::string& outcome) {
  return {{"model", model}, {"version", version}, {"outcome", outcome}};
}

std::string Promtool() {
  for (const char* p : {"/usr/bin/promtool", "/usr/local/bin/promtool"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

// Runs `command`, returns its exit status and puts stdout+stderr in *output.
int RunCommand(const std::string& command, std::string* output) {
  std::FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// ---- 1. Exact counts over a real server and a real scrape ----------------------------------------

// What the suite sends, once per test process.
struct Traffic {
  int good = 0, good_rows = 0, invalid = 0, mlp_timeouts = 0;
  int slow_timeouts = 0, slow_cancelled = 0;
  int qfull_ok = 0, qfull_full = 0;
  int not_found = 0, bad_version = 0;
};

class MetricsEndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new TempModelRepository();
    // Two instances, so that fp8serve_model_instances has something to say.
    repo_->AddModel(MakeSpec("mlp", 8, "dynamic_batching { max_queue_delay_microseconds: 100 } "
                                       "instance_group [ { count: 2 kind: KIND_CPU } ]"),
                    RandomMlp({kIn, 32, 10}, 1));
    // A queued request waits 200 ms for company: a 50 ms timeout expires in the queue.
    repo_->AddModel(MakeSpec("slow", 8, "dynamic_batching { max_queue_delay_microseconds: 200000 }"),
                    RandomMlp({kIn, 16, 10}, 2));
    // One queued request at most, held 300 ms: of three at once, two find the queue full.
    repo_->AddModel(
        MakeSpec("qfull", 8,
                 "dynamic_batching { max_queue_delay_microseconds: 300000 default_queue_policy { max_queue_size: 1 } }"),
        RandomMlp({kIn, 16, 10}, 3));
    // A model that fails to load: its config says 100 inputs, its weights take 64.
    ConfigSpec broken = MakeSpec("broken", 8);
    broken.input_dim = 100;
    repo_->WriteConfig("broken", ConfigText(broken));
    repo_->WriteWeights("broken", 1, RandomMlp({kIn, 16, 10}, 4));

    TestServer::Options o;
    o.metrics = true;
    o.nvml_library = FAKE_NVML_PATH;
    absl::StatusOr<std::unique_ptr<TestServer>> s = TestServer::Start(RepositoryOptions(repo_->root()), o);
    if (!s.ok()) {
      start_error_ = new std::string(s.status().ToString());
      return;
    }
    server_ = s->release();
    traffic_ = new Traffic(Send(*server_));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete repo_;
    delete traffic_;
    delete start_error_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << (start_error_ ? *start_error_ : ""); }

  static Traffic Send(TestServer& server) {
    Traffic t;
    std::mt19937 rng(7);
    const std::vector<float> x = RandomInputs(9 * kIn, rng);
    inference::ModelInferResponse resp;
    auto expect = [](const grpc::Status& st, grpc::StatusCode code) {
      EXPECT_EQ(st.error_code(), code) << st.error_message();
    };
    // Good requests of 1, 2, 3 and 4 rows.
    for (int i = 0; i < 12; ++i) {
      const int rows = 1 + i % 4;
      expect(Infer(server.stub(), MakeInferRequest("mlp", "input", x, rows, kIn), &resp), grpc::StatusCode::OK);
      ++t.good;
      t.good_rows += rows;
    }
    // Invalid: the wrong width (validation), and more rows than max_batch_size.
    for (int i = 0; i < 4; ++i) {
      expect(Infer(server.stub(), MakeInferRequest("mlp", "input", x, 1, kIn - 1), &resp),
             grpc::StatusCode::INVALID_ARGUMENT);
      ++t.invalid;
    }
    expect(Infer(server.stub(), MakeInferRequest("mlp", "input", x, 9, kIn), &resp), grpc::StatusCode::INVALID_ARGUMENT);
    ++t.invalid;
    // A 1 us timeout has passed before the request reaches the queue.
    {
      inference::ModelInferRequest req = MakeInferRequest("mlp", "input", x, 1, kIn);
      (*req.mutable_parameters())["timeout"].set_int64_param(1);
      expect(Infer(server.stub(), req, &resp), grpc::StatusCode::DEADLINE_EXCEEDED);
      ++t.mlp_timeouts;
    }
    // A 50 ms timeout expires in the queue.
    {
      inference::ModelInferRequest req = MakeInferRequest("slow", "input", x, 1, kIn);
      (*req.mutable_parameters())["timeout"].set_int64_param(50'000);
      const grpc::Status st = Infer(server.stub(), req, &resp);
      expect(st, grpc::StatusCode::DEADLINE_EXCEEDED);
      EXPECT_THAT(st.error_message(), HasSubstr("timed out in the queue"));
      ++t.slow_timeouts;
    }
    // The client gives up while its request waits in the slow queue: the server drops it before
    // compute and counts it as cancelled when its batch forms (200 ms later).
    {
      inference::ModelInferRequest req = MakeInferRequest("slow", "input", x, 1, kIn);
      grpc::ClientContext ctx;
      SetDeadline(ctx);
      std::promise<grpc::Status> done;
      server.stub().async()->ModelInfer(&ctx, &req, &resp, [&done](grpc::Status st) { done.set_value(std::move(st)); });
      absl::SleepFor(absl::Milliseconds(20));
      ctx.TryCancel();
      expect(done.get_future().get(), grpc::StatusCode::CANCELLED);
      ++t.slow_cancelled;
      double counted = 0;
      for (int i = 0; i < 300 && counted < t.slow_cancelled; ++i) {
        absl::StatusOr<Scrape> m = ScrapeMetrics(server.metrics_port());
        if (m.ok()) counted = m->Value("fp8serve_requests_total", MVO("slow", "1", "cancelled"));
        if (counted < t.slow_cancelled) absl::SleepFor(absl::Milliseconds(10));
      }
    }
    // Queue full.
    {
      constexpr int kN = 3;
      std::vector<inference::ModelInferRequest> reqs(kN, MakeInferRequest("qfull", "input", x, 1, kIn));
      std::vector<inference::ModelInferResponse> resps(kN);
      std::vector<grpc::ClientContext> ctxs(kN);
      std::vector<std::promise<grpc::Status>> done(kN);
      for (int i = 0; i < kN; ++i) {
        SetDeadline(ctxs[i]);
        server.stub().async()->ModelInfer(&ctxs[i], &reqs[i], &resps[i],
                                          [&done, i](grpc::Status st) { done[i].set_value(std::move(st)); });
      }
      for (int i = 0; i < kN; ++i) {
        const grpc::Status st = done[i].get_future().get();
        if (st.ok()) {
          ++t.qfull_ok;
        } else {
          expect(st, grpc::StatusCode::UNAVAILABLE);
          ++t.qfull_full;
        }
      }
      EXPECT_EQ(t.qfull_ok, 1);
    }
    // Unknown model, and a version string that is not a number.
    for (int i = 0; i < 3; ++i) {
      expect(Infer(server.stub(), MakeInferRequest("nope", "input", x, 1, kIn), &resp), grpc::StatusCode::NOT_FOUND);
      ++t.not_found;
    }
    {
      inference::ModelInferRequest req = MakeInferRequest("mlp", "input", x, 1, kIn);
      req.set_model_version("latest");
      expect(Infer(server.stub(), req, &resp), grpc::StatusCode::INVALID_ARGUMENT);
      ++t.bad_version;
    }
    return t;
  }

  static TempModelRepository* repo_;
  static TestServer* server_;
  static Traffic* traffic_;
  static std::string* start_error_;
};
TempModelRepository* MetricsEndToEnd::repo_ = nullptr;
TestServer* MetricsEndToEnd::server_ = nullptr;
Traffic* MetricsEndToEnd::traffic_ = nullptr;
std::string* MetricsEndToEnd::start_error_ = nullptr;

TEST_F(MetricsEndToEnd, CountsAndGaugesMatchWhatWasSent) {
  const Traffic& t = *traffic_;
  absl::StatusOr<HttpResponse> http = HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(http.ok()) << http.status();
  EXPECT_EQ(http->status, 200);
  EXPECT_THAT(http->headers, HasSubstr("text/plain"));
  const Scrape m(http->body);

  // Requests by outcome, per version; every outcome series exists from the start (0 until used).
  const std::map<std::string, int> mlp = {{"success", t.good},   {"invalid", t.invalid},  {"queue_full", 0},
                                          {"timeout", t.mlp_timeouts}, {"cancelled", 0}, {"unavailable", 0},
                                          {"backend", 0}};
  for (const auto& [outcome, n] : mlp) {
    EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("mlp", "1", outcome)), n) << outcome;
  }
  EXPECT_FALSE(m.Get("fp8serve_requests_total", MVO("mlp", "1", "not_found")).has_value());
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("slow", "1", "timeout")), t.slow_timeouts);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("slow", "1", "cancelled")), t.slow_cancelled);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("slow", "1", "success")), 0);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("qfull", "1", "success")), t.qfull_ok);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("qfull", "1", "queue_full")), t.qfull_full);
  // Requests no version answered: version="".
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("nope", "", "not_found")), t.not_found);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("mlp", "", "invalid")), t.bad_version);

  // Rows and batches: every row of every good request, in at most one batch per request.
  const double executions = m.Value("fp8serve_executions_total", MV("mlp", "1"));
  EXPECT_EQ(m.Value("fp8serve_inferences_total", MV("mlp", "1")), t.good_rows);
  EXPECT_GE(executions, 1);
  EXPECT_LE(executions, t.good);
  EXPECT_EQ(m.Value("fp8serve_batch_size_rows_count", MV("mlp", "1")), executions);
  EXPECT_EQ(m.Value("fp8serve_batch_size_rows_sum", MV("mlp", "1")), t.good_rows);
  Labels inf = MV("mlp", "1");
  inf["le"] = "+Inf";
  EXPECT_EQ(m.Value("fp8serve_batch_size_rows_bucket", inf), executions);
  EXPECT_EQ(m.Value("fp8serve_executions_total", MV("qfull", "1")), 1);
  EXPECT_EQ(m.Value("fp8serve_executions_total", MV("slow", "1")), 0);

  // Every duration histogram counts each successful request once.
  for (const char* h : {"fp8serve_request_duration_seconds", "fp8serve_queue_duration_seconds",
                        "fp8serve_compute_input_duration_seconds", "fp8serve_compute_infer_duration_seconds",
                        "fp8serve_compute_output_duration_seconds"}) {
    EXPECT_EQ(m.Value(absl::StrCat(h, "_count"), MV("mlp", "1")), t.good) << h;
    EXPECT_EQ(m.Value(absl::StrCat(h, "_bucket"), inf), t.good) << h;
    EXPECT_GT(m.Value(absl::StrCat(h, "_sum"), MV("mlp", "1")), 0) << h;
    EXPECT_EQ(m.Value(absl::StrCat(h, "_count"), MV("qfull", "1")), t.qfull_ok) << h;
  }
  // The qfull request waited ~300 ms in the queue for company: its queue time says so.
  EXPECT_GT(m.Value("fp8serve_queue_duration_seconds_sum", MV("qfull", "1")), 0.2);
  Labels le_10us = MV("mlp", "1");
  le_10us["le"] = "1e-05";
  EXPECT_TRUE(m.Get("fp8serve_request_duration_seconds_bucket", le_10us).has_value())
      << "the 10 us bucket is missing (or is spelled differently):\n" << m.text();

  // Gauges.
  EXPECT_EQ(m.Value("fp8serve_pending_requests", MV("mlp", "1")), 0);
  EXPECT_EQ(m.Value("fp8serve_model_ready", MV("mlp", "1")), 1);
  EXPECT_EQ(m.Value("fp8serve_model_ready", MV("slow", "1")), 1);
  EXPECT_EQ(m.Value("fp8serve_model_instances", MV("mlp", "1")), 2);
  EXPECT_EQ(m.Value("fp8serve_model_instances", MV("slow", "1")), 1);
  EXPECT_EQ(m.Value("fp8serve_model_ready", MV("broken", "")), 0);
  EXPECT_FALSE(m.Get("fp8serve_model_instances", MV("broken", "")).has_value());
  EXPECT_EQ(m.Value("fp8serve_build_info", {{"version", "test"}, {"backend", "cpu"}, {"cuda", "none"}}), 1);
  // A batch's in-flight count drops just after its responses are sent: wait for it.
  double inflight = -1;
  for (int i = 0; i < 100 && inflight != 0; ++i) {
    absl::StatusOr<Scrape> again = ScrapeMetrics(server_->metrics_port());
    ASSERT_TRUE(again.ok()) << again.status();
    inflight = again->Value("fp8serve_inflight_batches", MV("mlp", "1"));
    if (inflight != 0) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(inflight, 0);

  // GPU gauges from the fake NVML (two devices).
  EXPECT_DOUBLE_EQ(m.Value("fp8serve_gpu_utilization_ratio", {{"gpu", "0"}, {"uuid", "GPU-fake-0"}}), 0.37);
  EXPECT_DOUBLE_EQ(m.Value("fp8serve_gpu_utilization_ratio", {{"gpu", "1"}, {"uuid", "GPU-fake-1"}}), 1.0);
  EXPECT_EQ(m.Value("fp8serve_gpu_memory_used_bytes", {{"gpu", "1"}, {"uuid", "GPU-fake-1"}}), 2.0 * (1 << 30));
  EXPECT_EQ(m.Value("fp8serve_gpu_memory_total_bytes", {{"gpu", "0"}, {"uuid", "GPU-fake-0"}}), 80.0 * (1 << 30));

}

// Debian's civetweb (prometheus-cpp's Exposer) segfaults this process on any of these: its 100 KiB
// worker stacks minus OpenBLAS's 60 KiB of TLS do not hold its error path. Ours answers them.
TEST_F(MetricsEndToEnd, OtherPathsMethodsAndGarbageGetAnswersNotCrashes) {
  const int port = server_->metrics_port();
  const struct {
    std::string request;
    int status;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404},
      {"GET /favicon.ico HTTP/1.0\r\n\r\n", 404},
      {"GET /metricsx HTTP/1.0\r\n\r\n", 404},
      {"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405},
      {"DELETE /metrics HTTP/1.1\r\n\r\n", 405},
      {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15), 400},  // a TLS hello
      {"GET metrics HTTP/1.0\r\n\r\n", 400},
      {std::string(20000, 'A') + "\r\n\r\n", 400},
      {"GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\n\r\n", 200},
  };
  for (const auto& c : cases) {
    absl::StatusOr<HttpResponse> r = HttpRequest(port, c.request);
    ASSERT_TRUE(r.ok()) << r.status() << " for " << c.request.substr(0, 40);
    EXPECT_EQ(r->status, c.status) << c.request.substr(0, 40);
  }
  absl::StatusOr<HttpResponse> head = HttpRequest(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->body, "");
  // A client that connects and says nothing does not stop others from scraping.
  const int idle = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(idle, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  absl::StatusOr<Scrape> m = ScrapeMetrics(port);
  close(idle);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Value("fp8serve_model_ready", MV("mlp", "1")), 1);
}

TEST_F(MetricsEndToEnd, PromtoolAcceptsTheScrape) {
  absl::StatusOr<Scrape> m = ScrapeMetrics(server_->metrics_port());
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string promtool = Promtool();
  if (promtool.empty()) {
    std::fprintf(stderr, "\n*** PROMTOOL CHECK SKIPPED: promtool not found (apt-get install -y prometheus) ***\n\n");
    GTEST_SKIP() << "promtool not found: apt-get install -y prometheus";
  }
  const std::string path = ::testing::TempDir() + "/fp8serve_metrics_scrape.txt";
  std::ofstream(path) << m->text();
  std::string output;
  const int rc = RunCommand(absl::StrCat(promtool, " check metrics < ", path), &output);
  EXPECT_EQ(rc, 0) << "promtool check metrics:\n" << output << "\non:\n" << m->text();
  std::remove(path.c_str());
}

// ---- 2. Series follow loads, reloads and unloads ------------------------------------------------

TEST(MetricsLifecycle, UnloadRemovesSeriesReloadKeepsCounting) {
  TempModelRepository repo;
  const MlpWeights w = RandomMlp({kIn, 16, 10}, 5);
  repo.AddModel(MakeSpec("m", 8), w);
  TestServer::Options o;
  o.metrics = true;
  absl::StatusOr<std::unique_ptr<TestServer>> s =
      TestServer::Start(RepositoryOptions(repo.root(), ModelControlMode::kExplicit, {"m"}), o);
  ASSERT_TRUE(s.ok()) << s.status();
  TestServer& server = **s;
  std::mt19937 rng(8);
  const std::vector<float> x = RandomInputs(kIn, rng);
  inference::ModelInferResponse resp;
  auto infer = [&](int n) {
    for (int i = 0; i < n; ++i) ASSERT_TRUE(Infer(server.stub(), MakeInferRequest("m", "input", x, 1, kIn), &resp).ok());
  };
  auto scrape = [&] {
    absl::StatusOr<Scrape> m = ScrapeMetrics(server.metrics_port());
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : Scrape("");
  };

  infer(3);
  Scrape m = scrape();
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("m", "1", "success")), 3);
  EXPECT_EQ(m.Value("fp8serve_model_ready", MV("m", "1")), 1);

  // A reload of the same version (new files) keeps its counters: rate() sees no reset.
  repo.WriteWeights("m", 1, w);
  ASSERT_TRUE(server.repository().Load("m").ok());
  infer(2);
  m = scrape();
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("m", "1", "success")), 5);
  EXPECT_EQ(m.Value("fp8serve_model_ready", MV("m", "1")), 1);

  // A new version replaces the old one (latest policy): version 1's series go, version 2's come.
  repo.WriteWeights("m", 2, w);
  ASSERT_TRUE(server.repository().Load("m").ok());
  infer(1);
  m = scrape();
  EXPECT_TRUE(m.Matching(MV("m", "1")).empty()) << m.text();
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("m", "2", "success")), 1);
  EXPECT_EQ(m.Value("fp8serve_model_ready", MV("m", "2")), 1);

  // Unloaded: no series of any version, and ready 0 with version="".
  ASSERT_TRUE(server.repository().Unload("m").ok());
  m = scrape();
  EXPECT_TRUE(m.Matching(MV("m", "2")).empty()) << m.text();
  EXPECT_EQ(m.Value("fp8serve_model_ready", MV("m", "")), 0);
  EXPECT_EQ(m.Named("fp8serve_model_ready").size(), 1u) << m.text();
  EXPECT_TRUE(m.Named("fp8serve_model_instances").empty()) << m.text();

  // Loaded again: ready, counting from zero. A load of a name that is in no repository fails and
  // leaves no series (clients must not grow the label set through RepositoryModelLoad).
  ASSERT_TRUE(server.repository().Load("m").ok());
  EXPECT_FALSE(server.repository().Load("ghost").ok());
  m = scrape();
  EXPECT_TRUE(m.Matching({{"model", "ghost"}}).empty()) << m.text();
  EXPECT_EQ(m.Value("fp8serve_model_ready", MV("m", "2")), 1);
  EXPECT_FALSE(m.Get("fp8serve_model_ready", MV("m", "")).has_value());
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("m", "2", "success")), 0);
}

// A backend that fails: its batch's requests get the error with INTERNAL, are counted as
// outcome="backend", and nothing else is touched (the requests before and after are answered
// correctly by the same model). A real backend fails like this only on a GPU (a kernel or copy
// error), so the test wraps the CPU backend and fails any batch whose first value is a marker.
class FailingBackend : public Backend {
 public:
  static constexpr float kMarker = 1234.5f;
  explicit FailingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  const char* name() const override { return inner_->name(); }
  int input_dim() const override { return inner_->input_dim(); }
  int output_dim() const override { return inner_->output_dim(); }
  int max_rows() const override { return inner_->max_rows(); }
  int num_instances() const override { return inner_->num_instances(); }
  int num_slots() const override { return inner_->num_slots(); }
  float* input(int slot, int rows) override { return inner_->input(slot, rows); }
  const float* output(int slot) const override { return inner_->output(slot); }
  std::string Describe() const override { return "failing on a marker, around " + inner_->Describe(); }
  std::optional<absl::Status> Launch(int slot, int rows) override {
    if (inner_->input(slot, rows)[0] == kMarker) return absl::InternalError("injected backend failure");
    return inner_->Launch(slot, rows);
  }
  std::optional<absl::Status> Poll(int slot) override { return inner_->Poll(slot); }

 private:
  std::unique_ptr<Backend> inner_;
};

TEST(MetricsOutcomes, BackendFailureFailsItsBatchOnlyAndIsCounted) {
  TempModelRepository repo;
  const MlpWeights w = RandomMlp({kIn, 16, 10}, 6);
  repo.AddModel(MakeSpec("m", 8), w);
  ModelRepository::Options ro = RepositoryOptions(repo.root(), ModelControlMode::kExplicit, {"m"});
  ro.backend_factory = [](const BackendOptions& o, const MlpWeights& weights) -> absl::StatusOr<std::unique_ptr<Backend>> {
    absl::StatusOr<std::unique_ptr<Backend>> inner = CreateBackend(o, weights);
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<Backend>(std::make_unique<FailingBackend>(*std::move(inner)));
  };
  TestServer::Options o;
  o.metrics = true;
  absl::StatusOr<std::unique_ptr<TestServer>> s = TestServer::Start(ro, o);
  ASSERT_TRUE(s.ok()) << s.status();
  TestServer& server = **s;

  std::mt19937 rng(9);
  int good = 0, bad = 0;
  inference::ModelInferResponse resp;
  // One request at a time: each is a batch of its own.
  for (int i = 0; i < 7; ++i) {
    std::vector<float> x = RandomInputs(kIn, rng);
    const bool fail = i % 3 == 1;
    if (fail) x[0] = FailingBackend::kMarker;
    const grpc::Status st = Infer(server.stub(), MakeInferRequest("m", "input", x, 1, kIn), &resp);
    if (fail) {
      ++bad;
      EXPECT_EQ(st.error_code(), grpc::StatusCode::INTERNAL) << st.error_message();
      EXPECT_THAT(st.error_message(), HasSubstr("injected backend failure"));
    } else {
      ++good;
      ASSERT_TRUE(st.ok()) << st.error_message();
      EXPECT_TRUE(RowsClose(OutputValues(resp), FastOutputs(w, x, 1), 10, kVsReference));
    }
  }
  ASSERT_EQ(bad, 2);
  absl::StatusOr<Scrape> m = ScrapeMetrics(server.metrics_port());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Value("fp8serve_requests_total", MVO("m", "1", "backend")), bad);
  EXPECT_EQ(m->Value("fp8serve_requests_total", MVO("m", "1", "success")), good);
  EXPECT_EQ(m->Value("fp8serve_model_ready", MV("m", "1")), 1);
}

// ---- 3. Labels clients choose are bounded -------------------------------------------------------

TEST(ServerMetricsTest, UnknownModelNamesAreCapped) {
  ServerMetrics::Options o;
  o.nvml_library = "";
  o.max_unresolved_names = 32;
  ServerMetrics metrics(o);
  metrics.SetModelStates({{"served", "1", true, 1}});
  for (int i = 0; i < 40; ++i) metrics.RecordUnresolved(absl::StrCat("unknown", i), RequestOutcome::kNotFound);
  metrics.RecordUnresolved("unknown0", RequestOutcome::kNotFound);   // a kept name keeps counting
  metrics.RecordUnresolved(std::string(200, 'x'), RequestOutcome::kNotFound);  // too long
  metrics.RecordUnresolved("bad\xff\xfe", RequestOutcome::kNotFound);          // not UTF-8
  metrics.RecordUnresolved("served", RequestOutcome::kNotFound);  // a serving model, past the cap
  metrics.RecordUnresolved("served", RequestOutcome::kInvalid);
  const Scrape m(metrics.SerializeText());
  std::set<std::string> names;
  double total = 0;
  for (const Sample& s : m.Named("fp8serve_requests_total")) {
    if (s.labels.at("version") != "") continue;
    names.insert(s.labels.at("model"));
    total += s.value;
  }
  EXPECT_EQ(names.size(), 32u + 2u);  // 32 unknown names, "_other", "served"
  EXPECT_EQ(total, 40 + 1 + 2 + 2);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("_other", "", "not_found")), 8 + 2);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("unknown0", "", "not_found")), 2);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("served", "", "not_found")), 1);
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("served", "", "invalid")), 1);
}

TEST(ServerMetricsTest, HandlesShareSeriesAndTheLastOneRemovesThem) {
  ServerMetrics::Options o;
  o.nvml_library = "";
  ServerMetrics metrics(o);
  std::shared_ptr<ModelMetrics> a = metrics.ForModel("m", 3);
  std::shared_ptr<ModelMetrics> b = metrics.ForModel("m", 3);
  a->CountRequest(RequestOutcome::kTimeout);
  b->CountRequest(RequestOutcome::kTimeout);
  b->RecordExecution(5);
  b->AddPending(2);
  Scrape m(metrics.SerializeText());
  EXPECT_EQ(m.Value("fp8serve_requests_total", MVO("m", "3", "timeout")), 2);
  EXPECT_EQ(m.Value("fp8serve_inferences_total", MV("m", "3")), 5);
  EXPECT_EQ(m.Value("fp8serve_pending_requests", MV("m", "3")), 2);
  a.reset();
  EXPECT_FALSE(Scrape(metrics.SerializeText()).Matching(MV("m", "3")).empty());
  b.reset();
  EXPECT_TRUE(Scrape(metrics.SerializeText()).Matching(MV("m", "3")).empty());
}

// ---- 4. GPU gauges through NVML, loaded at run time ---------------------------------------------

TEST(NvmlCollectorTest, MissingLibraryMeansNoGpuMetrics) {
  std::string why;
  EXPECT_EQ(NvmlCollector::Open("libnvidia-ml-not-here.so.1", &why), nullptr);
  EXPECT_THAT(why, HasSubstr("cannot load"));
  ServerMetrics::Options o;
  o.nvml_library = "libnvidia-ml-not-here.so.1";
  ServerMetrics metrics(o);
  EXPECT_FALSE(metrics.gpu_metrics());
  EXPECT_THAT(metrics.SerializeText(), Not(HasSubstr("fp8serve_gpu_")));
}

TEST(NvmlCollectorTest, FailingInitMeansNoGpuMetrics) {
  setenv("FAKE_NVML_INIT_ERROR", "9", 1);
  std::string why;
  EXPECT_EQ(NvmlCollector::Open(FAKE_NVML_PATH, &why), nullptr);
  unsetenv("FAKE_NVML_INIT_ERROR");
  EXPECT_THAT(why, HasSubstr("nvmlInit failed: Driver Not Loaded"));
}

TEST(NvmlCollectorTest, ReportsEveryGpu) {
  std::string why;
  std::shared_ptr<NvmlCollector> c = NvmlCollector::Open(FAKE_NVML_PATH, &why);
  ASSERT_NE(c, nullptr) << why;
  EXPECT_EQ(c->num_gpus(), 2u);
  const std::vector<prometheus::MetricFamily> f = c->Collect();
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].name, "fp8serve_gpu_utilization_ratio");
  EXPECT_EQ(f[1].name, "fp8serve_gpu_memory_used_bytes");
  EXPECT_EQ(f[2].name, "fp8serve_gpu_memory_total_bytes");
  for (const auto& fam : f) EXPECT_EQ(fam.metric.size(), 2u) << fam.name;
}

// ---- 5. Scraping never blocks inference ---------------------------------------------------------

// Stands for a slow collector (say, NVML on a busy driver): each scrape sleeps in it, and it
// records how many requests completed meanwhile.
class SlowCollectable final : public prometheus::Collectable {
 public:
  explicit SlowCollectable(const std::atomic<int64_t>* completed) : completed_(completed) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    const int64_t before = completed_->load();
    absl::SleepFor(absl::Milliseconds(300));
    std::lock_guard<std::mutex> lock(mu_);
    during_.push_back(completed_->load() - before);
    return {};
  }
  std::vector<int64_t> during() const {
    std::lock_guard<std::mutex> lock(mu_);
    return during_;
  }

 private:
  const std::atomic<int64_t>* completed_;
  mutable std::mutex mu_;
  mutable std::vector<int64_t> during_;
};

TEST(MetricsUnderLoad, ScrapingNeverBlocksInference) {
  TempModelRepository repo;
  repo.AddModel(MakeSpec("m", 8, "dynamic_batching { max_queue_delay_microseconds: 100 }"), RandomMlp({kIn, 16, 10}, 6));
  TestServer::Options o;
  o.metrics = true;
  absl::StatusOr<std::unique_ptr<TestServer>> s = TestServer::Start(RepositoryOptions(repo.root()), o);
  ASSERT_TRUE(s.ok()) << s.status();
  TestServer& server = **s;

  std::atomic<bool> stop{false};
  std::atomic<int64_t> completed{0}, failed{0};
  std::vector<std::thread> senders;
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&, t] {
      auto stub = server.NewStub();
      std::mt19937 rng(100 + t);
      const std::vector<float> x = RandomInputs(2 * kIn, rng);
      const inference::ModelInferRequest req = MakeInferRequest("m", "input", x, 1 + t % 2, kIn);
      inference::ModelInferResponse resp;
      while (!stop.load()) {
        const grpc::Status st = Infer(*stub, req, &resp, absl::Seconds(5));
        (st.ok() ? completed : failed).fetch_add(1);
      }
    });
  }

  // Phase 1: scrape in a tight loop for a second; every scrape answers quickly.
  std::vector<double> scrape_ms;
  const absl::Time phase1_end = absl::Now() + absl::Seconds(1);
  const int64_t completed_before = completed.load();
  while (absl::Now() < phase1_end) {
    const absl::Time t0 = absl::Now();
    absl::StatusOr<Scrape> m = ScrapeMetrics(server.metrics_port());
    ASSERT_TRUE(m.ok()) << m.status();
    scrape_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  const int64_t completed_phase1 = completed.load() - completed_before;

  // Phase 2: every scrape now spends 300 ms in a slow collector; requests complete meanwhile.
  auto slow = std::make_shared<SlowCollectable>(&completed);
  server.metrics_endpoint()->AddCollectable(slow);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Scrape> m = ScrapeMetrics(server.metrics_port());
    ASSERT_TRUE(m.ok()) << m.status();
  }
  stop.store(true);
  for (std::thread& t : senders) t.join();

  EXPECT_EQ(failed.load(), 0);
  ASSERT_GE(scrape_ms.size(), 5u);
  const double max_ms = *std::max_element(scrape_ms.begin(), scrape_ms.end());
  std::sort(scrape_ms.begin(), scrape_ms.end());
  std::fprintf(stderr, "scrapes under load: %zu in 1 s, median %.2f ms, max %.2f ms; %lld requests meanwhile\n",
               scrape_ms.size(), scrape_ms[scrape_ms.size() / 2], max_ms, static_cast<long long>(completed_phase1));
  EXPECT_LT(max_ms, 1000);
  EXPECT_GT(completed_phase1, 50);
  const std::vector<int64_t> during = slow->during();
  ASSERT_EQ(during.size(), 3u);
  for (int64_t n : during) EXPECT_GE(n, 10) << "requests completed during a 300 ms scrape";

  // Counted exactly, under concurrency: the last scrape after the senders stopped.
  absl::StatusOr<Scrape> m = ScrapeMetrics(server.metrics_port());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Value("fp8serve_requests_total", MVO("m", "1", "success")), completed.load());
  EXPECT_EQ(m->Value("fp8serve_request_duration_seconds_count", MV("m", "1")), completed.load());
  EXPECT_EQ(m->Value("fp8serve_pending_requests", MV("m", "1")), 0);
}

// ---- 6. The fp8serve binary's flags -------------------------------------------------------------

// TCP ports a process listens on: its socket inodes matched against /proc/net/tcp{,6}.
std::set<int> ListeningPorts(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec)) {
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::set<int> ports;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
      f >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
      if (state == "0A" && inodes.count(inode)) {
        ports.insert(static_cast<int>(std::stoul(local.substr(local.find(':') + 1), nullptr, 16)));
      }
    }
  }
  return ports;
}

// The real server binary on a tiny repository, with its log and port files in a temp folder.
class ServerProcess {
 public:
  ServerProcess(const std::string& repository, std::vector<std::string> args) {
    dir_ = ::testing::TempDir() + "/fp8serve_metrics_flags_XXXXXX";
    if (mkdtemp(dir_.data()) == nullptr) ADD_FAILURE() << "mkdtemp";
    std::vector<std::string> argv = {FP8SERVE_BIN, "--model-repository", repository, "--grpc-address", "127.0.0.1:0",
                                     "--port-file", dir_ + "/port", "--backend", "cpu"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = log_path();
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (posix_spawn(&pid_, FP8SERVE_BIN, &fa, nullptr, cargv.data(), environ) != 0) {
      ADD_FAILURE() << "cannot start " << FP8SERVE_BIN;
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&fa);
  }
  ~ServerProcess() {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string dir() const { return dir_; }
  std::string log_path() const { return dir_ + "/log"; }
  std::string Log() const {
    std::ifstream in(log_path());
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  pid_t pid() const { return pid_; }

  // The gRPC port once the server serves, or 0 if it exited (exit_code() says how) or took > 20 s.
  int WaitForPort() {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline && pid_ > 0) {
      if (int p = ReadPortFile(dir_ + "/port"); p > 0) return p;
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        pid_ = -1;
        return 0;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return 0;
  }
  // Waits (at most 20 s) for the process to exit by itself; its exit status.
  int WaitForExit() {
    for (int i = 0; i < 1000 && pid_ > 0; ++i) {
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        pid_ = -1;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return exit_code_;
  }
  int Stop() {
    if (pid_ <= 0) return exit_code_;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 500 && pid_ > 0; ++i) {
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        pid_ = -1;
        return exit_code_;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return exit_code_ = 137;
  }
  static int ReadPortFile(const std::string& path) {
    std::ifstream in(path);
    int p = 0;
    return (in >> p) ? p : 0;
  }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

class MetricsFlags : public ::testing::Test {
 protected:
  void SetUp() override { repo_.AddModel(MakeSpec("tiny", 4), RandomMlp({16, 8, 4}, 9)); }
  TempModelRepository repo_;
};

TEST_F(MetricsFlags, MetricsAddressAndPortFile) {
  ServerProcess q(repo_.root(), {"--metrics-address=127.0.0.1:0", "--metrics-port-file=" + repo_.root() + "/mport"});
  const int grpc_port = q.WaitForPort();
  ASSERT_GT(grpc_port, 0) << q.Log();
  // The metrics port file is written before the gRPC one.
  const int metrics_port = ServerProcess::ReadPortFile(repo_.root() + "/mport");
  ASSERT_GT(metrics_port, 0) << q.Log();
  EXPECT_EQ(ListeningPorts(q.pid()), (std::set<int>{grpc_port, metrics_port}));
  absl::StatusOr<Scrape> m = ScrapeMetrics(metrics_port);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->Value("fp8serve_model_ready", MV("tiny", "1")), 1);
  EXPECT_EQ(m->Value("fp8serve_build_info", {{"version", "0.1.0"}, {"backend", "cpu"}, {"cuda", FP8SERVE_CUDA_LABEL}}), 1);
  // A browser or a probe on another path gets a 404, and the server lives on.
  absl::StatusOr<HttpResponse> root = HttpGet(metrics_port, "/");
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->status, 404);
  EXPECT_TRUE(ScrapeMetrics(metrics_port).ok());
  EXPECT_EQ(q.Stop(), 0) << q.Log();
}

TEST_F(MetricsFlags, EmptyMetricsAddressTurnsMetricsOff) {
  ServerProcess p(repo_.root(), {"--metrics-address=", "--metrics-port-file=" + repo_.root() + "/mport"});
  const int grpc_port = p.WaitForPort();
  ASSERT_GT(grpc_port, 0) << p.Log();
  EXPECT_EQ(ListeningPorts(p.pid()), std::set<int>{grpc_port}) << "only gRPC listens";
  EXPECT_FALSE(std::filesystem::exists(repo_.root() + "/mport"));
  EXPECT_THAT(p.Log(), HasSubstr("metrics disabled"));
  EXPECT_EQ(p.Stop(), 0) << p.Log();
}

TEST_F(MetricsFlags, AllowMetricsFalseTurnsMetricsOff) {
  ServerProcess p(repo_.root(), {"--allow-metrics=false", "--metrics-address=127.0.0.1:0"});
  const int grpc_port = p.WaitForPort();
  ASSERT_GT(grpc_port, 0) << p.Log();
  EXPECT_EQ(ListeningPorts(p.pid()), std::set<int>{grpc_port}) << "only gRPC listens";
  EXPECT_THAT(p.Log(), HasSubstr("metrics disabled (--allow-metrics=false)"));
  EXPECT_EQ(p.Stop(), 0) << p.Log();
}

// A listening socket on 127.0.0.1:<port> (0: any free port; 8002: on every interface), or -1.
// Close-on-exec, so that the server started next does not inherit it (and list it as its own).
int Listen(int port, int* bound_port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(port == 0 ? INADDR_LOOPBACK : INADDR_ANY);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 1) != 0) {
    close(fd);
    return -1;
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *bound_port = ntohs(addr.sin_port);
  return fd;
}

TEST_F(MetricsFlags, BusyExplicitAddressIsFatal) {
  int port = 0;
  const int fd = Listen(0, &port);
  ASSERT_GE(fd, 0);
  ServerProcess p(repo_.root(), {absl::StrCat("--metrics-address=127.0.0.1:", port)});
  EXPECT_EQ(p.WaitForExit(), 1) << p.Log();
  EXPECT_THAT(p.Log(), HasSubstr(absl::StrCat("cannot serve metrics on 127.0.0.1:", port)));
  close(fd);
}

TEST_F(MetricsFlags, BusyDefaultAddressServesWithoutMetrics) {
  int port = 0;
  const int fd = Listen(8002, &port);
  if (fd < 0) {
    // Someone else holds 8002 (say, another fp8serve): the default address is busy either way.
    std::fprintf(stderr, "note: port 8002 is already taken by another process; using that\n");
  }
  ServerProcess p(repo_.root(), {});
  const int grpc_port = p.WaitForPort();
  ASSERT_GT(grpc_port, 0) << p.Log();
  EXPECT_THAT(p.Log(), HasSubstr("serving WITHOUT metrics"));
  EXPECT_EQ(ListeningPorts(p.pid()), std::set<int>{grpc_port});
  EXPECT_EQ(p.Stop(), 0) << p.Log();
  if (fd >= 0) close(fd);
}

}  // namespace
}  // namespace fp8serve::test
