//! gRPC's inference messages (Triton's `inference.GRPCInferenceService`)
//! as the HTTP binary tensor extension frames them, both ways: a
//! `ModelInferRequest` becomes a JSON header followed by every input's bytes
//! (typed contents written out little-endian, as `raw_input_contents`
//! already are), with every output asked for as binary data; the framed
//! answer becomes a `ModelInferResponse` whose outputs are all in
//! `raw_output_contents`, as Triton answers. The host's gRPC service is
//! then the HTTP path under another codec, and this conversion of
//! untrusted messages is fuzzed on its own.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use thiserror::Error;

use proto::infer_parameter::ParameterChoice;
use proto::model_infer_request::InferInputTensor;
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelMetadataResponse,
};

/// The messages generated from `proto/triton/grpc_service.proto`.
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

/// A message that cannot be converted, by whose fault.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GrpcError {
    /// The client's request is wrong (gRPC's `INVALID_ARGUMENT`).
    #[error("{0}")]
    Invalid(String),
    /// The model's answer is wrong (gRPC's `INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

/// The request as a v2 body with binary tensors, and its JSON header's length.
pub fn framed_request(request: ModelInferRequest) -> Result<(Vec<u8>, usize), GrpcError> {
    let ModelInferRequest {
        id,
        parameters,
        inputs,
        outputs,
        raw_input_contents,
        ..
    } = request;
    if !raw_input_contents.is_empty() && raw_input_contents.len() != inputs.len() {
        return Err(GrpcError::Invalid(format!(
            "raw_input_contents has {} entries for {} inputs: send one per input, in their order",
            raw_input_contents.len(),
            inputs.len()
        )));
    }
    let mut raw = raw_input_contents.into_iter();
    let mut data = Vec::new();
    let mut described = Vec::with_capacity(inputs.len());
    for input in inputs {
        let start = data.len();
        match raw.next() {
            Some(_)
                if input
                    .contents
                    .as_ref()
                    .is_some_and(|c| !filled(c).is_empty()) =>
            {
                return Err(GrpcError::Invalid(format!(
                    "input {:?} has both contents and raw_input_contents: send one",
                    input.name
                )));
            }
            Some(bytes) => data.extend_from_slice(&bytes),
            None => write_contents(&input, &mut data)?,
        }
        let mut parameters = json_parameters(&input.parameters);
        parameters.insert("binary_data_size".into(), (data.len() - start).into());
        described.push(json!({
            "name": input.name,
            "datatype": input.datatype,
            "shape": input.shape,
            "parameters": parameters,
        }));
    }
    let mut header = Map::new();
    if !id.is_empty() {
        header.insert("id".into(), id.into());
    }
    let mut parameters = json_parameters(&parameters);
    if outputs.is_empty() {
        parameters.insert("binary_data_output".into(), true.into());
    }
    if !parameters.is_empty() {
        header.insert("parameters".into(), parameters.into());
    }
    header.insert("inputs".into(), described.into());
    if !outputs.is_empty() {
        let wanted: Vec<Value> = outputs
            .into_iter()
            .map(|output| {
                let mut parameters = json_parameters(&output.parameters);
                parameters.insert("binary_data".into(), true.into());
                json!({ "name": output.name, "parameters": parameters })
            })
            .collect();
        header.insert("outputs".into(), wanted.into());
    }
    let mut body = serde_json::to_vec(&header)
        .map_err(|e| GrpcError::Internal(format!("cannot write the request as JSON: {e}")))?;
    let header_length = body.len();
    body.extend_from_slice(&data);
    Ok((body, header_length))
}

/// The names of the typed contents that hold values.
fn filled(contents: &InferTensorContents) -> Vec<&'static str> {
    [
        ("bool_contents", contents.bool_contents.is_empty()),
        ("int_contents", contents.int_contents.is_empty()),
        ("int64_contents", contents.int64_contents.is_empty()),
        ("uint_contents", contents.uint_contents.is_empty()),
        ("uint64_contents", contents.uint64_contents.is_empty()),
        ("fp32_contents", contents.fp32_contents.is_empty()),
        ("fp64_contents", contents.fp64_contents.is_empty()),
        ("bytes_contents", contents.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, empty)| (!empty).then_some(name))
    .collect()
}

