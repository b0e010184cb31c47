#include "client/cli/flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, url, "localhost:8001", "Server address, HOST:PORT (-u). Any gRPC target works: unix:/path too.");
ABSL_FLAG(int, timeout_ms, 10000,
          "Deadline of every call (an inference request, a metadata call, a health check), ms.");
ABSL_FLAG(int, connect_timeout_ms, 5000, "How long to wait for the connection before giving up, ms.");
ABSL_FLAG(bool, tls, false, "Connect with TLS (implied by the other --tls-* flags).");
ABSL_FLAG(std::string, tls_root_certs, "",
          "PEM file of CA certificates that verify the server (default: gRPC's roots).");
ABSL_FLAG(std::string, tls_client_cert, "", "Mutual TLS: the client's PEM certificate chain (with --tls-client-key).");
ABSL_FLAG(std::string, tls_client_key, "", "Mutual TLS: the client's PEM private key.");
ABSL_FLAG(std::string, tls_target_name, "", "Name the server certificate must carry, when it is not the URL's host.");

ABSL_FLAG(std::string, model, "", "Model name (-m). Default: the server's only ready model.");
ABSL_FLAG(std::string, model_version, "", "Model version. Default: the server's choice (the latest ready).");
ABSL_FLAG(std::string, input, "",
          "Input rows (-i): .npy (float32/float16, [N,width] or [width]), IDX images (MNIST/Fashion-MNIST, gzip or "
          "not; pixels/255) or CSV (one row per line). The format is read from the file's first bytes.");
ABSL_FLAG(int, batch, 0, "Rows per request (-b). Default: infer 256 (at most the model's max_batch_size), bench 1.");
ABSL_FLAG(std::string, wire, "",
          "Input datatype on the wire: fp32, fp16 or bf16. Default: fp32 (fp16 for a float16 .npy).");
ABSL_FLAG(double, scale, 1.0,
          "Multiply .npy and CSV input values by this (e.g. 0.00392156862745098 = 1/255 for raw pixels).");
ABSL_FLAG(int64_t, limit, 0, "Use only the first N rows of --input (and of --labels).");

ABSL_FLAG(std::string, labels, "",
          "Class labels: IDX label file or CSV/text of integers. Prints accuracy and a confusion matrix.");
ABSL_FLAG(int, top_k, 3, "Classes printed per row, highest softmax score first (-k).");
ABSL_FLAG(std::string, class_names, "",
          "Class names: fashion, mnist, or a comma-separated list. Default: class indices.");
ABSL_FLAG(int, show, 10, "Rows whose top-k classes are printed (-1: all).");

ABSL_FLAG(
    std::vector<std::string>, concurrency, {},
    "Closed loop (-c): requests kept in flight, one step per value: 1,8,64,512. Default: 1 unless --rate is given.");
ABSL_FLAG(std::vector<std::string>, rate, {},
          "Open loop: Poisson arrivals at these request rates per second, one step each: 1000,5000.");
ABSL_FLAG(std::string, mode, "async",
          "Transport: sync (a thread per in-flight request, blocking calls), async (callback API) or stream "
          "(bidirectional ModelStreamInfer).");
ABSL_FLAG(int, threads, 0,
          "Client connections, each with its own TCP connection (and, in open loop, its own sender thread). "
          "Default: a quarter of the cores, 1 to 8.");
ABSL_FLAG(double, warmup_secs, 1.0, "Warm-up before each step, not measured, seconds (0: none).");
ABSL_FLAG(double, duration_secs, 5.0, "Measured time per step, seconds (unless --requests).");
ABSL_FLAG(int64_t, requests, 0, "Measure this many requests per step instead of --duration-secs.");
ABSL_FLAG(int64_t, max_in_flight, 16384,
          "Open loop: arrivals that find this many requests in flight are dropped (and counted).");
ABSL_FLAG(int, seed, 1, "Seed of the random input rows (without --input) and of the Poisson arrivals.");
ABSL_FLAG(std::string, json, "", "Write the results to this JSON file.");
ABSL_FLAG(std::string, csv, "", "Write the results to this CSV file, one row per step.");
ABSL_FLAG(std::string, plot, "", "Draw p50 and p99 latency against throughput into this SVG file.");
ABSL_FLAG(bool, progress, true, "A live progress line on stderr when it is a terminal.");

ABSL_FLAG(std::string, service, "", "health: the service to check (default: the server as a whole).");
ABSL_FLAG(std::string, format, "text", "metadata, config: text or json.");
