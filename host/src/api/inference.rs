//! Inference routes: DJL's and TorchServe's `POST /predictions/{model}`,
//! which loads the model on demand; SageMaker's `POST /models/{model}/invoke`,
//! which serves only a loaded model; and SageMaker's `POST /invocations`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mme_oip::{self as binary, BinaryOutputs, EncodingError};
use serde::Deserialize;

use super::error::QUEUE_FULL;
use super::v2::OIP_JSON;
use super::{ApiError, AppState};
use crate::metrics::RequestLabels;
use crate::registry::{LoadedModel, Reload};
use crate::runtime::{METADATA_CONTENT_TYPE, Request};
use crate::store::split_key;

/// The `model` label of requests for models that are not loaded.
const UNKNOWN_MODEL_LABEL: &str = "_unknown";

// Header names are statics, not strings: a header map looks a string name
// up by parsing it first, on every request.

/// SageMaker's pass-through header for per-request attributes.
pub static CUSTOM_ATTRIBUTES: HeaderName =
    HeaderName::from_static("x-amzn-sagemaker-custom-attributes");
/// The model a SageMaker multi-model endpoint invocation is for, and its older name.
static TARGET_MODEL_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-amzn-sagemaker-target-model"),
    HeaderName::from_static("x-amzn-target-model"),
];
/// Triton's `Inference-Header-Content-Length`.
pub(super) static HEADER_LENGTH: HeaderName = HeaderName::from_static(binary::HEADER_LENGTH);
/// The name of the single model of SageMaker's single-model mode.
pub const SINGLE_MODEL: &str = "model";

/// `POST /invocations` query.
#[derive(Deserialize)]
pub struct InvocationQuery {
    model_name: Option<String>,
}

/// `POST /invocations`: the model named by `?model_name=` or by the
/// target-model header (loaded on demand from the store); without either,
/// the single model of single-model mode.
pub async fn invocations(
    State(state): State<AppState>,
    query: Result<Query<InvocationQuery>, QueryRejection>,
    request: HttpRequest,
) -> Response {
    let named = match query {
        Ok(Query(query)) => query.model_name,
        Err(error) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                format!("bad query: {error}; use ?model_name=NAME"),
            )
            .into_response();
        }
    };
    let target = named.or_else(|| target_model(request.headers()).map(model_of_target));
    if let Some(Err(error)) = target.as_deref().map(plain) {
        return error.into_response();
    }
    match target {
        Some(model) => answer(&state, &model, request, (Loading::OnDemand, Protocol::Plain)).await,
        None if state.multi_model => ApiError::new(
            StatusCode::BAD_REQUEST,
            "ModelNotNamed",
            "this is a multi-model endpoint: name the model with ?model_name=NAME or the X-Amzn-SageMaker-Target-Model header",
        )
        .into_response(),
        None => answer(&state, SINGLE_MODEL, request, (Loading::Single, Protocol::Plain)).await,
    }
}

/// The target-model header, if the caller sent one.
pub(super) fn target_model(headers: &HeaderMap) -> Option<&str> {
    TARGET_MODEL_HEADERS
        .iter()
        .find_map(|name| headers.get(name))
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
}

/// SageMaker names the target by its archive (`m.tar.gz`); the model is `m`.
pub(super) fn model_of_target(target: &str) -> String {
    target.strip_suffix(".tar.gz").unwrap_or(target).to_string()
}

/// `POST /predictions/{model}`: runs the model on the body, loading it first if needed.
pub async fn predictions(
    State(state): State<AppState>,
    Path(model): Path<String>,
    request: HttpRequest,
) -> Response {
    if let Err(error) = plain(&model) {
        return error.into_response();
    }
    answer(
        &state,
        &model,
        request,
        (Loading::OnDemand, Protocol::Plain),
    )
    .await
}

/// `POST /predictions/{model}/{version}`: as [`predictions`], for one version.
pub async fn predictions_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    request: HttpRequest,
) -> Response {
    let wanted = match versioned(&model, &version) {
        Ok(wanted) => wanted,
        Err(error) => return error.into_response(),
    };
    answer(
        &state,
        &wanted,
        request,
        (Loading::OnDemand, Protocol::Plain),
    )
    .await
}

/// A model name as a route gives it, checked: a name is never read as a
/// name and a version (`m%2F2` is not version 2 of `m`).
pub(super) fn plain(name: &str) -> Result<&str, ApiError> {
    crate::store::check_name(name)
        .map_err(|error| ApiError::from(crate::registry::LoadError::Store(error)))?;
    Ok(name)
}

