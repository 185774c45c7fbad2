//! `mme bench --route grpc`: the same requests over the Open Inference
//! Protocol's gRPC service, as `tritonclient.grpc` sends them (the rows as
//! one FP64 tensor in `raw_input_contents`, raw outputs back), with as many
//! calls in flight as HTTP has connections, so that the two compare at the
//! same concurrency. gRPC clients multiplex calls over few HTTP/2
//! connections: here [`CALLS_PER_CONNECTION`] share each.

use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use super::BenchError;
use crate::api::grpc::proto::ModelInferRequest;
use crate::api::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::api::grpc::proto::model_infer_request::InferInputTensor;

/// Calls in flight on one HTTP/2 connection. Over 1,000 models on two
/// cores, 8 gave the most calls per second: one connection per call 0.44
/// of `/predictions`, 8 per connection 0.70, 16 0.52 to 0.71, all 64 on one
/// 0.57 (BENCHMARKS.md).
const CALLS_PER_CONNECTION: usize = 8;

/// Clients of one gRPC service, taken in turn.
pub(super) struct GrpcSender {
    clients: Vec<GrpcInferenceServiceClient<Channel>>,
    next: AtomicUsize,
    request: ModelInferRequest,
    /// `Bearer <token>` for a server with tenants.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl GrpcSender {
    /// Connects clients for `calls` calls in flight to `address` (such as
    /// `127.0.0.1:8081`) that send `body`, rows such as `[[0.5]]`.
    pub(super) async fn connect(
        address: &str,
        calls: usize,
        body: &str,
        token: Option<&str>,
    ) -> Result<Self, BenchError> {
        let authorization = token
            .map(|token| format!("Bearer {token}").parse())
            .transpose()
            .map_err(|_| BenchError::Config("--token must be visible ASCII".into()))?;
        let rows: Vec<Vec<f64>> = serde_json::from_str(body).map_err(|e| {
            BenchError::Config(format!(
                "--route grpc sends the body's rows as one FP64 tensor, and {body:?} is not rows of numbers ({e})"
            ))
        })?;
        let shape = [rows.len(), rows.first().map_or(0, Vec::len)];
        let raw: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let request = ModelInferRequest {
            inputs: vec![InferInputTensor {
                name: "input-0".into(),
                datatype: "FP64".into(),
                shape: shape.iter().map(|d| *d as i64).collect(),
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        };
        let address = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| BenchError::Config(format!("--grpc {address:?}: {e}")))?
            .tcp_nodelay(true);
        let connections = calls.div_ceil(CALLS_PER_CONNECTION);
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let channel = endpoint.connect().await.map_err(|e| {
                BenchError::Config(format!(
                    "cannot connect to the gRPC service at {address}: {e}"
                ))
            })?;
            // grpcio's channels (tritonclient's) say on every call that
            // they accept gzip and deflate answers: so do these.
            clients.push(
                GrpcInferenceServiceClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Deflate),
            );
        }
        Ok(GrpcSender {
            clients,
            next: AtomicUsize::new(0),
            request,
            authorization,
        })
    }

    /// Sends one inference to `model`: its status as HTTP would give it, or
    /// `None` when the connection failed.
    pub(super) async fn send(&self, model: String) -> Option<u16> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let mut client = self.clients[turn].clone();
        let mut message = self.request.clone();
        message.model_name = model;
        let mut request = tonic::Request::new(message);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        match client.model_infer(request).await {
            Ok(_) => Some(200),
            Err(status) => http_status(status.code()),
        }
    }
}

/// A gRPC status as the HTTP status of the same meaning; `None` for a call
/// that never reached the server.
fn http_status(code: Code) -> Option<u16> {
    Some(match code {
        Code::NotFound => 404,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::InvalidArgument => 400,
        Code::OutOfRange => 413,
        Code::ResourceExhausted => 507,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Cancelled => return None,
        _ => 500,
    })
}
