// The /metrics HTTP endpoint: a small HTTP/1.x server of our own, not prometheus-cpp's Exposer.
//
// NOTES: why not the Exposer. Debian's civetweb (1.15, under prometheus-cpp-pull) starts its worker
// threads with a fixed 100 KiB stack, and glibc carves every library's static TLS out of it:
// OpenBLAS alone takes 60 KiB in this process. What is left is enough to serve /metrics, but not
// civetweb's error path: any request for another path (GET /, a browser, a probe) or another
// method segfaults the whole server in mg_send_http_error. Threads started here get the default
// stack, and the server answers 404/405/400 itself.
//
// BEHAVIOR
//  - GET or HEAD /metrics (a query string is ignored): 200, Prometheus text format 0.0.4, the body
//    collected afresh for each scrape. Another path: 404. Another method: 405. A request line that
//    does not parse, or a request head over 16 KiB: 400. Every response closes the connection.
//  - One thread accepts; kWorkers threads answer, one connection each at a time. A client that
//    sends nothing for kIoTimeout is dropped; when kMaxQueued connections wait, new ones are closed
//    at once. A slow or hostile client delays other scrapes, never inference: collecting takes no
//    lock that the request path holds for more than a counter update.
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/text_serializer.h"
#include "server/metrics/metrics.h"

namespace fp8serve {

namespace {

constexpr int kWorkers = 2;
constexpr size_t kMaxQueued = 64;
constexpr size_t kMaxRequestHead = 16 * 1024;
constexpr int kIoTimeoutMs = 5000;

// "host:port", "[v6]:port", ":port" or "port" -> host ("" = every interface) and port.
absl::Status SplitAddress(const std::string& address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    *host = "";
    *port = address;
  } else {
    *host = address.substr(0, colon);
    *port = address.substr(colon + 1);
    if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  }
  int p;
  if (!absl::SimpleAtoi(*port, &p) || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "' is not host:port"));
  }
  return absl::OkStatus();
}

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::string Response(int code, const char* reason, const std::string& content_type, const std::string& body,
                     bool head_only, const std::string& extra_headers = "") {
  std::string r = absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: ", content_type,
                               "\r\nContent-Length: ", body.size(), "\r\n", extra_headers, "Connection: close\r\n\r\n");
  if (!head_only) r += body;
  return r;
}

}  // namespace

struct MetricsEndpoint::Impl {
  int listen_fd = -1;
  int wake[2] = {-1, -1};  // a pipe: written once to stop the accept loop
  std::thread acceptor;
  std::vector<std::thread> workers;

  absl::Mutex mu;
  std::deque<int> queue ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables ABSL_GUARDED_BY(mu);

  ~Impl() {
    {
      absl::MutexLock lock(&mu);
      stopping = true;
    }
    if (wake[1] >= 0) (void)!write(wake[1], "x", 1);
    if (acceptor.joinable()) acceptor.join();
    for (std::thread& t : workers) t.join();
    for (int fd : queue) close(fd);
    for (int fd : {listen_fd, wake[0], wake[1]}) {
      if (fd >= 0) close(fd);
    }
  }

