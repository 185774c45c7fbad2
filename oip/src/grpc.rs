//! gRPC's inference messages (Triton's `inference.GRPCInferenceService`)
//! as the HTTP binary tensor extension frames them, both ways: a
//! `ModelInferRequest` becomes a JSON header followed by every input's bytes
//! (typed contents written out little-endian, as `raw_input_contents`
//! already are), with every output asked for as binary data; the framed
//! answer becomes a `ModelInferResponse` whose outputs are all in
//! `raw_output_contents`, as Triton answers. The host's gRPC service is
//! then the HTTP path under another codec, and this conversion of
//! untrusted messages is fuzzed on its own.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::header::Object;

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
    for input in &inputs {
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
            None => write_contents(input, &mut data)?,
        }
        described.push(FramedInput {
            name: &input.name,
            datatype: &input.datatype,
            shape: &input.shape,
            parameters: Parameters::with(&input.parameters, "binary_data_size", data.len() - start),
        });
    }
    let header = FramedHeader {
        id: &id,
        parameters: if outputs.is_empty() {
            Parameters::with(&parameters, "binary_data_output", true)
        } else {
            Parameters::given(&parameters)
        },
        inputs: described,
        outputs: outputs
            .iter()
            .map(|output| FramedOutput {
                name: &output.name,
                parameters: Parameters::with(&output.parameters, "binary_data", true),
            })
            .collect(),
    };
    let mut body = Vec::with_capacity(256 + data.len());
    serde_json::to_writer(&mut body, &header)
        .map_err(|e| GrpcError::Internal(format!("cannot write the request as JSON: {e}")))?;
    let header_length = body.len();
    body.extend_from_slice(&data);
    Ok((body, header_length))
}

/// A framed request's JSON header, written from the gRPC message's fields
/// without a tree of maps and strings.
#[derive(Serialize)]
struct FramedHeader<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    parameters: Parameters<'a>,
    inputs: Vec<FramedInput<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    outputs: Vec<FramedOutput<'a>>,
}

#[derive(Serialize)]
struct FramedInput<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    parameters: Parameters<'a>,
}

#[derive(Serialize)]
struct FramedOutput<'a> {
    name: &'a str,
    parameters: Parameters<'a>,
}

/// gRPC parameters as the JSON ones of the HTTP protocol, with one of the
/// binary extension's own in place of any the client gave of that name.
struct Parameters<'a> {
    given: &'a HashMap<String, InferParameter>,
    ours: Option<(&'static str, Value)>,
}

impl<'a> Parameters<'a> {
    fn given(given: &'a HashMap<String, InferParameter>) -> Self {
        Parameters { given, ours: None }
    }

    fn with(
        given: &'a HashMap<String, InferParameter>,
        key: &'static str,
        value: impl Into<Value>,
    ) -> Self {
        Parameters {
            given,
            ours: Some((key, value.into())),
        }
    }

    fn is_empty(&self) -> bool {
        self.given.is_empty() && self.ours.is_none()
    }
}

impl Serialize for Parameters<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ours = self.ours.as_ref().map(|(key, _)| *key);
        let mut map = serializer.serialize_map(None)?;
        for (key, parameter) in self.given {
            if Some(key.as_str()) != ours {
                map.serialize_entry(key, &ParameterValue(parameter))?;
            }
        }
        if let Some((key, value)) = &self.ours {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// One gRPC parameter as its JSON value (`null` for one that holds none).
struct ParameterValue<'a>(&'a InferParameter);

impl Serialize for ParameterValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0.parameter_choice {
            Some(ParameterChoice::BoolParam(b)) => serializer.serialize_bool(*b),
            Some(ParameterChoice::Int64Param(i)) => serializer.serialize_i64(*i),
            Some(ParameterChoice::Uint64Param(u)) => serializer.serialize_u64(*u),
            Some(ParameterChoice::DoubleParam(x)) => serializer.serialize_f64(*x),
            Some(ParameterChoice::StringParam(s)) => serializer.serialize_str(s),
            None => serializer.serialize_unit(),
        }
    }
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

/// Parameters from JSON as gRPC's, but for the binary extension's own.
fn grpc_parameters(parameters: Option<&Map<String, Value>>) -> HashMap<String, InferParameter> {
    parameters
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.as_str() != "binary_data_size")
        .map(|(key, value)| (key.clone(), grpc_parameter(value)))
        .collect()
}

/// The fields of a model's framed answer that gRPC's answer carries, when
/// they have the protocol's types. Anything else is read as a tree (the
/// fallback in [`infer_response`]), so that both readings give one answer.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(default, borrow)]
    model_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<Object<AnswerOutput<'a>>>>,
}

