//! Request bodies to input tensors, and output tensors to answers.
//!
//! The plain routes take one JSON array (any depth: a matrix for a table,
//! deeper for images) or CSV rows, for a graph with one input. The Open
//! Inference Protocol takes a named tensor per input. Values are converted
//! to the input's element type; an integer input refuses fractions.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tract_onnx::prelude::*;

use crate::graph::Port;

/// A tensor as it arrived: its shape and its values, flat.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub shape: Vec<usize>,
    pub values: Vec<Value>,
}

/// The largest number of values one request may send; the instance's
/// memory cap bounds it anyway, this gives a clear message first.
const MAX_VALUES: usize = 1 << 26;

impl Sent {
    /// A nested JSON array: its nesting is its shape; ragged arrays are refused.
    pub fn from_json(value: &Value) -> Result<Sent, String> {
        let mut shape = Vec::new();
        let mut values = Vec::new();
        nest(value, 0, &mut shape, &mut values)?;
        Ok(Sent { shape, values })
    }

    /// CSV rows (no header), one example per line.
    pub fn from_csv(body: &[u8]) -> Result<Sent, String> {
        let text =
            std::str::from_utf8(body).map_err(|_| "the CSV body is not UTF-8".to_string())?;
        let mut values = Vec::new();
        let mut rows = 0;
        let mut columns = None;
        for (line_number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut count = 0;
            for field in line.split(',') {
                let field = field.trim();
                let number: f64 = field.parse().map_err(|_| {
                    format!("CSV line {}: {field:?} is not a number", line_number + 1)
                })?;
                values.push(json!(number));
                count += 1;
            }
            match columns {
                None => columns = Some(count),
                Some(c) if c != count => {
                    return Err(format!(
                        "CSV line {} has {count} values but the first line has {c}",
                        line_number + 1
                    ));
                }
                Some(_) => {}
            }
            rows += 1;
        }
        Ok(Sent {
            shape: vec![rows, columns.unwrap_or(0)],
            values,
        })
    }

    /// The tensor for `port`: same rank (one row may leave out the batch
    /// axis), every fixed dimension matching, values of the port's type.
    pub fn into_tensor(mut self, port: &Port) -> Result<TValue, String> {
        if self.shape.len() + 1 == port.shape.len() {
            self.shape.insert(0, 1);
        }
        if self.shape.len() != port.shape.len() {
            return Err(format!(
                "input {:?} takes {} dimensions ({}), but {} were sent",
                port.name,
                port.shape.len(),
                describe_shape(&port.shape),
                self.shape.len()
            ));
        }
        for (axis, (sent, wanted)) in self.shape.iter().zip(&port.shape).enumerate() {
            if let Some(wanted) = wanted
                && wanted != sent
            {
                return Err(format!(
                    "input {:?} has shape {}; axis {axis} was sent with {sent} values instead of {wanted}",
                    port.name,
                    describe_shape(&port.shape)
                ));
            }
        }
        typed(&port.name, port.datum, &self.shape, &self.values).map(IntoTValue::into_tvalue)
    }
}