  void AcceptLoop() {
    for (;;) {
      pollfd p[2] = {{listen_fd, POLLIN, 0}, {wake[0], POLLIN, 0}};
      if (poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (p[1].revents != 0) return;
      const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;  // EAGAIN, a connection reset before accept, EMFILE: try again
      absl::MutexLock lock(&mu);
      if (queue.size() >= kMaxQueued) {
        close(fd);
      } else {
        queue.push_back(fd);
      }
    }
  }

  void WorkerLoop() {
    for (;;) {
      int fd;
      {
        absl::MutexLock lock(&mu);
        mu.Await(absl::Condition(
            +[](Impl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu) { return self->stopping || !self->queue.empty(); },
            this));
        if (stopping) return;
        fd = queue.front();
        queue.pop_front();
      }
      Serve(fd);
      close(fd);
    }
  }

  // Reads the request head (up to the blank line) within the timeout.
  static bool ReadHead(int fd, std::string* head) {
    char buf[4096];
    while (head->find("\r\n\r\n") == std::string::npos && head->find("\n\n") == std::string::npos) {
      if (head->size() > kMaxRequestHead) return false;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, kIoTimeoutMs) <= 0) return false;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return !head->empty() && head->find('\n') != std::string::npos;  // HTTP/0.9-ish: the line will do
      head->append(buf, static_cast<size_t>(n));
    }
    return true;
  }

  void Serve(int fd) {
    timeval tv{kIoTimeoutMs / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    std::string head;
    const bool complete = ReadHead(fd, &head);
    const size_t eol = head.find_first_of("\r\n");
    std::istringstream line(head.substr(0, eol));
    std::string method, target, version;
    line >> method >> target >> version;
    if (!complete || method.empty() || target.empty() || target[0] != '/' ||
        (!version.empty() && version.rfind("HTTP/", 0) != 0)) {
      SendAll(fd, Response(400, "Bad Request", "text/plain; charset=utf-8", "bad request\n", false));
      return;
    }
    const std::string path = target.substr(0, target.find('?'));
    const bool head_only = method == "HEAD";
    if (path != "/metrics") {
      SendAll(fd, Response(404, "Not Found", "text/plain; charset=utf-8", "not found: try /metrics\n", head_only));
      return;
    }
    if (method != "GET" && method != "HEAD") {
      SendAll(fd, Response(405, "Method Not Allowed", "text/plain; charset=utf-8", "use GET\n", false,
                           "Allow: GET, HEAD\r\n"));
      return;
    }
    SendAll(fd, Response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", Collect(), head_only));
  }

  std::string Collect() {
    std::vector<std::weak_ptr<prometheus::Collectable>> sources;
    {
      absl::MutexLock lock(&mu);
      sources = collectables;
    }
    std::vector<prometheus::MetricFamily> families;
    for (const auto& w : sources) {
      if (std::shared_ptr<prometheus::Collectable> c = w.lock()) {
        std::vector<prometheus::MetricFamily> f = c->Collect();
        families.insert(families.end(), std::make_move_iterator(f.begin()), std::make_move_iterator(f.end()));
      }
    }
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, families);
    return out.str();
  }
};

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& address,
                                                                        const ServerMetrics& metrics) {
  std::string host, port;
  if (absl::Status st = SplitAddress(address, &host, &port); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot serve metrics on ", address, ": ", st.message()));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (const int rc = getaddrinfo(host.empty() || host == "*" ? nullptr : host.c_str(), port.c_str(), &hints, &res);
      rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot serve metrics on ", address, ": ", gai_strerror(rc)));
  }
  // Without a host, prefer IPv4's "every interface" (0.0.0.0), as the default address says.
  int fd = -1;
  std::string why = "no address";
  for (int pass = 0; pass < 2 && fd < 0; ++pass) {
    for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
      if ((pass == 0) != (a->ai_family == AF_INET)) continue;
      const int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (s < 0) continue;
      const int one = 1;
      setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // restarts reuse a TIME_WAIT port
      if (bind(s, a->ai_addr, a->ai_addrlen) == 0 && listen(s, 64) == 0) {
        fd = s;
      } else {
        why = std::strerror(errno);
        close(s);
      }
    }
  }
  freeaddrinfo(res);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, ": ", why));

  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int bound_port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);

  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint());
  e->impl_ = std::make_unique<Impl>();
  Impl& impl = *e->impl_;
  impl.listen_fd = fd;
  if (pipe2(impl.wake, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  {
    absl::MutexLock lock(&impl.mu);
    impl.collectables = metrics.Collectables();
  }
  e->port_ = bound_port;
  impl.acceptor = std::thread([&impl] { impl.AcceptLoop(); });
  for (int i = 0; i < kWorkers; ++i) impl.workers.emplace_back([&impl] { impl.WorkerLoop(); });
  return e;
}

MetricsEndpoint::~MetricsEndpoint() = default;

void MetricsEndpoint::AddCollectable(const std::weak_ptr<prometheus::Collectable>& collectable) {
  absl::MutexLock lock(&impl_->mu);
  impl_->collectables.push_back(collectable);
}

}  // namespace fp8serve