#[derive(Deserialize)]
struct AnswerOutput<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    datatype: Option<Cow<'a, str>>,
    #[serde(default)]
    shape: Option<Vec<i64>>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// An answer's fields as either reading finds them.
struct AnswerFields<'a> {
    model_name: &'a str,
    model_version: &'a str,
    id: &'a str,
    parameters: Option<&'a Map<String, Value>>,
    outputs: Vec<OutputFields<'a>>,
}

struct OutputFields<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: Vec<i64>,
    parameters: Option<&'a Map<String, Value>>,
}

impl<'a> AnswerFields<'a> {
    fn of_fields(answer: &'a Answer<'a>) -> Self {
        AnswerFields {
            model_name: answer.model_name.as_deref().unwrap_or_default(),
            model_version: answer.model_version.as_deref().unwrap_or_default(),
            id: answer.id.as_deref().unwrap_or_default(),
            parameters: answer.parameters.as_ref(),
            outputs: answer
                .outputs
                .iter()
                .flatten()
                .map(|Object(output)| OutputFields {
                    name: output.name.as_deref().unwrap_or_default(),
                    datatype: output.datatype.as_deref().unwrap_or_default(),
                    shape: output.shape.clone().unwrap_or_default(),
                    parameters: output.parameters.as_ref(),
                })
                .collect(),
        }
    }

    /// The tree's reading: a field of another type counts as absent, and a
    /// dimension that is not an integer as -1.
    fn of_tree(header: &'a Value) -> Self {
        let text = |value: &'a Value, key: &str| {
            value.get(key).and_then(Value::as_str).unwrap_or_default()
        };
        let parameters = |value: &'a Value| value.get("parameters").and_then(Value::as_object);
        AnswerFields {
            model_name: text(header, "model_name"),
            model_version: text(header, "model_version"),
            id: text(header, "id"),
            parameters: parameters(header),
            outputs: header
                .get("outputs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|output| OutputFields {
                    name: text(output, "name"),
                    datatype: text(output, "datatype"),
                    shape: shape(output),
                    parameters: parameters(output),
                })
                .collect(),
        }
    }

    /// gRPC's answer, with each output's bytes taken in order from `data`.
    fn response(self, mut data: &[u8]) -> Result<ModelInferResponse, GrpcError> {
        let mut outputs = Vec::with_capacity(self.outputs.len());
        let mut raw_output_contents = Vec::with_capacity(self.outputs.len());
        for output in self.outputs {
            let size = output
                .parameters
                .and_then(|parameters| parameters.get("binary_data_size"))
                .and_then(Value::as_u64)
                .and_then(|size| usize::try_from(size).ok())
                .filter(|size| *size <= data.len())
                .ok_or_else(|| {
                    GrpcError::Internal(format!(
                        "output {:?} came back without its data",
                        output.name
                    ))
                })?;
            let (bytes, rest) = data.split_at(size);
            data = rest;
            raw_output_contents.push(bytes.to_vec());
            outputs.push(InferOutputTensor {
                name: output.name.to_string(),
                datatype: output.datatype.to_string(),
                shape: output.shape,
                parameters: grpc_parameters(output.parameters),
                contents: None,
            });
        }
        Ok(ModelInferResponse {
            model_name: self.model_name.to_string(),
            model_version: self.model_version.to_string(),
            id: self.id.to_string(),
            parameters: grpc_parameters(self.parameters),
            outputs,
            raw_output_contents,
        })
    }
}

/// The model's framed v2 answer (`header_length` bytes of JSON, then the
/// outputs' bytes) as gRPC's; its `model_version` is the answer's, if it
/// says one.
pub fn infer_response(
    body: &[u8],
    header_length: Option<usize>,
) -> Result<ModelInferResponse, GrpcError> {
    let header_end = header_length.unwrap_or(body.len());
    let header = body.get(..header_end).ok_or_else(not_an_answer)?;
    let data = body.get(header_end..).unwrap_or_default();
    // JSON that is not UTF-8 fails in the tree's reading.
    if let Some(answer) = Object::<Answer>::read(header) {
        return AnswerFields::of_fields(&answer).response(data);
    }
    infer_response_from_tree(header, data)
}

/// [`infer_response`] from the answer's JSON read as a tree: the reading
/// of an answer whose fields do not have the protocol's types.
fn infer_response_from_tree(header: &[u8], data: &[u8]) -> Result<ModelInferResponse, GrpcError> {
    let header: Value = serde_json::from_slice(header)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(not_an_answer)?;
    AnswerFields::of_tree(&header).response(data)
}

fn not_an_answer() -> GrpcError {
    GrpcError::Internal("the model's answer is not a v2 inference answer".into())
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
