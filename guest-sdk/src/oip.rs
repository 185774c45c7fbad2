//! The Open Inference Protocol (KServe v2) in JSON: the host hands a v2
//! request to the model as it came, and the SDK decodes its input tensor
//! and wraps the model's answer in an output tensor, so that a model that
//! reads [`Request::matrix`](crate::Request::matrix) and answers with
//! [`Response::json`](crate::Response::json) speaks v2 with no code of its own.

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

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<Tensor>,
}

#[derive(Deserialize)]
struct Tensor {
    name: String,
    shape: Vec<usize>,
    datatype: String,
    data: Value,
}

const NUMERIC: [&str; 11] = [
    "FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
    "UINT64",
];

fn parse(body: &[u8]) -> Result<InferRequest, Error> {
    serde_json::from_slice(body).map_err(|e| {
        Error::invalid_input(format!(
            "not an Open Inference Protocol request ({{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}}): {e}"
        ))
    })
}

/// The request's first input tensor as a matrix: shape `[rows, cols]`, or
/// `[n]` for `n` rows of one feature. Data may be flat or nested.
pub(crate) fn matrix(body: &[u8]) -> Result<Matrix, Error> {
    let request = parse(body)?;
    let tensor = request
        .inputs
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid_input("the request has no input tensor"))?;
    if !NUMERIC.contains(&tensor.datatype.as_str()) {
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
    flatten(&tensor.data, &mut data)?;
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

/// Wraps a model's plain JSON answer to a v2 request as the protocol's
/// response: one output tensor, with the request's `id`. An answer that is
/// already a v2 response (it has `outputs`) is left as it is.
pub(crate) fn wrap(request_body: &[u8], response: Response) -> Result<Response, Error> {
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
    if let Ok(request) = parse(request_body)
        && let Some(id) = request.id
    {
        body.insert("id".into(), Value::String(id));
    }
    body.insert(
        "outputs".into(),
        json!([{ "name": OUTPUT_NAME, "shape": shape, "datatype": datatype, "data": data }]),
    );
    Ok(Response {
        content_type: JSON.to_string(),
        body: serde_json::to_vec(&body)
            .map_err(|e| Error::internal(format!("cannot encode the v2 response: {e}")))?,
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
mod tests {
    use super::*;

    const REQUEST: &str =
        r#"{"id":"r1","inputs":[{"name":"x","shape":[2,1],"datatype":"FP64","data":[0.5,2.0]}]}"#;

    #[test]
    fn an_input_tensor_becomes_a_matrix_flat_or_nested() {
        let m = matrix(REQUEST.as_bytes()).unwrap();
        assert_eq!((m.rows, m.cols, m.data), (2, 1, vec![0.5, 2.0]));
        let nested =
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        assert_eq!(
            matrix(nested.as_bytes()).unwrap().data,
            vec![1.0, 2.0, 3.0, 4.0]
        );
        let vector = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[1,2,3]}]}"#;
        let m = matrix(vector.as_bytes()).unwrap();
        assert_eq!((m.rows, m.cols), (3, 1));
    }

    #[test]
    fn bad_tensors_are_invalid_input_that_says_why() {
        for (body, words) in [
            ("{}", "inputs"),
            (r#"{"inputs":[]}"#, "no input tensor"),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a","b"]}]}"#,
                "BYTES",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[3,1],"datatype":"FP64","data":[1,2]}]}"#,
                "2 values",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,1,1],"datatype":"FP64","data":[1]}]}"#,
                "shape",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[{"a":1}]}]}"#,
                "numbers",
            ),
        ] {
            match matrix(body.as_bytes()) {
                Err(Error::InvalidInput(message)) => {
                    assert!(message.contains(words), "{body}: {message}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_plain_answer_is_wrapped_in_one_output_tensor_with_the_id() {
        let answer = Response::json(&[2.0, 5.0]).unwrap();
        let wrapped = wrap(REQUEST.as_bytes(), answer).unwrap();
        let value: Value = serde_json::from_slice(&wrapped.body).unwrap();
        assert_eq!(
            value,
            json!({"id": "r1", "outputs": [{"name": "output-0", "shape": [2], "datatype": "FP64", "data": [2.0, 5.0]}]})
        );
        let nested = wrap(b"{}", Response::json(&[[1, 2], [3, 4]]).unwrap()).unwrap();
        let value: Value = serde_json::from_slice(&nested.body).unwrap();
        assert_eq!(value["outputs"][0]["shape"], json!([2, 2]));
        assert!(value.get("id").is_none());
        let labels = wrap(b"{}", Response::json(&["cat"]).unwrap()).unwrap();
        let value: Value = serde_json::from_slice(&labels.body).unwrap();
        assert_eq!(value["outputs"][0]["datatype"], "BYTES");
    }

    #[test]
    fn an_answer_that_is_already_v2_or_not_json_is_left_alone() {
        let own = Response::json(&json!({"outputs": []})).unwrap();
        assert_eq!(wrap(REQUEST.as_bytes(), own.clone()).unwrap(), own);
        let ragged = Response::json(&json!([[1], [2, 3]])).unwrap();
        assert!(wrap(b"{}", ragged).is_err());
    }
}
