//! Request bodies to typed values: no tract here, so that the fuzz target
//! builds only this.
//!
//! The plain routes take one JSON array (any depth: a matrix for a table,
//! deeper for images) or CSV rows, for a graph with one input. The Open
//! Inference Protocol takes a named tensor per input. Values are converted
//! to the input's element type; an integer input refuses fractions.

mod array;
mod numbers;

use serde::Deserialize;

pub use array::Scalar;
use array::Walk;

/// Why a JSON body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// It is not JSON at all.
    #[error("{0}")]
    Syntax(serde_json::Error),
    /// It is JSON, but not values in arrays of one shape.
    #[error("{0}")]
    Content(serde_json::Error),
}

impl From<serde_json::Error> for BodyError {
    fn from(error: serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Data => BodyError::Content(error),
            _ => BodyError::Syntax(error),
        }
    }
}

/// The kinds of element a request can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// 32-bit floats.
    F32,
    /// 64-bit floats.
    F64,
    /// Integers of any width (checked to be whole; narrowed by the engine).
    Int,
    /// Booleans (numbers: 0 is false).
    Bool,
    /// Strings (`BYTES` on v2).
    String,
}

/// What an input takes.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// Its name, for messages.
    pub name: &'a str,
    /// Its element type.
    pub element: Element,
    /// Its dimensions; `None` where any size goes.
    pub shape: &'a [Option<usize>],
}

/// Values of one type, flat.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// For [`Element::F32`].
    F32(Vec<f32>),
    /// For [`Element::F64`].
    F64(Vec<f64>),
    /// For [`Element::Int`].
    Int(Vec<i64>),
    /// For [`Element::Bool`].
    Bool(Vec<bool>),
    /// For [`Element::String`].
    String(Vec<String>),
}

impl Data {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::Int(v) => v.len(),
            Data::Bool(v) => v.len(),
            Data::String(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An input's values, checked: `shape` holds `data.len()` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Data,
}

/// A tensor as it arrived: its shape and its values, flat.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Values,
}

/// The values of a tensor as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Only numbers (the common body, and every CSV body): no [`Scalar`]
    /// per value, and a float input takes them in one pass.
    Numbers(Vec<f64>),
    /// Any mix of numbers, strings, booleans and nulls.
    Scalars(Vec<Scalar>),
    /// 32-bit floats as a binary tensor carries them: a float input takes
    /// them as they are.
    F32(Vec<f32>),
}

impl Values {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Values::Numbers(v) => v.len(),
            Values::Scalars(v) => v.len(),
            Values::F32(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The largest number of values one request may send; the instance's
/// memory cap bounds it anyway, this gives a clear message first.
const MAX_VALUES: usize = 1 << 26;

impl Sent {
    /// A body that holds one nested JSON array: its nesting is its shape;
    /// ragged arrays are refused.
    pub fn from_json(body: &[u8]) -> Result<Sent, BodyError> {
        if let Some((shape, numbers)) = numbers::numbers_only(body) {
            return Ok(Sent {
                shape,
                values: Values::Numbers(numbers),
            });
        }
        let mut json = serde_json::Deserializer::from_slice(body);
        let (shape, values) = Walk::shaped(&mut json).and_then(|read| {
            json.end()?;
            Ok(read)
        })?;
        Ok(Sent {
            shape,
            values: Values::Scalars(values),
        })
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
                values.push(number);
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
            values: Values::Numbers(values),
        })
    }

    /// The values for an input named `name` of `element`s with `shape`
    /// (`None` where any size goes): same rank (one row may leave out the
    /// batch axis), every fixed dimension matching, values of that type.
    pub fn fit(mut self, port: &Wanted<'_>) -> Result<Typed, String> {
        if self.shape.len() + 1 == port.shape.len() {
            self.shape.insert(0, 1);
        }
        if self.shape.len() != port.shape.len() {
            return Err(format!(
                "input {:?} takes {} dimensions ({}), but {} were sent",
                port.name,
                port.shape.len(),
                describe_shape(port.shape),
                self.shape.len()
            ));
        }
        for (axis, (sent, wanted)) in self.shape.iter().zip(port.shape).enumerate() {
            if let Some(wanted) = wanted
                && wanted != sent
            {
                return Err(format!(
                    "input {:?} has shape {}; axis {axis} was sent with {sent} values instead of {wanted}",
                    port.name,
                    describe_shape(port.shape)
                ));
            }
        }
        let data = typed(port.name, port.element, &self.shape, self.values)?;
        Ok(Typed {
            shape: self.shape,
            data,
        })
    }
}

