//! The Open Inference Protocol (KServe v2): the host hands a v2 request to
//! the model as it came (JSON, or, for a model that reads binary tensors,
//! Triton's framing of a JSON header and the tensors' bytes), and the SDK
//! decodes its input tensor and wraps the model's answer in an output
//! tensor, so that a model that reads [`Request::matrix`](crate::Request::matrix)
//! and answers with [`Response::json`](crate::Response::json) speaks v2
//! with no code of its own.

use std::borrow::Cow;

use mme_oip::{BinaryOutputs, Element};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::body::{JSON, Matrix};
use crate::{Error, Response};

/// The content type of a v2 inference request, as the host passes it on.
pub const OIP_JSON: &str = "application/vnd.oip.v2+json";

/// The content type of the host's request for a model's metadata
/// ([`Model::metadata`](crate::Model::metadata)); clients cannot send it.
pub const METADATA: &str = "application/vnd.mme.metadata+json";

/// The name of the tensor that wraps a model's plain JSON answer.
pub const OUTPUT_NAME: &str = "output-0";

/// The inputs of a v2 request, their names and datatypes borrowed from
/// the body (no copy per call).
#[derive(Deserialize)]
struct InferRequest<'a> {
    #[serde(borrow)]
    inputs: Vec<Tensor<'a>>,
}

#[derive(Deserialize)]
struct Tensor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    shape: Vec<usize>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    parameters: TensorParameters,
}

#[derive(Deserialize, Default)]
struct TensorParameters {
    #[serde(default)]
    binary_data_size: Option<usize>,
}

const NUMERIC: [&str; 11] = [
    "FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
    "UINT64",
];

fn not_v2(e: serde_json::Error) -> Error {
    Error::invalid_input(format!(
        "not an Open Inference Protocol request ({{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}}): {e}"
    ))
}

/// The JSON header of a v2 request and the bytes of its binary tensors
/// after it: `header_length` of a framed request (`None` for JSON alone).
/// The header is checked as UTF-8 once, here, so that reading it as text
/// does not check each of its strings again.
fn split(body: &[u8], header_length: Option<usize>) -> Result<(&str, &[u8]), Error> {
    let (header, binary) = match header_length {
        None => (body, &[][..]),
        Some(length) => body.split_at_checked(length).ok_or_else(|| {
            Error::invalid_input(format!(
                "the request's JSON header is {length} bytes long but the body has only {}",
                body.len()
            ))
        })?,
    };
    let header = std::str::from_utf8(header).map_err(|e| {
        Error::invalid_input(format!(
            "not an Open Inference Protocol request: its JSON is not UTF-8 ({e})"
        ))
    })?;
    Ok((header, binary))
}

/// The request's first input tensor as a matrix: shape `[rows, cols]`, or
/// `[n]` for `n` rows of one feature. Data may be flat or nested JSON, or
/// binary data after a JSON header of `header_length` bytes.
pub(crate) fn matrix(body: &[u8], header_length: Option<usize>) -> Result<Matrix, Error> {
    let (header, binary) = split(body, header_length)?;
    let request: InferRequest = serde_json::from_str(header).map_err(not_v2)?;
    let tensor = request
        .inputs
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid_input("the request has no input tensor"))?;
    if !NUMERIC.contains(&tensor.datatype.as_ref()) {
        return Err(Error::invalid_input(format!(
            "input {:?} has datatype {}; this model takes numbers (FP32, FP64, INT…)",
            tensor.name, tensor.datatype
        )));
    }
    let (rows, cols) = match tensor.shape.as_slice() {
        [n] => (*n, 1),
        [rows, cols] => (*rows, *cols),
        other => {
            return Err(Error::invalid_input(format!(
                "input {:?} has shape {other:?}; this model takes [rows, features] or [rows]",
                tensor.name
            )));
        }
    };
    let mut data = Vec::new();
    match (tensor.parameters.binary_data_size, &tensor.data) {
        // The first input's bytes come first.
        (Some(size), _) => {
            let bytes = binary.get(..size).ok_or_else(|| {
                Error::invalid_input(format!(
                    "input {:?} has binary_data_size {size} but {} bytes follow the header",
                    tensor.name,
                    binary.len()
                ))
            })?;
            data.extend(
                mme_oip::elements(&tensor.datatype, bytes)
                    .map_err(Error::invalid_input)?
                    .map(Element::as_f64),
            );
        }
        (None, Some(values)) => flatten(values, &mut data)?,
        (None, None) => {
            return Err(Error::invalid_input(format!(
                "input {:?} has neither data nor binary_data_size",
                tensor.name
            )));
        }
    }
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(Error::invalid_input(format!(
            "input {:?} has shape [{rows}, {cols}] but {} values",
            tensor.name,
            data.len()
        )));
    }
    Ok(Matrix { rows, cols, data })
}

