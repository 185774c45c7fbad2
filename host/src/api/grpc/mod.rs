//! The Open Inference Protocol over gRPC: Triton's
//! `inference.GRPCInferenceService`, as `tritonclient.grpc` and KServe's
//! `grpc-v2` speak it, and `grpc.health.v1` for Kubernetes' probes.
//!
//! Every call goes through the HTTP surface's own functions: an inference
//! becomes the v2 request with binary tensors that an HTTP client could
//! have sent, so the same checks, models, queues, limits and metrics apply,
//! and an error keeps its meaning ([`status_of`]).

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::auth::{Missing, Verdict, admit, bearer_token};
use super::inference::versioned;
use super::inference::{HEADER_LENGTH, answer_read};
use super::repository::{entries, load_model, unload_model};
use super::tenancy::{Action, Caller};
use super::v2::metadata;
use super::{ApiError, AppState};
use mme_oip::grpc::{self as tensors, GrpcError};
use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::*;

/// The service generated from Triton's `grpc_service.proto`, and its
/// messages, which are [`mme_oip::grpc`]'s.
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod proto {
    pub use mme_oip::grpc::proto::*;
    tonic::include_proto!("inference");
}

/// The inference service as served: answers compressed only for a client
/// that compressed its request ([`plain_unless_compressed`]).
pub type Inference = InterceptedService<
    GrpcInferenceServiceServer<InferenceService>,
    fn(Request<()>) -> Result<Request<()>, Status>,
>;

/// The service over `state`, and the health service that says it serves.
pub async fn services(
    state: AppState,
) -> (
    Inference,
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    // A message may be as large as an HTTP body may be; beyond it tonic
    // answers OUT_OF_RANGE with the limit, before the message is decoded.
    let limit = state.max_request_bytes;
    let inference = GrpcInferenceServiceServer::new(InferenceService { state })
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Deflate);
    let inference = InterceptedService::new(
        inference,
        plain_unless_compressed as fn(Request<()>) -> Result<Request<()>, Status>,
    );
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<GrpcInferenceServiceServer<InferenceService>>()
        .await;
    (inference, reporter, health)
}

/// Leaves a call's answer uncompressed unless its request came compressed.
///
/// gRPC's clients (`tritonclient.grpc`, every `grpcio` channel) say on each
/// call that they accept gzip and deflate, and tonic compresses an answer
/// whenever its client accepts it: for a small answer, setting up deflate
/// (a state of hundreds of kilobytes, zeroed) cost several times the rest
/// of the call. Triton compresses no answer by default; here a client that
/// compresses what it sends (over a slow link, say) gets its answers
/// compressed too, in the first encoding it accepts, and any other gets
/// them plain.
fn plain_unless_compressed(mut request: Request<()>) -> Result<Request<()>, Status> {
    let metadata = request.metadata_mut();
    let compressed = metadata
        .get("grpc-encoding")
        .is_some_and(|encoding| encoding != "identity");
    if !compressed {
        metadata.remove("grpc-accept-encoding");
    }
    Ok(request)
}

