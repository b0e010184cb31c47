// inference.GRPCInferenceService on gRPC's callback API. Reactions never block: a request is
// looked up, validated and handed to its model's batcher, and the reactor is finished from the
// batch thread when the result is ready.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "grpc_service.grpc.pb.h"
#include "server/metrics/metrics.h"
#include "server/repository/model_repository.h"

namespace fp8serve {

class InferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  struct Options {
    std::string server_name = "fp8serve";
    std::string server_version;
    // Optional, not owned, outlives the service: requests that no model version answered (unknown
    // model, bad version string, shutting down) are counted here; the rest on their version's
    // ModelMetrics.
    ServerMetrics* metrics = nullptr;
  };
  InferenceService(ModelRepository* repository, Options options);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* ctx, const inference::ServerLiveRequest* req,
                                       inference::ServerLiveResponse* resp) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* ctx, const inference::ServerReadyRequest* req,
                                        inference::ServerReadyResponse* resp) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* ctx, const inference::ModelReadyRequest* req,
                                       inference::ModelReadyResponse* resp) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx, const inference::ServerMetadataRequest* req,
                                           inference::ServerMetadataResponse* resp) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* ctx, const inference::ModelMetadataRequest* req,
                                          inference::ModelMetadataResponse* resp) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* ctx, const inference::ModelConfigRequest* req,
                                        inference::ModelConfigResponse* resp) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* ctx, const inference::ModelStatisticsRequest* req,
                                            inference::ModelStatisticsResponse* resp) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* ctx, const inference::RepositoryIndexRequest* req,
                                            inference::RepositoryIndexResponse* resp) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(grpc::CallbackServerContext* ctx,
                                                const inference::RepositoryModelLoadRequest* req,
                                                inference::RepositoryModelLoadResponse* resp) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(grpc::CallbackServerContext* ctx,
                                                  const inference::RepositoryModelUnloadRequest* req,
                                                  inference::RepositoryModelUnloadResponse* resp) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx, const inference::ModelInferRequest* req,
                                       inference::ModelInferResponse* resp) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>* ModelStreamInfer(
      grpc::CallbackServerContext* ctx) override;

  // Validates `req` and queues it on its model; `done` gets the response or the error, exactly
  // once, on a batch thread (or inline when the request is refused). `req` must stay alive until
  // then. `deadline` is the call's own deadline, if any.
  // `ctx`, when given, lets a queued request be dropped if its client cancels.
  using InferDone = absl::AnyInvocable<void(absl::Status, inference::ModelInferResponse*)>;
  void SubmitInfer(const inference::ModelInferRequest* req, inference::ModelInferResponse* resp, absl::Time deadline,
                   grpc::CallbackServerContext* ctx, InferDone done);

  // Graceful shutdown, first step: ServerReady turns false and new inference requests get
  // UNAVAILABLE, while everything already accepted runs to completion.
  void StartShutdown() { shutting_down_.store(true); }

  ModelRepository* repository() const { return repository_; }

 private:
  ModelRepository* const repository_;
  const Options options_;
  std::atomic<bool> shutting_down_{false};
};

grpc::Status ToGrpcStatus(const absl::Status& s);

}  // namespace fp8serve