fn flatten(value: &Value, out: &mut Vec<f64>) -> Result<(), Error> {
    match value {
        Value::Number(n) => out.push(
            n.as_f64()
                .ok_or_else(|| Error::invalid_input("a number out of range"))?,
        ),
        Value::Bool(b) => out.push(f64::from(u8::from(*b))),
        Value::Array(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        other => {
            return Err(Error::invalid_input(format!(
                "tensor data must be numbers, not {other}"
            )));
        }
    }
    Ok(())
}

/// What the answer to a v2 request must carry from the request: its `id`,
/// and whether its client wants the output as binary data.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Reply {
    id: Option<String>,
    binary: bool,
}

/// The parts of a v2 request's JSON header that its answer needs; serde
/// skips the inputs without decoding them.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: BinaryFlags,
    #[serde(default, borrow)]
    outputs: Vec<RequestedOutput<'a>>,
}

#[derive(Deserialize)]
struct RequestedOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: BinaryFlags,
}

/// Triton's binary output choices: `binary_data_output` on the request
/// (every output), `binary_data` on a requested output (that one).
#[derive(Deserialize, Default)]
struct BinaryFlags {
    #[serde(default)]
    binary_data_output: Option<bool>,
    #[serde(default)]
    binary_data: Option<bool>,
}

impl Reply {
    /// Read from a v2 request's header: the whole body, or its first
    /// `header_length` bytes. A header that cannot be read asks for nothing
    /// (the model's own reading of the request says what is wrong with it;
    /// the host has refused unreadable binary choices already).
    pub(crate) fn of(body: &[u8], header_length: Option<usize>) -> Reply {
        let Ok((header, _)) = split(body, header_length) else {
            return Reply::default();
        };
        let Ok(envelope) = serde_json::from_str::<Envelope>(header) else {
            return Reply::default();
        };
        // A choice for the output by name wins over the one for all.
        let named = envelope
            .outputs
            .iter()
            .find(|output| output.name == OUTPUT_NAME)
            .and_then(|output| output.parameters.binary_data);
        Reply {
            id: envelope.id,
            binary: named
                .or(envelope.parameters.binary_data_output)
                .unwrap_or(false),
        }
    }
}

/// Whether an answer has `outputs`, read without building any of it.
#[derive(Deserialize)]
struct Outputs {
    #[serde(default)]
    outputs: Option<serde::de::IgnoredAny>,
}

/// The answer for a model whose JSON answer is a flat list of numbers (the
/// common case, such as one prediction per row), as JSON or framed binary.
///
/// The header has one shape, so it is written in a few appends of its
/// fixed parts: serde's writer appends each key, quote, colon and comma on
/// its own, which in wasm cost as much as reading the request's header.
fn wrap_flat(reply: &Reply, values: &[f64], attributes: String) -> Result<Response, Error> {
    let encode =
        |e: serde_json::Error| Error::internal(format!("cannot encode the v2 response: {e}"));
    let mut numbers = itoa::Buffer::new();
    // One allocation for the header and, after it, the values' bytes.
    let mut body = Vec::with_capacity(128 + std::mem::size_of_val(values));
    body.push(b'{');
    if let Some(id) = &reply.id {
        body.extend_from_slice(b"\"id\":");
        serde_json::to_writer(&mut body, id).map_err(encode)?;
        body.push(b',');
    }
    body.extend_from_slice(b"\"outputs\":[{\"name\":");
    serde_json::to_writer(&mut body, OUTPUT_NAME).map_err(encode)?;
    body.extend_from_slice(b",\"shape\":[");
    body.extend_from_slice(numbers.format(values.len()).as_bytes());
    body.extend_from_slice(b"],\"datatype\":\"FP64\",");
    if reply.binary {
        body.extend_from_slice(b"\"parameters\":{\"binary_data_size\":");
        body.extend_from_slice(numbers.format(std::mem::size_of_val(values)).as_bytes());
        body.extend_from_slice(b"}}]}");
        let header_length = body.len();
        for value in values {
            body.extend_from_slice(&value.to_le_bytes());
        }
        return Ok(Response {
            content_type: mme_oip::framed_content_type(header_length),
            body,
            attributes,
        });
    }
    body.extend_from_slice(b"\"data\":");
    serde_json::to_writer(&mut body, values).map_err(encode)?;
    body.extend_from_slice(b"}]}");
    Ok(Response {
        content_type: JSON.to_string(),
        body,
        attributes,
    })
}