fn describe_shape(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "any".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// `values` as `element`s, checked against `shape`.
fn typed(name: &str, element: Element, shape: &[usize], values: Values) -> Result<Data, String> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(values.len()) {
        return Err(format!(
            "input {name:?} has shape {shape:?} but {} values were sent",
            values.len()
        ));
    }
    let values = match (values, element) {
        (Values::F32(floats), Element::F32) => return Ok(Data::F32(floats)),
        (Values::F32(floats), Element::F64) => {
            return Ok(Data::F64(floats.into_iter().map(f64::from).collect()));
        }
        (Values::F32(floats), _) => floats
            .into_iter()
            .map(|x| Scalar::Number(f64::from(x)))
            .collect(),
        (Values::Numbers(numbers), Element::F64) => return Ok(Data::F64(numbers)),
        (Values::Numbers(numbers), Element::F32) => {
            return Ok(Data::F32(numbers.iter().map(|&x| x as f32).collect()));
        }
        (Values::Numbers(numbers), _) => numbers.into_iter().map(Scalar::Number).collect(),
        (Values::Scalars(values), _) => values,
    };
    let number = |v: &Scalar| -> Result<f64, String> {
        match v {
            Scalar::Number(x) => Ok(*x),
            Scalar::Bool(b) => Ok(f64::from(u8::from(*b))),
            other => Err(format!("input {name:?} takes numbers, not {other}")),
        }
    };
    // JSON has no NaN: a missing value (what an Imputer fills in) is null.
    let float = |v: &Scalar| -> Result<f64, String> {
        match v {
            Scalar::Null => Ok(f64::NAN),
            other => number(other),
        }
    };
    let integer = |v: &Scalar| -> Result<i64, String> {
        let x = number(v)?;
        if x.fract() != 0.0 || x.abs() > 9.0e15 {
            return Err(format!("input {name:?} takes integers, not {x}"));
        }
        Ok(x as i64)
    };
    Ok(match element {
        Element::F32 => Data::F32(
            values
                .iter()
                .map(|v| float(v).map(|x| x as f32))
                .collect::<Result<_, _>>()?,
        ),
        Element::F64 => Data::F64(values.iter().map(float).collect::<Result<_, _>>()?),
        Element::Int => Data::Int(values.iter().map(integer).collect::<Result<_, _>>()?),
        Element::Bool => Data::Bool(
            values
                .iter()
                .map(|v| number(v).map(|x| x != 0.0))
                .collect::<Result<_, _>>()?,
        ),
        Element::String => Data::String(
            values
                .iter()
                .map(|v| match v {
                    Scalar::Text(s) => Ok(s.clone()),
                    other => Err(format!("input {name:?} takes strings, not {other}")),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// An Open Inference Protocol request, as far as the engine reads it.
#[derive(Deserialize)]
pub struct InferRequest {
    /// The caller's request id, answered back.
    #[serde(default)]
    pub id: Option<String>,
    /// One tensor per graph input.
    pub inputs: Vec<InferTensor>,
    /// The outputs wanted; all of them when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    /// What the protocol's extensions say of the whole request.
    #[serde(default)]
    pub parameters: RequestParameters,
}

/// The parameters of a request that the engine reads; others are ignored.
#[derive(Deserialize, Default)]
pub struct RequestParameters {
    /// Every output as binary data, unless an output says otherwise
    /// (Triton's binary tensor extension).
    #[serde(default)]
    pub binary_data_output: Option<bool>,
}

/// One input tensor of a v2 request.
#[derive(Deserialize)]
pub struct InferTensor {
    /// The graph input it feeds.
    pub name: String,
    /// Its dimensions, as sent (checked to be non-negative).
    pub shape: Vec<i64>,
    /// Its v2 datatype (`FP32`, `INT64`, `BYTES`, …).
    pub datatype: String,
    /// Its values, flat or nested (the shape says how they group), as
    /// JSON text: [`InferTensor::sent`] reads numbers alone in one pass.
    /// Absent when they follow the JSON as binary data.
    #[serde(default)]
    pub data: Option<Box<serde_json::value::RawValue>>,
    /// What the protocol's extensions say of it.
    #[serde(default)]
    pub parameters: TensorParameters,
}

/// The parameters of an input tensor that the engine reads; others are ignored.
#[derive(Deserialize, Default)]
pub struct TensorParameters {
    /// How many bytes of binary data after the JSON are this tensor's
    /// (Triton's binary tensor extension).
    #[serde(default)]
    pub binary_data_size: Option<u64>,
}

/// An output that a v2 request asks for by name.
#[derive(Deserialize)]
pub struct RequestedOutput {
    /// The output's graph name.
    pub name: String,
    /// What the protocol's extensions say of it.
    #[serde(default)]
    pub parameters: OutputParameters,
}

/// The parameters of a requested output that the engine reads.
#[derive(Deserialize, Default)]
pub struct OutputParameters {
    /// Whether it is wanted as binary data.
    #[serde(default)]
    pub binary_data: Option<bool>,
}

impl InferRequest {
    /// Whether the client wants output `name` as binary data: as the
    /// output says if it is named with `binary_data`, else as
    /// `binary_data_output` says for all.
    pub fn wants_binary(&self, name: &str) -> bool {
        self.outputs
            .iter()
            .flatten()
            .find(|output| output.name == name)
            .and_then(|output| output.parameters.binary_data)
            .or(self.parameters.binary_data_output)
            .unwrap_or(false)
    }

    /// The name of an input sent twice, if one was: which of the two to
    /// feed is the caller's mistake to fix, not the engine's to guess.
    pub fn duplicate_input(&self) -> Option<&str> {
        self.inputs.iter().enumerate().find_map(|(at, tensor)| {
            self.inputs[..at]
                .iter()
                .any(|earlier| earlier.name == tensor.name)
                .then_some(tensor.name.as_str())
        })
    }
}

impl InferTensor {
    /// Its dimensions, checked to be sizes.
    fn dimensions(&self) -> Result<Vec<usize>, String> {
        self.shape
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| format!("input {:?} has a negative dimension {d}", self.name))
            })
            .collect()
    }

    /// The tensor's values from its binary data (little-endian, row-major;
    /// `BOOL` one byte; `BYTES` a 4-byte length before each element),
    /// checked against its declared shape and datatype.
    pub fn sent_binary(&self, bytes: &[u8]) -> Result<Sent, String> {
        let shape = self.dimensions()?;
        let in_input = |reason: String| format!("input {:?}: {reason}", self.name);
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| in_input("its shape holds too many values".into()))?;
        let datatype = self.datatype.as_str();
        let Some(size) = mme_oip::element_size(datatype).map_err(in_input)? else {
            let texts = mme_oip::strings(bytes, count).map_err(in_input)?;
            let values = texts
                .into_iter()
                .map(|text| Scalar::Text(text.to_string()))
                .collect();
            return Ok(Sent {
                shape,
                values: Values::Scalars(values),
            });
        };
        if count.checked_mul(size) != Some(bytes.len()) {
            return Err(in_input(format!(
                "its binary data is {} bytes, but {count} {datatype} elements (its shape) take {}",
                bytes.len(),
                count.saturating_mul(size)
            )));
        }
        let values = match datatype {
            // The common case, read as it lies: the generic reader of
            // elements made the MLP at batch 64 about 40% slower per prediction.
            "FP32" => Values::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            // What the graph's float inputs take: no f64 vector on the way.
            "FP16" | "BF16" => Values::F32(
                mme_oip::elements(datatype, bytes)
                    .map_err(in_input)?
                    .map(|e| e.as_f64() as f32)
                    .collect(),
            ),
            _ => Values::Numbers(
                mme_oip::elements(datatype, bytes)
                    .map_err(in_input)?
                    .map(mme_oip::Element::as_f64)
                    .collect(),
            ),
        };
        Ok(Sent { shape, values })
    }

    /// The tensor's values, checked against its declared shape and datatype.
    pub fn sent(&self) -> Result<Sent, String> {
        let shape = self.dimensions()?;
        let raw = self
            .data
            .as_ref()
            .ok_or_else(|| {
                format!(
                    "input {:?} has no data; send \"data\", or binary data with the binary_data_size parameter",
                    self.name
                )
            })?
            .get();
        let values = match numbers::numbers_only(raw.as_bytes()) {
            Some((_, numbers)) => Values::Numbers(numbers),
            None => Values::Scalars(
                Walk::flat(&mut serde_json::Deserializer::from_str(raw))
                    .map_err(|e| format!("input {:?}: {e}", self.name))?,
            ),
        };
        let text = |v: &Scalar| matches!(v, Scalar::Text(_));
        let (all_strings, any_string) = match &values {
            // Never empty: an empty array is left to the general walk.
            Values::Numbers(_) | Values::F32(_) => (false, false),
            Values::Scalars(v) => (v.iter().all(text), v.iter().any(text)),
        };
        match self.datatype.as_str() {
            "BYTES" if !all_strings => {
                return Err(format!(
                    "input {:?} is BYTES but holds non-strings",
                    self.name
                ));
            }
            "BYTES" => {}
            _ => {
                self.check_datatype()?;
                if any_string {
                    return Err(format!(
                        "input {:?} is {} but holds non-numbers",
                        self.name, self.datatype
                    ));
                }
            }
        }
        Ok(Sent { shape, values })
    }

    /// Refuses a datatype that is neither numeric nor `BYTES`.
    fn check_datatype(&self) -> Result<(), String> {
        match self.datatype.as_str() {
            "BOOL" | "FP16" | "FP32" | "FP64" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT8"
            | "UINT16" | "UINT32" | "UINT64" => Ok(()),
            other => Err(format!(
                "input {:?} has unknown datatype {other}",
                self.name
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn from_json(value: &Value) -> Result<Sent, String> {
        Sent::from_json(value.to_string().as_bytes()).map_err(|e| e.to_string())
    }

    fn wanted<'a>(element: Element, shape: &'a [Option<usize>]) -> Wanted<'a> {
        Wanted {
            name: "x",
            element,
            shape,
        }
    }

    #[test]
    fn json_arrays_take_their_shape_from_their_nesting() {
        let sent = from_json(&json!([[1, 2], [3, 4], [5, 6]])).unwrap();
        assert_eq!(sent.shape, vec![3, 2]);
        let tensor = sent.fit(&wanted(Element::F32, &[None, Some(2)])).unwrap();
        assert_eq!(tensor.shape, vec![3, 2]);
        assert_eq!(tensor.data, Data::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let one_row = from_json(&json!([1, 2])).unwrap();
        let tensor = one_row
            .fit(&wanted(Element::F64, &[None, Some(2)]))
            .unwrap();
        assert_eq!(tensor.shape, vec![1, 2]);
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
            let err = from_json(&body)
                .and_then(|s| s.fit(&wanted(Element::F32, &[None, Some(2)])))
                .unwrap_err();
            assert!(err.contains(words), "{body}: {err}");
        }
        let err = from_json(&json!([[1.5]]))
            .unwrap()
            .fit(&wanted(Element::Int, &[None, Some(1)]))
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

    /// A v2 tensor, read as a request body is read (its data kept as text).
    fn v2(tensor: Value) -> InferTensor {
        serde_json::from_str(&tensor.to_string()).unwrap()
    }

    #[test]
    fn v2_tensors_check_their_shape_against_their_data() {
        let tensor =
            v2(json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}));
        let sent = tensor.sent().unwrap();
        assert_eq!(sent.shape, vec![2, 2]);
        assert_eq!(sent.values, Values::Numbers(vec![1.0, 2.0, 3.0, 4.0]));
        let lying = v2(
            json!({"name": "x", "shape": [1000000, 1000000, 1000000], "datatype": "FP32", "data": [1]}),
        );
        let err = lying
            .sent()
            .unwrap()
            .fit(&wanted(Element::F32, &[None, None, None]))
            .unwrap_err();
        assert!(err.contains("1 values"), "{err}");
        let negative = v2(json!({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}));
        assert!(negative.sent().unwrap_err().contains("negative"));
    }

    #[test]
    fn v2_data_of_any_nesting_is_read_flat_and_checked_against_its_datatype() {
        let sent = |datatype: &str, data: Value| {
            v2(json!({"name": "x", "shape": [3], "datatype": datatype, "data": data})).sent()
        };
        // Nesting only groups: a ragged grouping is still three values.
        let ragged = sent("FP32", json!([[1], [2, 3]])).unwrap();
        assert_eq!(ragged.values.len(), 3);
        let labels = sent("BYTES", json!(["a", "b", "c"])).unwrap();
        assert_eq!(labels.values.len(), 3);
        for (datatype, data, words) in [
            ("BYTES", json!([1, 2, 3]), "non-strings"),
            ("FP32", json!([1, "b", 3]), "non-numbers"),
            ("FP8", json!([1, 2, 3]), "unknown datatype FP8"),
            ("FP8", json!([1, null, 3]), "unknown datatype FP8"),
            ("FP32", json!([1, {"a": 2}, 3]), "not an object"),
        ] {
            let err = sent(datatype, data.clone()).unwrap_err();
            assert!(err.contains(words), "{datatype} {data}: {err}");
        }
    }

    #[test]
    fn binary_tensors_of_every_datatype_are_read_little_endian() {
        let tensor = |datatype: &str, shape: Value| {
            v2(json!({"name": "x", "shape": shape, "datatype": datatype,
                      "parameters": {"binary_data_size": 0}}))
        };
        let floats: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let sent = tensor("FP32", json!([1, 2])).sent_binary(&floats).unwrap();
        assert_eq!(sent.values, Values::F32(vec![1.5, -2.0]));
        let f32_input = sent
            .clone()
            .fit(&wanted(Element::F32, &[None, Some(2)]))
            .unwrap();
        assert_eq!(f32_input.data, Data::F32(vec![1.5, -2.0]));
        let f64_input = sent.fit(&wanted(Element::F64, &[None, Some(2)])).unwrap();
        assert_eq!(f64_input.data, Data::F64(vec![1.5, -2.0]));
        for (datatype, bytes, expected) in [
            ("INT8", vec![0xff], -1.0),
            ("UINT8", vec![0xff], 255.0),
            ("INT16", (-300i16).to_le_bytes().to_vec(), -300.0),
            ("UINT16", 60000u16.to_le_bytes().to_vec(), 60000.0),
            ("INT32", (-70000i32).to_le_bytes().to_vec(), -70000.0),
            ("UINT32", 4_000_000_000u32.to_le_bytes().to_vec(), 4.0e9),
            ("INT64", (-5i64).to_le_bytes().to_vec(), -5.0),
            ("UINT64", 7u64.to_le_bytes().to_vec(), 7.0),
            ("FP64", 0.25f64.to_le_bytes().to_vec(), 0.25),
            ("BOOL", vec![1], 1.0),
        ] {
            let sent = tensor(datatype, json!([1])).sent_binary(&bytes).unwrap();
            assert_eq!(sent.values, Values::Numbers(vec![expected]), "{datatype}");
        }
        for (datatype, bytes) in [
            ("FP16", half::f16::from_f32(-1.5).to_le_bytes()),
            ("BF16", half::bf16::from_f32(-1.5).to_le_bytes()),
        ] {
            let sent = tensor(datatype, json!([1])).sent_binary(&bytes).unwrap();
            assert_eq!(sent.values, Values::F32(vec![-1.5]), "{datatype}");
        }
        let mut labels = Vec::new();
        for text in ["setosa", ""] {
            labels.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
            labels.extend_from_slice(text.as_bytes());
        }
        let sent = tensor("BYTES", json!([2])).sent_binary(&labels).unwrap();
        let strings = sent.fit(&wanted(Element::String, &[None])).unwrap().data;
        assert_eq!(strings, Data::String(vec!["setosa".into(), String::new()]));
    }

    #[test]
    fn binary_tensors_that_disagree_with_their_shape_or_type_are_refused() {
        let tensor = |datatype: &str, shape: Value| {
            v2(json!({"name": "x", "shape": shape, "datatype": datatype}))
        };
        for (datatype, shape, bytes, words) in [
            ("FP32", json!([2]), vec![0u8; 7], "2 FP32 elements"),
            (
                "FP32",
                json!([4_000_000_000u64, 4_000_000_000u64, 4_000_000_000u64]),
                vec![],
                "too many",
            ),
            ("FP32", json!([-1]), vec![], "negative"),
            ("FP16", json!([2]), vec![0, 0], "2 FP16 elements"),
            ("FP8", json!([1]), vec![0], "unknown datatype"),
            (
                "BYTES",
                json!([1]),
                vec![9, 0, 0, 0, b'a'],
                "claims 9 bytes",
            ),
            ("BYTES", json!([2]), vec![1, 0, 0, 0, b'a'], "shape says 2"),
            ("BYTES", json!([1]), vec![1, 0, 0, 0, 0xff], "UTF-8"),
        ] {
            let err = tensor(datatype, shape.clone())
                .sent_binary(&bytes)
                .unwrap_err();
            assert!(err.contains(words), "{datatype} {shape}: {err}");
            assert!(err.contains("\"x\""), "names the input: {err}");
        }
        let no_data = tensor("FP32", json!([1])).sent().unwrap_err();
        assert!(no_data.contains("binary_data_size"), "{no_data}");
    }

    #[test]
    fn an_input_sent_twice_is_named() {
        let tensor =
            |name: &str| json!({"name": name, "shape": [1], "datatype": "FP32", "data": [1]});
        let request = |inputs: Vec<Value>| -> InferRequest {
            serde_json::from_str(&json!({ "inputs": inputs }).to_string()).unwrap()
        };
        assert_eq!(
            request(vec![tensor("a"), tensor("b"), tensor("a")]).duplicate_input(),
            Some("a")
        );
        assert_eq!(
            request(vec![tensor("a"), tensor("b")]).duplicate_input(),
            None
        );
    }
}