/// Serves `state` over gRPC on `listener` until `shutdown` resolves, then
/// finishes the calls in flight. From when `draining` resolves, the health
/// service answers NOT_SERVING, so that probes see the drain before the
/// listener closes.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    draining: impl Future<Output = ()> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (inference, reporter, health) = services(state).await;
    let not_serving = async move {
        draining.await;
        reporter
            .set_not_serving::<GrpcInferenceServiceServer<InferenceService>>()
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    let shutdown = async move {
        tokio::join!(not_serving, shutdown);
    };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(inference)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

/// `inference.GRPCInferenceService` over the server's models.
pub struct InferenceService {
    state: AppState,
}

impl InferenceService {
    /// The caller of `rpc`, by its `authorization` metadata, if it may do
    /// `action` on `model`; the same decision as the HTTP surface's.
    fn admit<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        (action, model, missing): (Action, Option<&str>, Option<Missing>),
    ) -> Result<(Caller, Verdict), Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        admit(&self.state, token, rpc, (action, model, missing)).map_err(status_of)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = !self.state.drain.is_draining();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    /// Loads the model on demand, as `GET /v2/models/{m}/ready` does; a
    /// model that cannot load is not ready.
    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let checked = self.admit(
            &request,
            "ModelReady",
            (
                Action::Infer,
                Some(&request.get_ref().name),
                Some(Missing::InStore),
            ),
        );
        let request = request.into_inner();
        // A model the caller may not see is as ready as one that is not there.
        match checked {
            Err(status) if status.code() != tonic::Code::NotFound => return Err(status),
            Err(_) => return Ok(Response::new(ModelReadyResponse { ready: false })),
            Ok(_) => {}
        }
        let ready = match versioned(&request.name, &request.version) {
            Ok(wanted) => self.state.registry.get_or_load(&wanted).await.is_ok(),
            Err(_) => false,
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: super::v2::SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: super::v2::EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let model = Some(request.get_ref().name.as_str());
        self.admit(
            &request,
            "ModelMetadata",
            (Action::Infer, model, Some(Missing::InStore)),
        )?;
        let request = request.into_inner();
        let wanted = versioned(&request.name, &request.version).map_err(status_of)?;
        let metadata = metadata(&self.state, &wanted).await.map_err(status_of)?;
        Ok(Response::new(tensors::metadata_response(&metadata)))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let model = Some(request.get_ref().model_name.as_str());
        self.admit(
            &request,
            "ModelInfer",
            (Action::Infer, model, Some(Missing::InStore)),
        )?;
        let request = request.into_inner();
        let name = request.model_name.clone();
        if name.is_empty() {
            return Err(Status::invalid_argument(
                "model_name is empty: name the model",
            ));
        }
        let wanted = versioned(&name, &request.model_version).map_err(status_of)?;
        let (body, header_length) =
            tensors::framed_request(request).map_err(status_of_conversion)?;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH.clone(), HeaderValue::from(header_length));
        let answer = answer_read(&self.state, &wanted, &headers, body)
            .await
            .map_err(status_of)?;
        let header_length = answer
            .headers()
            .get(&HEADER_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .map_err(|e| Status::internal(format!("cannot read the model's answer: {e}")))?;
        let response =
            tensors::infer_response(&body, header_length).map_err(status_of_conversion)?;
        Ok(Response::new(response))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let (caller, _) = self.admit(&request, "RepositoryIndex", (Action::Manage, None, None))?;
        let ready_only = request.into_inner().ready;
        let models = entries(&self.state, &caller, ready_only)
            .await
            .map_err(status_of)?
            .into_iter()
            .map(|entry| repository_index_response::ModelIndex {
                name: entry.name,
                version: entry.version,
                state: entry.state.to_string(),
                reason: entry.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let model = Some(request.get_ref().model_name.as_str());
        self.admit(
            &request,
            "RepositoryModelLoad",
            (Action::Manage, model, Some(Missing::InStore)),
        )?;
        let request = request.into_inner();
        let parameters = request.parameters.keys().map(String::as_str);
        load_model(&self.state, &request.model_name, parameters)
            .await
            .map_err(status_of)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let model = Some(request.get_ref().model_name.as_str());
        let checked = (Action::Manage, model, Some(Missing::NothingToDo));
        if let (_, Verdict::NothingToDo) = self.admit(&request, "RepositoryModelUnload", checked)? {
            return Ok(Response::new(RepositoryModelUnloadResponse {}));
        }
        let request = request.into_inner();
        unload_model(&self.state, &request.model_name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

/// A message that cannot be converted: the client's fault, or the model's.
fn status_of_conversion(error: GrpcError) -> Status {
    match error {
        GrpcError::Invalid(message) => Status::invalid_argument(message),
        GrpcError::Internal(message) => Status::internal(message),
    }
}

/// An HTTP surface's error as the gRPC status of the same meaning, with
/// the same message.
fn status_of(error: ApiError) -> Status {
    let message = error.message;
    if error.kind == "RateLimited" {
        return Status::resource_exhausted(message);
    }
    match error.status {
        StatusCode::UNAUTHORIZED => Status::unauthenticated(message),
        StatusCode::FORBIDDEN => Status::permission_denied(message),
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::BAD_REQUEST
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => Status::invalid_argument(message),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::INSUFFICIENT_STORAGE => {
            Status::resource_exhausted(message)
        }
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            Status::unavailable(message)
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            Status::deadline_exceeded(message)
        }
        StatusCode::CONFLICT => Status::failed_precondition(message),
        StatusCode::METHOD_NOT_ALLOWED => Status::unimplemented(message),
        StatusCode::INTERNAL_SERVER_ERROR => Status::internal(message),
        _ => Status::unknown(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn errors_keep_their_meaning_over_grpc() {
        for (status, code) in [
            (StatusCode::NOT_FOUND, Code::NotFound),
            (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
            (StatusCode::TOO_MANY_REQUESTS, Code::Unavailable),
            (StatusCode::GATEWAY_TIMEOUT, Code::DeadlineExceeded),
            (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
            (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
        ] {
            let grpc = status_of(ApiError::new(status, "Kind", "what happened"));
            assert_eq!(grpc.code(), code, "{status}");
            assert_eq!(grpc.message(), "what happened");
        }
    }
}
