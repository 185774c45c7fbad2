//! Decoded requests to input tensors, and output tensors to answers.

use serde_json::{Map, Value, json};
use tract_onnx::prelude::*;

use super::graph::Port;
use crate::decode::{Data, Element, Sent, Wanted};

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

/// What `port` takes, as the decoder sees it; `None` for an element type
/// that requests cannot fill.
pub fn wanted(port: &Port) -> Result<Wanted<'_>, String> {
    let datum = port.datum;
    let element = if datum == f32::datum_type() {
        Element::F32
    } else if datum == f64::datum_type() {
        Element::F64
    } else if datum == bool::datum_type() {
        Element::Bool
    } else if datum == String::datum_type() {
        Element::String
    } else if datum.is_integer() {
        Element::Int
    } else {
        return Err(format!(
            "input {:?} has element type {datum:?}, which requests cannot fill yet",
            port.name
        ));
    };
    Ok(Wanted {
        name: &port.name,
        element,
        shape: &port.shape,
    })
}

/// The tensor of `sent` for `port`.
pub fn tensor_for(sent: Sent, port: &Port) -> Result<TValue, String> {
    let typed = sent.fit(&wanted(port)?)?;
    let tensor = match typed.data {
        Data::F32(v) => tensor1(&v),
        Data::F64(v) => tensor1(&v),
        Data::Bool(v) => tensor1(&v),
        Data::String(v) => tensor1(&v),
        Data::Int(v) => tensor1(&v)
            .cast_to_dt(port.datum)
            .map_err(|e| format!("input {:?}: {e}", port.name))?
            .into_owned(),
    };
    tensor
        .into_shape(&typed.shape)
        .map(IntoTValue::into_tvalue)
        .map_err(|e| format!("input {:?}: {e}", port.name))
}

#[cfg(test)]
mod tests {
    use super::*;

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