/// Wraps a model's plain JSON answer to a v2 request as the protocol's
/// response: one output tensor, with the request's `id`, as binary data
/// after a JSON header where the client asked for it. An answer that is
/// already a v2 response (it has `outputs`, or the model framed it with
/// binary data itself) is left as it is.
pub(crate) fn wrap(reply: Reply, response: Response) -> Result<Response, Error> {
    if mme_oip::framed_header_length(&response.content_type).is_some() {
        return Ok(response);
    }
    // Looked at by its first byte, so that no answer pays for a failed
    // parse (serde formats the error's message).
    match response.body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            if let Ok(values) = serde_json::from_slice::<Vec<f64>>(&response.body) {
                return wrap_flat(&reply, &values, response.attributes);
            }
        }
        Some(b'{') => {
            if let Ok(Outputs { outputs: Some(_) }) = serde_json::from_slice(&response.body) {
                return Ok(response);
            }
        }
        _ => {}
    }
    let value: Value = match serde_json::from_slice(&response.body) {
        Ok(value) => value,
        // Not JSON: the model chose its own format; pass it on.
        Err(_) => return Ok(response),
    };
    if value.get("outputs").is_some() {
        return Ok(response);
    }
    let mut shape = Vec::new();
    let mut data = Vec::new();
    tensor_of(&value, 0, &mut shape, &mut data)?;
    let datatype = if data.iter().all(Value::is_number) {
        "FP64"
    } else if data.iter().all(Value::is_boolean) {
        "BOOL"
    } else {
        "BYTES"
    };
    let mut body = Map::new();
    if let Some(id) = reply.id {
        body.insert("id".into(), Value::String(id));
    }
    body.insert(
        "outputs".into(),
        json!([{ "name": OUTPUT_NAME, "shape": shape, "datatype": datatype, "data": data }]),
    );
    let wanted = if reply.binary {
        BinaryOutputs::all()
    } else {
        BinaryOutputs::default()
    };
    let tail = mme_oip::encode_response(&mut body, &wanted)
        .map_err(|e| Error::internal(format!("cannot write the answer as binary data: {e}")))?;
    let mut bytes = serde_json::to_vec(&body)
        .map_err(|e| Error::internal(format!("cannot encode the v2 response: {e}")))?;
    let content_type = match tail {
        Some(tail) => {
            let header_length = bytes.len();
            bytes.extend_from_slice(&tail);
            mme_oip::framed_content_type(header_length)
        }
        None => JSON.to_string(),
    };
    Ok(Response {
        content_type,
        body: bytes,
        attributes: response.attributes,
    })
}

/// Flattens `value` into `data`, recording the length at each depth in
/// `shape`; ragged arrays are refused.
fn tensor_of(
    value: &Value,
    depth: usize,
    shape: &mut Vec<usize>,
    data: &mut Vec<Value>,
) -> Result<(), Error> {
    match value {
        Value::Array(items) => {
            match shape.get(depth) {
                None => shape.push(items.len()),
                Some(&len) if len != items.len() => {
                    return Err(Error::internal(
                        "the model's answer is a ragged array; it cannot be a tensor",
                    ));
                }
                Some(_) => {}
            }
            items
                .iter()
                .try_for_each(|item| tensor_of(item, depth + 1, shape, data))
        }
        Value::String(text) => {
            data.push(Value::String(text.clone()));
            Ok(())
        }
        scalar => {
            if depth == 0 {
                shape.push(1);
            }
            data.push(scalar.clone());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