/// What a route that names a version asks the registry for: `name/N`
/// ([`crate::store::versions::wanted`]), or `name` for an empty version
/// (gRPC's default); a version that cannot be one is a 400 that says so.
pub(super) fn versioned(name: &str, version: &str) -> Result<String, ApiError> {
    plain(name)?;
    let version = crate::store::parse_version(version)
        .map_err(|error| ApiError::from(crate::registry::LoadError::Store(error)))?;
    Ok(crate::store::versions::wanted(name, version))
}

/// `POST /models/{model}/invoke`: runs a loaded model; 404 if it is not loaded.
pub async fn invoke(
    State(state): State<AppState>,
    Path(model): Path<String>,
    request: HttpRequest,
) -> Response {
    if let Err(error) = plain(&model) {
        return error.into_response();
    }
    answer(
        &state,
        &model,
        request,
        (Loading::LoadedOnly, Protocol::Plain),
    )
    .await
}

/// What the request body is, and what shape the answer takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// The body and its content type go to the model as they are.
    Plain,
    /// An Open Inference Protocol (KServe v2) JSON request; the answer names
    /// the model and errors carry the protocol's `error` field.
    OpenInference,
    /// The server asks the model what it takes and gives (v2 model metadata).
    Metadata,
}

/// Whether a route may load a model that is not loaded yet, and from where.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Loading {
    /// From the model store.
    OnDemand,
    /// Only a model loaded already.
    LoadedOnly,
    /// The single model, from its folder.
    Single,
}

/// Runs one request and counts it by model and status. It takes the whole
/// request, not axum's `HeaderMap` extractor, which copies every header.
pub(super) async fn answer(
    state: &AppState,
    model: &str,
    request: HttpRequest,
    (loading, protocol): (Loading, Protocol),
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if tracing::enabled!(tracing::Level::DEBUG)
        && let Some(target) = target_model(headers)
    {
        tracing::debug!(model, target, "target model");
    }
    let served = predict(state, model, headers, body, (loading, protocol)).await;
    match (counted(state, served), protocol) {
        (Ok(response), _) => response,
        (Err(error), Protocol::Plain) => error.into_response(),
        (Err(error), Protocol::OpenInference | Protocol::Metadata) => {
            error.into_open_inference_response()
        }
    }
}

/// Runs one Open Inference request whose body was read already (a gRPC
/// call's, say), loading the model on demand, and counts it as
/// [`answer`] does.
pub(super) async fn answer_read(
    state: &AppState,
    model: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<Response, ApiError> {
    let modes = (Loading::OnDemand, Protocol::OpenInference);
    counted(
        state,
        predict_read(state, model, headers, body, modes).await,
    )
}

/// The answer of the model that took the request, counted by model and
/// status, with a full queue's status as the server is configured.
fn counted(
    state: &AppState,
    (served_by, result): (Option<Arc<LoadedModel>>, Result<Response, ApiError>),
) -> Result<Response, ApiError> {
    let result = result.map_err(|mut error| {
        if error.kind == QUEUE_FULL {
            error.status = StatusCode::from_u16(state.queue_full_status)
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        }
        error
    });
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(error) => error.status,
    };
    match served_by {
        // Most requests: the series was found once, when the model loaded.
        Some(model) if status == StatusCode::OK => {
            model.requests_ok.inc();
        }
        // Only loaded models become label values: random names must not grow the metrics.
        served_by => {
            let labels = served_by.map_or(
                RequestLabels {
                    model: UNKNOWN_MODEL_LABEL.to_string(),
                    version: String::new(),
                    status: status.as_u16(),
                },
                |m| RequestLabels::of_model(&m.name, status.as_u16()),
            );
            state.metrics.requests.get_or_create(&labels).inc();
        }
    }
    result
}

/// The model that took the request, if one did, and the answer.
pub(super) async fn predict(
    state: &AppState,
    model: &str,
    headers: &HeaderMap,
    body: Body,
    (loading, protocol): (Loading, Protocol),
) -> (Option<Arc<LoadedModel>>, Result<Response, ApiError>) {
    // The body is read first, even for an answer that does not need it: an
    // unread body would cost the client its keep-alive connection. A body
    // too large is refused before a model is loaded for it.
    let body = match read_body(body, state.max_request_bytes, state.body_read_timeout).await {
        Ok(body) => body,
        Err(error) => return (None, Err(error)),
    };
    let encoding = header_text(headers, header::CONTENT_ENCODING);
    let body = match binary::decompress(body, &encoding, state.max_request_bytes) {
        Ok(body) => body,
        Err(error) => return (None, Err(encoding_error(error))),
    };
    predict_read(state, model, headers, body, (loading, protocol)).await
}