fn describe_shape(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "any".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

fn nest(
    value: &Value,
    depth: usize,
    shape: &mut Vec<usize>,
    values: &mut Vec<Value>,
) -> Result<(), String> {
    match value {
        Value::Array(items) => {
            match shape.get(depth) {
                None if depth == shape.len() && values.is_empty() => shape.push(items.len()),
                Some(&len) if len == items.len() => {}
                _ => return Err("the array is ragged: every row needs the same length".into()),
            }
            items
                .iter()
                .try_for_each(|item| nest(item, depth + 1, shape, values))
        }
        scalar => {
            if depth != shape.len() {
                return Err("the array is ragged: every row needs the same length".into());
            }
            if values.len() >= MAX_VALUES {
                return Err(format!("more than {MAX_VALUES} values in one request"));
            }
            values.push(scalar.clone());
            Ok(())
        }
    }
}

/// `values` as a tensor of `datum` with `shape`.
fn typed(
    name: &str,
    datum: DatumType,
    shape: &[usize],
    values: &[Value],
) -> Result<Tensor, String> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(values.len()) {
        return Err(format!(
            "input {name:?} has shape {shape:?} but {} values were sent",
            values.len()
        ));
    }
    let number = |v: &Value| -> Result<f64, String> {
        match v {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| format!("input {name:?}: {n} is out of range")),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            other => Err(format!("input {name:?} takes numbers, not {other}")),
        }
    };
    let integer = |v: &Value| -> Result<i64, String> {
        let x = number(v)?;
        if x.fract() != 0.0 || x.abs() > 9.0e15 {
            return Err(format!("input {name:?} takes integers, not {x}"));
        }
        Ok(x as i64)
    };
    let tensor = if datum == f32::datum_type() {
        tensor1(
            &values
                .iter()
                .map(|v| number(v).map(|x| x as f32))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else if datum == f64::datum_type() {
        tensor1(&values.iter().map(number).collect::<Result<Vec<_>, _>>()?)
    } else if datum == i64::datum_type() {
        tensor1(&values.iter().map(integer).collect::<Result<Vec<_>, _>>()?)
    } else if datum == bool::datum_type() {
        tensor1(
            &values
                .iter()
                .map(|v| number(v).map(|x| x != 0.0))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else if datum == String::datum_type() {
        let strings = values
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("input {name:?} takes strings, not {other}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        tensor1(&strings)
    } else if datum.is_integer() {
        let ints = values.iter().map(integer).collect::<Result<Vec<_>, _>>()?;
        tensor1(&ints)
            .cast_to_dt(datum)
            .map_err(|e| format!("input {name:?}: {e}"))?
            .into_owned()
    } else {
        return Err(format!(
            "input {name:?} has element type {datum:?}, which requests cannot fill yet"
        ));
    };
    tensor
        .into_shape(shape)
        .map_err(|e| format!("input {name:?}: {e}"))
}

/// An Open Inference Protocol request, as far as the engine reads it.
#[derive(Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<InferTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One input tensor of a v2 request.
#[derive(Deserialize)]
pub struct InferTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Value,
}

/// An output that a v2 request asks for by name.
#[derive(Deserialize)]
pub struct RequestedOutput {
    pub name: String,
}

impl InferTensor {
    /// The tensor's values, checked against its declared shape and datatype.
    pub fn sent(&self) -> Result<Sent, String> {
        let shape = self
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| format!("input {:?} has a negative dimension {d}", self.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut values = Vec::new();
        flatten(&self.data, &mut values)?;
        let strings = values.iter().all(Value::is_string);
        match self.datatype.as_str() {
            "BYTES" if !strings => {
                return Err(format!(
                    "input {:?} is BYTES but holds non-strings",
                    self.name
                ));
            }
            "BYTES" => {}
            "BOOL" | "FP16" | "FP32" | "FP64" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT8"
            | "UINT16" | "UINT32" | "UINT64" => {
                if values.iter().any(|v| !v.is_number() && !v.is_boolean()) {
                    return Err(format!(
                        "input {:?} is {} but holds non-numbers",
                        self.name, self.datatype
                    ));
                }
            }
            other => {
                return Err(format!(
                    "input {:?} has unknown datatype {other}",
                    self.name
                ));
            }
        }
        Ok(Sent { shape, values })
    }
}

fn flatten(value: &Value, out: &mut Vec<Value>) -> Result<(), String> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out)),
        Value::Object(_) | Value::Null => Err(format!(
            "tensor data must be numbers or strings, not {value}"
        )),
        scalar => {
            if out.len() >= MAX_VALUES {
                return Err(format!("more than {MAX_VALUES} values in one request"));
            }
            out.push(scalar.clone());
            Ok(())
        }
    }
}

/// The Open Inference Protocol name of an element type.
pub fn datatype(datum: DatumType) -> &'static str {
    match datum {
        DatumType::Bool => "BOOL",
        DatumType::U8 => "UINT8",
        DatumType::U16 => "UINT16",
        DatumType::U32 => "UINT32",
        DatumType::U64 => "UINT64",
        DatumType::I8 => "INT8",
        DatumType::I16 => "INT16",
        DatumType::I32 => "INT32",
        DatumType::I64 => "INT64",
        DatumType::F16 => "FP16",
        DatumType::F32 => "FP32",
        DatumType::F64 => "FP64",
        DatumType::String => "BYTES",
        _ => "BYTES",
    }
}

/// An output tensor's values, flat, as JSON. `f32` values print as their
/// shortest decimal (0.1, not 0.10000000149011612).
pub fn values(tensor: &Tensor) -> Result<Vec<Value>, String> {
    let plain = |e: TractError| format!("cannot read an output: {e}");
    let datum = tensor.datum_type();
    Ok(if datum == f32::datum_type() {
        let slice = tensor.try_as_plain_ram().map_err(plain)?;
        slice
            .as_slice::<f32>()
            .map_err(plain)?
            .iter()
            .map(|v| {
                v.to_string()
                    .parse::<f64>()
                    .map_or(Value::Null, |x| json!(x))
            })
            .collect()
    } else if datum == String::datum_type() {
        let slice = tensor.try_as_plain_ram().map_err(plain)?;
        slice
            .as_slice::<String>()
            .map_err(plain)?
            .iter()
            .map(|s| json!(s))
            .collect()
    } else if datum == bool::datum_type() {
        let slice = tensor.try_as_plain_ram().map_err(plain)?;
        slice
            .as_slice::<bool>()
            .map_err(plain)?
            .iter()
            .map(|b| json!(b))
            .collect()
    } else if datum.is_integer() {
        let ints = tensor.cast_to::<i64>().map_err(plain)?;
        let slice = ints.try_as_plain_ram().map_err(plain)?;
        slice
            .as_slice::<i64>()
            .map_err(plain)?
            .iter()
            .map(|i| json!(i))
            .collect()
    } else {
        let floats = tensor.cast_to::<f64>().map_err(plain)?;
        let slice = floats.try_as_plain_ram().map_err(plain)?;
        slice
            .as_slice::<f64>()
            .map_err(plain)?
            .iter()
            .map(|x| json!(x))
            .collect()
    })
}