/// Appends an input's typed contents to `out` as the binary extension lays
/// them out: little-endian at the datatype's width, BOOL as one byte,
/// BYTES as a 4-byte length and the bytes.
fn write_contents(input: &InferInputTensor, out: &mut Vec<u8>) -> Result<(), GrpcError> {
    let name = &input.name;
    let datatype = input.datatype.as_str();
    let invalid = |reason: String| GrpcError::Invalid(format!("input {name:?}: {reason}"));
    let field = match datatype {
        "BOOL" => "bool_contents",
        "INT8" | "INT16" | "INT32" => "int_contents",
        "INT64" => "int64_contents",
        "UINT8" | "UINT16" | "UINT32" => "uint_contents",
        "UINT64" => "uint64_contents",
        "FP32" => "fp32_contents",
        "FP64" => "fp64_contents",
        "BYTES" => "bytes_contents",
        "FP16" | "BF16" => {
            return Err(invalid(format!(
                "{datatype} has no typed contents in the protocol: send its bytes in raw_input_contents"
            )));
        }
        other => return Err(invalid(format!("unknown datatype {other:?}"))),
    };
    let empty = InferTensorContents::default();
    let contents = input.contents.as_ref().unwrap_or(&empty);
    let filled = filled(contents);
    if let Some(other) = filled.iter().find(|f| **f != field) {
        return Err(invalid(format!(
            "it is {datatype} but carries {other}; its values go in {field}"
        )));
    }
    if filled.is_empty() && input.shape.iter().all(|d| *d != 0) {
        return Err(invalid(format!(
            "it has no data: send its values in contents.{field} or its bytes in raw_input_contents"
        )));
    }
    let narrow = |x: i64| -> Result<[u8; 8], GrpcError> {
        let bits = match datatype {
            "INT8" => 8,
            "INT16" => 16,
            _ => 32,
        };
        let fits = (-(1i64 << (bits - 1))..1i64 << (bits - 1)).contains(&x);
        fits.then(|| x.to_le_bytes())
            .ok_or_else(|| invalid(format!("{x} does not fit {datatype}")))
    };
    let width = crate::element_size(datatype)
        .map_err(invalid)?
        .unwrap_or_default();
    match datatype {
        "BOOL" => out.extend(contents.bool_contents.iter().map(|b| u8::from(*b))),
        "INT8" | "INT16" | "INT32" => {
            for x in &contents.int_contents {
                out.extend_from_slice(&narrow(i64::from(*x))?[..width]);
            }
        }
        "INT64" => contents
            .int64_contents
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        "UINT8" | "UINT16" | "UINT32" => {
            for x in &contents.uint_contents {
                let bytes = x.to_le_bytes();
                if bytes[width..].iter().any(|b| *b != 0) {
                    return Err(invalid(format!("{x} does not fit {datatype}")));
                }
                out.extend_from_slice(&bytes[..width]);
            }
        }
        "UINT64" => contents
            .uint64_contents
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        "FP32" => contents
            .fp32_contents
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        "FP64" => contents
            .fp64_contents
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        _ => {
            for bytes in &contents.bytes_contents {
                let length = u32::try_from(bytes.len())
                    .map_err(|_| invalid("an element is longer than 4 GiB".into()))?;
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    Ok(())
}

/// gRPC parameters as the JSON ones of the HTTP protocol.
fn json_parameters(parameters: &HashMap<String, InferParameter>) -> Map<String, Value> {
    parameters
        .iter()
        .map(|(key, parameter)| {
            let value = match &parameter.parameter_choice {
                Some(ParameterChoice::BoolParam(b)) => Value::from(*b),
                Some(ParameterChoice::Int64Param(i)) => Value::from(*i),
                Some(ParameterChoice::Uint64Param(u)) => Value::from(*u),
                Some(ParameterChoice::DoubleParam(x)) => Value::from(*x),
                Some(ParameterChoice::StringParam(s)) => Value::from(s.as_str()),
                None => Value::Null,
            };
            (key.clone(), value)
        })
        .collect()
}

/// A JSON parameter as gRPC's; anything that is not a scalar as its JSON text.
fn grpc_parameter(value: &Value) -> InferParameter {
    let choice = match value {
        Value::Bool(b) => ParameterChoice::BoolParam(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ParameterChoice::Int64Param(i),
            (None, Some(u)) => ParameterChoice::Uint64Param(u),
            _ => ParameterChoice::DoubleParam(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => ParameterChoice::StringParam(s.clone()),
        other => ParameterChoice::StringParam(other.to_string()),
    };
    InferParameter {
        parameter_choice: Some(choice),
    }
}

/// The parameters of a JSON object, but for the binary extension's own.
fn grpc_parameters(holder: &Value) -> HashMap<String, InferParameter> {
    holder
        .get("parameters")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.as_str() != "binary_data_size")
        .map(|(key, value)| (key.clone(), grpc_parameter(value)))
        .collect()
}

/// The model's framed v2 answer (`header_length` bytes of JSON, then the
/// outputs' bytes) as gRPC's; its `model_version` is the answer's, if it
/// says one.
pub fn infer_response(
    body: &[u8],
    header_length: Option<usize>,
) -> Result<ModelInferResponse, GrpcError> {
    let header_end = header_length.unwrap_or(body.len());
    let header: Value = body
        .get(..header_end)
        .and_then(|header| serde_json::from_slice(header).ok())
        .filter(Value::is_object)
        .ok_or_else(|| {
            GrpcError::Internal("the model's answer is not a v2 inference answer".into())
        })?;
    let mut data = body.get(header_end..).unwrap_or_default();
    let text = |key: &str| {
        header
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut outputs = Vec::new();
    let mut raw_output_contents = Vec::new();
    for output in header
        .get("outputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = output
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let size = output
            .pointer("/parameters/binary_data_size")
            .and_then(Value::as_u64)
            .and_then(|size| usize::try_from(size).ok())
            .filter(|size| *size <= data.len())
            .ok_or_else(|| {
                GrpcError::Internal(format!("output {name:?} came back without its data"))
            })?;
        let (bytes, rest) = data.split_at(size);
        data = rest;
        raw_output_contents.push(bytes.to_vec());
        outputs.push(InferOutputTensor {
            name: name.to_string(),
            datatype: output
                .get("datatype")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            shape: shape(output),
            parameters: grpc_parameters(output),
            contents: None,
        });
    }
    Ok(ModelInferResponse {
        model_name: text("model_name"),
        model_version: text("model_version"),
        id: text("id"),
        parameters: grpc_parameters(&header),
        outputs,
        raw_output_contents,
    })
}

/// The `shape` of a tensor's JSON; a dimension that is not an integer is -1.
fn shape(tensor: &Value) -> Vec<i64> {
    tensor
        .get("shape")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| d.as_i64().unwrap_or(-1))
        .collect()
}

/// The v2 metadata JSON as gRPC's.
pub fn metadata_response(metadata: &Value) -> ModelMetadataResponse {
    let text = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let tensors = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|tensor| TensorMetadata {
                name: text(tensor.get("name")),
                datatype: text(tensor.get("datatype")),
                shape: shape(tensor),
            })
            .collect()
    };
    ModelMetadataResponse {
        name: text(metadata.get("name")),
        versions: metadata
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| text(Some(v)))
            .collect(),
        platform: text(metadata.get("platform")),
        inputs: tensors("inputs"),
        outputs: tensors("outputs"),
    }
}

#[cfg(test)]
mod tests;