/// [`predict`] of a body read and decompressed already.
async fn predict_read(
    state: &AppState,
    model: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
    (loading, protocol): (Loading, Protocol),
) -> (Option<Arc<LoadedModel>>, Result<Response, ApiError>) {
    // The model, when it is loaded already: how it reads binary tensors
    // decides how the request is read. A model that must be loaded is
    // loaded only after its request has been checked, and an error of the
    // lookup waits until then too.
    let found = match loading {
        Loading::OnDemand | Loading::LoadedOnly => Some(state.registry.get_loaded(model)),
        Loading::Single => None,
    };
    let reader = match &found {
        Some(Ok(loaded)) if !loaded.reads_binary_tensors() => binary::Reader::Json,
        _ => binary::Reader::BinaryTensors,
    };
    // A binary request is read and checked here, before a model is loaded
    // for it; its tensors become JSON only for a model that cannot read them.
    let (mut body, framed) = if protocol == Protocol::OpenInference {
        let length = headers
            .get(&HEADER_LENGTH)
            .map(|value| value.to_str().unwrap_or("(not text)"));
        match binary::read_request_for(body, length, reader) {
            Ok(framed) => (Vec::new(), Some(framed)),
            Err(error) => return (None, Err(invalid_binary(error))),
        }
    } else {
        (body, None)
    };
    let reload = match loading {
        Loading::OnDemand => Reload::FromStore,
        Loading::LoadedOnly => Reload::Never,
        Loading::Single => Reload::From(state.single_model_dir.clone()),
    };
    let loaded = match found {
        Some(Ok(loaded)) => loaded,
        Some(Err(error)) if loading == Loading::LoadedOnly => return (None, Err(error.into())),
        _ => {
            let loaded = match &reload {
                Reload::From(dir) => state.registry.get_or_load_from(model, dir.clone()).await,
                _ => state.registry.get_or_load(model).await,
            };
            match loaded {
                Ok(loaded) => loaded,
                Err(error) => return (None, Err(error.into())),
            }
        }
    };
    let mut content_type = match protocol {
        Protocol::Plain => header_text(headers, header::CONTENT_TYPE),
        Protocol::OpenInference => OIP_JSON.to_string(),
        Protocol::Metadata => METADATA_CONTENT_TYPE.to_string(),
    };
    let mut binary_outputs = BinaryOutputs::default();
    if let Some(framed) = framed {
        binary_outputs = framed.wanted().clone();
        if loaded.reads_binary_tensors() {
            let (raw, header_length) = framed.into_binary();
            body = raw;
            if let Some(length) = header_length {
                content_type = binary::framed_content_type(length);
            }
        } else {
            match framed.into_json() {
                Ok(json) => body = json,
                Err(error) => return (None, Err(invalid_binary(error))),
            }
        }
    }
    if protocol != Protocol::Metadata && content_type.eq_ignore_ascii_case(METADATA_CONTENT_TYPE) {
        return (
            None,
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "{METADATA_CONTENT_TYPE} is the server's own; send the model's input as application/json or text/csv"
                ),
            )),
        );
    }
    let request = Request {
        content_type,
        accept: header_text(headers, header::ACCEPT),
        body,
        attributes: header_text(headers, &CUSTOM_ATTRIBUTES),
    };
    let (served_by, result) = state.registry.run(loaded, request, &reload).await;
    let response = result.map_err(ApiError::from).and_then(|mut response| {
        let mut header_length = None;
        if let (Protocol::OpenInference, Some(model)) = (protocol, &served_by) {
            (response.body, header_length) = finish_open_inference(
                response.body,
                &response.content_type,
                &model.name,
                &binary_outputs,
            )?;
        }
        let mut http = http_response(response);
        if let Some(length) = header_length {
            let headers = http.headers_mut();
            headers.insert(HEADER_LENGTH.clone(), HeaderValue::from(length));
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
        Ok(http)
    });
    (served_by, response)
}

/// A binary request that cannot be read, as the HTTP answer.
fn invalid_binary(error: binary::BinaryError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidInput", error.to_string())
}

/// A `Content-Encoding` the server cannot undo, or a body that is not
/// what its encoding says, as the HTTP answer.
fn encoding_error(error: EncodingError) -> ApiError {
    let (status, kind) = match error {
        EncodingError::Unsupported(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
        }
        EncodingError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
        EncodingError::Corrupt { .. } => (StatusCode::BAD_REQUEST, "InvalidInput"),
    };
    ApiError::new(status, kind, error.to_string())
}

