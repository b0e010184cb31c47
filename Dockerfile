# fp8serve image: build with the CUDA 13 devel image, run on the matching runtime image.
#
#   docker build -t fp8serve:0.1.0 .
#   docker run --gpus all --stop-timeout 35 -p 8001:8001 -p 8002:8002 fp8serve:0.1.0
#   docker run --stop-timeout 35 -p 8001:8001 -p 8002:8002 fp8serve:0.1.0 \
#       --model-repository /opt/fp8serve/models --grpc-address 0.0.0.0:8001 \
#       --metrics-address 0.0.0.0:8002 --backend cpu        # no GPU: the CPU backend, same numerics
#
# 8001 is gRPC (KServe v2 / Triton protocol, grpc.health.v1), 8002 is Prometheus /metrics. The image
# bundles models/ (the Fashion-MNIST MLP) at /opt/fp8serve/models; mount another Triton-shaped
# repository over it to serve your own. The server drains for up to --exit-timeout-secs (30) on
# SIGTERM, so give `docker stop` more than that (--stop-timeout 35; deploy/docker-compose.yml sets
# stop_grace_period). Everything comes from this repository and Ubuntu's packages: nothing is
# downloaded at build time.

# ---------------------------------------------------------------------------------------- build
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04 AS build
ARG DEBIAN_FRONTEND=noninteractive
# The ldd pipeline below must fail the build if any stage of it fails.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Versions are not pinned (DL3008): the base image tag fixes the Ubuntu release, and Ubuntu's archive
# drops superseded package versions, so exact pins would break the build within weeks.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake ninja-build g++ pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev prometheus-cpp-dev nlohmann-json3-dev libspdlog-dev zlib1g-dev libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY proto proto
COPY kernels kernels
COPY server server
COPY client client
COPY tools tools
COPY tests tests
# Every program lands in build/bin (CMAKE_RUNTIME_OUTPUT_DIRECTORY), wherever its CMakeLists.txt is.
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DFP8SERVE_BUILD_TESTS=OFF -DFP8SERVE_BUILD_BENCHMARKS=OFF \
      -DCMAKE_RUNTIME_OUTPUT_DIRECTORY=/src/build/bin \
 && cmake --build build --target fp8serve fp8serve-client fp8serve-quantize fp8serve-eval \
 && mkdir -p /opt/fp8serve/bin /opt/fp8serve/lib \
 && cp build/bin/fp8serve build/bin/fp8serve-client build/bin/fp8serve-quantize build/bin/fp8serve-eval /opt/fp8serve/bin/ \
 # Carry every shared library the programs need that the runtime image lacks (not glibc, not CUDA's).
 && ldd /opt/fp8serve/bin/* | awk '/=>/ {print $3}' | sort -u \
      | { grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux)[.-]|libcuda\.so|/usr/local/cuda' || true; } \
      | xargs -r -I{} cp -L {} /opt/fp8serve/lib/

# -------------------------------------------------------------------------------------- runtime
FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04
LABEL org.opencontainers.image.title="fp8serve" \
      org.opencontainers.image.description="gRPC (KServe v2 / Triton protocol) inference server for FP8 MLPs" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /opt/fp8serve /opt/fp8serve
# The bundled model stays root-owned and read-only for the server's user.
COPY models /opt/fp8serve/models
RUN groupadd --system --gid 10001 fp8serve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fp8serve
ENV LD_LIBRARY_PATH=/opt/fp8serve/lib \
    PATH=/opt/fp8serve/bin:$PATH
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /opt/fp8serve
# 8001: gRPC (KServe v2 / Triton protocol, grpc.health.v1). 8002: Prometheus metrics (/metrics).
EXPOSE 8001 8002
# Healthy iff grpc.health.v1.Health says SERVING (it says NOT_SERVING while draining on SIGTERM).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["fp8serve-client", "health", "-u", "127.0.0.1:8001"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["fp8serve"]
CMD ["--model-repository", "/opt/fp8serve/models", "--grpc-address", "0.0.0.0:8001", "--metrics-address", "0.0.0.0:8002"]
