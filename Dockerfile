# fp8serve image: build with the CUDA 13 devel image, run on the matching runtime image.
#   docker build -t fp8serve .
#   docker run --gpus all -p 8001:8001 fp8serve            # or without --gpus: serves on the CPU
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04 AS build
ARG DEBIAN_FRONTEND=noninteractive
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
COPY tools tools
COPY tests tests
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DFP8SERVE_BUILD_TESTS=OFF -DFP8SERVE_BUILD_BENCHMARKS=OFF \
 && cmake --build build --target fp8serve fp8serve-quantize fp8serve-eval \
 && mkdir -p /opt/fp8serve/bin /opt/fp8serve/lib \
 && cp build/server/fp8serve build/tools/fp8serve-quantize build/tools/fp8serve-eval /opt/fp8serve/bin/ \
 # Carry every shared library the programs need that the runtime image lacks (not glibc, not CUDA's).
 && ldd /opt/fp8serve/bin/* | awk '/=>/ {print $3}' | sort -u \
      | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux)[.-]|libcuda\.so|/usr/local/cuda' \
      | xargs -r -I{} cp -L {} /opt/fp8serve/lib/

FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04
COPY --from=build /opt/fp8serve /opt/fp8serve
COPY models /opt/fp8serve/models
RUN useradd --system --uid 10001 --no-create-home fp8serve
ENV LD_LIBRARY_PATH=/opt/fp8serve/lib \
    PATH=/opt/fp8serve/bin:$PATH
USER fp8serve
WORKDIR /opt/fp8serve
# 8001: gRPC (KServe v2 / Triton protocol). 8002: Prometheus metrics.
EXPOSE 8001 8002
ENTRYPOINT ["fp8serve"]
CMD ["--model-repository", "/opt/fp8serve/models", "--grpc-address", "0.0.0.0:8001"]