/// An Open Inference answer as the client asked for it: with `model_name`
/// (which the model cannot know) and, where the client asked, outputs as
/// binary data after the JSON, whose length is then returned. A model that
/// wrote its binary outputs itself framed its answer so (`content_type`);
/// a body that is not a JSON object is left as it is. The model's name is
/// written before the answer's own JSON where it can be, which costs a scan
/// of the answer rather than a tree of it.
fn finish_open_inference(
    mut body: Vec<u8>,
    content_type: &str,
    model: &str,
    binary_outputs: &BinaryOutputs,
) -> Result<(Vec<u8>, Option<usize>), ApiError> {
    type Object = serde_json::Map<String, serde_json::Value>;
    let model_error =
        |message: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ModelError", message);
    let (name, version) = split_key(model);
    let version = version.to_string();
    let fields = [("model_name", name), ("model_version", version.as_str())];
    if let Some(length) = binary::framed_header_length(content_type) {
        if let Some(mut json) = body
            .get(..length)
            .and_then(|header| binary::with_fields_first(header, &fields))
        {
            let length_now = json.len();
            json.extend_from_slice(&body[length..]);
            return Ok((json, Some(length_now)));
        }
        let header = body
            .get(..length)
            .and_then(|header| serde_json::from_slice::<Object>(header).ok());
        let Some(mut header) = header else {
            return Err(model_error(format!(
                "the model answered binary data after a JSON header of {length} bytes, but its body does not start with one"
            )));
        };
        name_the_model(&mut header, model);
        let mut json = serde_json::to_vec(&header)
            .map_err(|e| model_error(format!("cannot write the answer's header: {e}")))?;
        let length_now = json.len();
        json.extend_from_slice(&body.split_off(length));
        return Ok((json, Some(length_now)));
    }
    if !binary_outputs.any()
        && let Some(json) = binary::with_fields_first(&body, &fields)
    {
        return Ok((json, None));
    }
    let Ok(mut answer) = serde_json::from_slice::<Object>(&body) else {
        return Ok((body, None));
    };
    name_the_model(&mut answer, model);
    let tail = if binary_outputs.any() {
        binary::encode_response(&mut answer, binary_outputs)
            .map_err(|error| model_error(error.to_string()))?
    } else {
        None
    };
    let Ok(mut json) = serde_json::to_vec(&answer) else {
        return Ok((body, None));
    };
    Ok(match tail {
        Some(tail) => {
            let length = json.len();
            json.extend_from_slice(&tail);
            (json, Some(length))
        }
        None => (json, None),
    })
}

/// Puts the name and version of the model that answered (`model`, its
/// registry key) into an Open Inference answer, as Triton does.
fn name_the_model(answer: &mut serde_json::Map<String, serde_json::Value>, model: &str) {
    let (name, version) = split_key(model);
    answer.insert("model_name".into(), name.into());
    answer.insert("model_version".into(), version.to_string().into());
}

/// The model's answer as HTTP: its content type, its body, and its custom
/// attributes for the caller.
fn http_response(response: crate::runtime::Response) -> Response {
    let content_type = HeaderValue::from_str(&response.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let mut http = ([(header::CONTENT_TYPE, content_type)], response.body).into_response();
    if !response.attributes.is_empty() {
        match HeaderValue::from_str(&response.attributes) {
            Ok(value) => {
                http.headers_mut().insert(CUSTOM_ATTRIBUTES.clone(), value);
            }
            Err(_) => tracing::warn!(
                "the model's custom attributes are not a valid header value; dropped"
            ),
        }
    }
    http
}

/// Reads the body up to `limit` bytes; more is a 413 that says the limit.
pub async fn read_body(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, ApiError> {
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!("the request body did not arrive within {timeout:?} (--body-read-timeout)"),
            )
        })?;
    read.map(|bytes| bytes.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the request body is larger than {limit} bytes or could not be read"),
        )
    })
}

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_answer_gets_the_model_name_and_keeps_its_binary_data() {
        let header = br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&2.5f32.to_le_bytes());
        let framed = binary::framed_content_type(header.len());
        let (answer, length) =
            finish_open_inference(body, &framed, "m", &BinaryOutputs::default()).unwrap();
        let length = length.expect("a header length");
        let json: serde_json::Value = serde_json::from_slice(&answer[..length]).unwrap();
        assert_eq!(json["model_name"], "m");
        assert_eq!(json["outputs"][0]["name"], "y");
        assert_eq!(answer[length..], 2.5f32.to_le_bytes());
    }

    #[test]
    fn a_framed_answer_whose_header_is_not_json_is_a_model_error() {
        for (body, length) in [(b"{}".to_vec(), 3), (b"[1]xxxx".to_vec(), 3)] {
            let framed = binary::framed_content_type(length);
            let Err(error) = finish_open_inference(body, &framed, "m", &BinaryOutputs::default())
            else {
                panic!("a broken frame was accepted");
            };
            assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert!(error.message.contains("JSON header"), "{}", error.message);
        }
    }
}