/// Flat values as nested JSON lists of `shape`.
pub fn nested(shape: &[usize], values: &[Value]) -> Value {
    match shape {
        [] => values.first().cloned().unwrap_or(Value::Null),
        [_] => Value::Array(values.to_vec()),
        [_, rest @ ..] => {
            let stride = rest.iter().product::<usize>().max(1);
            Value::Array(
                values
                    .chunks(stride)
                    .map(|chunk| nested(rest, chunk))
                    .collect(),
            )
        }
    }
}

/// A ZipMap output on the plain routes: one `{label: probability}` object per row.
pub fn zipped(labels: &[Value], values: &[Value]) -> Value {
    let width = labels.len().max(1);
    Value::Array(
        values
            .chunks(width)
            .map(|row| {
                let mut object = Map::new();
                for (label, value) in labels.iter().zip(row) {
                    let key = match label {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    object.insert(key, value.clone());
                }
                Value::Object(object)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(datum: DatumType, shape: &[Option<usize>]) -> Port {
        Port {
            name: "x".into(),
            datum,
            shape: shape.to_vec(),
            zipmap: None,
        }
    }

    #[test]
    fn json_arrays_take_their_shape_from_their_nesting() {
        let sent = Sent::from_json(&json!([[1, 2], [3, 4], [5, 6]])).unwrap();
        assert_eq!(sent.shape, vec![3, 2]);
        let tensor = sent
            .into_tensor(&port(f32::datum_type(), &[None, Some(2)]))
            .unwrap();
        assert_eq!(tensor.shape(), &[3, 2]);
        assert_eq!(
            tensor
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        let one_row = Sent::from_json(&json!([1, 2])).unwrap();
        let tensor = one_row
            .into_tensor(&port(f64::datum_type(), &[None, Some(2)]))
            .unwrap();
        assert_eq!(tensor.shape(), &[1, 2]);
    }

    #[test]
    fn bad_bodies_are_refused_with_what_is_wrong() {
        for (body, words) in [
            (json!([[1, 2], [3]]), "ragged"),
            (json!([[1], 2]), "ragged"),
            (json!([[[1]]]), "dimensions"),
            (json!([[1, 2, 3]]), "axis 1"),
            (json!([["a", "b"]]), "numbers"),
        ] {
            let err = Sent::from_json(&body)
                .and_then(|s| s.into_tensor(&port(f32::datum_type(), &[None, Some(2)])))
                .unwrap_err();
            assert!(err.contains(words), "{body}: {err}");
        }
        let err = Sent::from_json(&json!([[1.5]]))
            .unwrap()
            .into_tensor(&port(i64::datum_type(), &[None, Some(1)]))
            .unwrap_err();
        assert!(err.contains("integers"), "{err}");
    }

    #[test]
    fn csv_rows_become_a_matrix() {
        let sent = Sent::from_csv(b"1,2\n3,4\n\n").unwrap();
        assert_eq!(sent.shape, vec![2, 2]);
        assert!(Sent::from_csv(b"1,2\n3\n").unwrap_err().contains("line 2"));
        assert!(
            Sent::from_csv(b"1,x\n")
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn v2_tensors_check_their_shape_against_their_data() {
        let tensor: InferTensor = serde_json::from_value(
            json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}),
        )
        .unwrap();
        let sent = tensor.sent().unwrap();
        assert_eq!(sent.shape, vec![2, 2]);
        let lying: InferTensor = serde_json::from_value(
            json!({"name": "x", "shape": [1000000, 1000000, 1000000], "datatype": "FP32", "data": [1]}),
        )
        .unwrap();
        let err = lying
            .sent()
            .unwrap()
            .into_tensor(&port(f32::datum_type(), &[None, None, None]))
            .unwrap_err();
        assert!(err.contains("1 values"), "{err}");
        let negative: InferTensor = serde_json::from_value(
            json!({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}),
        )
        .unwrap();
        assert!(negative.sent().unwrap_err().contains("negative"));
    }

    #[test]
    fn outputs_nest_by_shape_and_zip_by_label() {
        let values = vec![json!(1), json!(2), json!(3), json!(4)];
        assert_eq!(nested(&[2, 2], &values), json!([[1, 2], [3, 4]]));
        assert_eq!(nested(&[4], &values), json!([1, 2, 3, 4]));
        assert_eq!(
            zipped(&[json!(0), json!("b")], &values),
            json!([{"0": 1, "b": 2}, {"0": 3, "b": 4}])
        );
        let tensor = tensor1(&[0.1f32, 2.0]);
        assert_eq!(values_of(&tensor), vec![json!(0.1), json!(2.0)]);
    }

    fn values_of(tensor: &Tensor) -> Vec<Value> {
        values(tensor).unwrap()
    }
}
