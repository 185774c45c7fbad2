//! Decoded requests to input tensors, and output tensors to answers.

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
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

/// An output tensor's values, flat, in their own type ([`Data`], as the
/// decoder makes for inputs), so that they are written straight to JSON: an
/// `f32` prints as its shortest decimal (0.1, not 0.10000000149011612), and
/// no value becomes a `serde_json::Value`.
pub fn data_of(tensor: &Tensor) -> Result<Data, String> {
    let plain = |e: TractError| format!("cannot read an output: {e}");
    let datum = tensor.datum_type();
    Ok(if datum == f32::datum_type() {
        Data::F32(plain_slice::<f32>(tensor).map_err(plain)?)
    } else if datum == String::datum_type() {
        Data::String(plain_slice::<String>(tensor).map_err(plain)?)
    } else if datum == bool::datum_type() {
        Data::Bool(plain_slice::<bool>(tensor).map_err(plain)?)
    } else if datum.is_integer() {
        let ints = tensor.cast_to::<i64>().map_err(plain)?;
        Data::Int(plain_slice::<i64>(&ints).map_err(plain)?)
    } else {
        let floats = tensor.cast_to::<f64>().map_err(plain)?;
        Data::F64(plain_slice::<f64>(&floats).map_err(plain)?)
    })
}

/// Appends `data` as binary data of `datatype` (Triton's binary tensor
/// extension: little-endian, row-major; `BOOL` one byte; `BYTES` a 4-byte
/// length before each element; `FP16` two bytes). An integer is written at
/// the width of its output's type, which it came from.
pub fn write_binary(data: &Data, datatype: &str, out: &mut Vec<u8>) {
    match data {
        Data::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        // Half-precision outputs are read out as f64, and written back at their width.
        Data::F64(v) if datatype == "FP16" => v
            .iter()
            .for_each(|&x| out.extend_from_slice(&half::f16::from_f64(x).to_le_bytes())),
        Data::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Data::String(v) => {
            for text in v {
                let length = u32::try_from(text.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
        Data::Int(v) => {
            let width = mme_oip::element_size(datatype)
                .ok()
                .flatten()
                .unwrap_or(8)
                .min(8);
            for x in v {
                out.extend_from_slice(&x.to_le_bytes()[..width]);
            }
        }
    }
}

/// Writes value `at` of `data`.
fn write<S: Serializer>(data: &Data, at: usize, serializer: S) -> Result<S::Ok, S::Error> {
    match data {
        Data::F32(v) => serializer.serialize_f32(v[at]),
        Data::F64(v) => serializer.serialize_f64(v[at]),
        Data::Int(v) => serializer.serialize_i64(v[at]),
        Data::Bool(v) => serializer.serialize_bool(v[at]),
        Data::String(v) => serializer.serialize_str(&v[at]),
    }
}

fn plain_slice<T: Datum + Clone>(tensor: &Tensor) -> TractResult<Vec<T>> {
    Ok(tensor.try_as_plain_ram()?.as_slice::<T>()?.to_vec())
}

/// One value of [`Data`], for serializers that take a `Serialize`.
struct Cell<'a>(&'a Data, usize);

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        write(self.0, self.1, serializer)
    }
}

/// Every value, as one flat JSON list (v2's `data`).
pub struct Flat<'a>(pub &'a Data);

impl Serialize for Flat<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for at in 0..self.0.len() {
            seq.serialize_element(&Cell(self.0, at))?;
        }
        seq.end()
    }
}

/// The values as nested JSON lists of `shape`.
pub struct Nested<'a> {
    /// The dimensions.
    pub shape: &'a [usize],
    /// The values, row-major.
    pub cells: &'a Data,
    /// Where this part starts in `cells`.
    pub start: usize,
}

impl Serialize for Nested<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some((&len, rest)) = self.shape.split_first() else {
            return if self.start < self.cells.len() {
                write(self.cells, self.start, serializer)
            } else {
                serializer.serialize_unit()
            };
        };
        let stride = rest.iter().product::<usize>();
        let mut seq = serializer.serialize_seq(Some(len))?;
        for i in 0..len {
            seq.serialize_element(&Nested {
                shape: rest,
                cells: self.cells,
                start: self.start + i * stride,
            })?;
        }
        seq.end()
    }
}

/// `values` as nested JSON lists of `shape`, written straight to text: what
/// [`Nested`] writes for `f32` data, without a serializer call per list and
/// per value. Each number is `ryu`'s shortest decimal, which reads back as
/// the same `f32`; it needs only 64-bit products, which wasm has (the
/// formatter serde_json uses takes 128-bit ones, a library call in wasm).
/// A value that is not finite is `null`, and a positive exponent has its
/// `+` (`1e+20`), as serde_json writes them.
pub fn nested_f32_json(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 12 + 2 * shape.len() + 2);
    let mut numbers = ryu::Buffer::new();
    write_nested_f32(shape, values, &mut numbers, &mut out);
    out
}

/// One number of [`nested_f32_json`]; `None` (no value) is `null`.
fn write_f32(x: Option<f32>, numbers: &mut ryu::Buffer, out: &mut Vec<u8>) {
    let Some(x) = x.filter(|x| x.is_finite()) else {
        out.extend_from_slice(b"null");
        return;
    };
    let text = numbers.format_finite(x).as_bytes();
    match text.iter().position(|&b| b == b'e') {
        Some(e) if text.get(e + 1) != Some(&b'-') => {
            out.extend_from_slice(&text[..=e]);
            out.push(b'+');
            out.extend_from_slice(&text[e + 1..]);
        }
        _ => out.extend_from_slice(text),
    }
}

fn write_nested_f32(shape: &[usize], values: &[f32], numbers: &mut ryu::Buffer, out: &mut Vec<u8>) {
    let Some((&len, rest)) = shape.split_first() else {
        write_f32(values.first().copied(), numbers, out);
        return;
    };
    out.push(b'[');
    if rest.is_empty() {
        for (i, x) in values.iter().take(len).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_f32(Some(*x), numbers, out);
        }
    } else {
        let stride = rest.iter().product::<usize>();
        for i in 0..len {
            if i > 0 {
                out.push(b',');
            }
            let start = (i * stride).min(values.len());
            write_nested_f32(rest, &values[start..], numbers, out);
        }
    }
    out.push(b']');
}

/// A ZipMap output on the plain routes: one `{label: probability}` object per row.
pub struct Zipped<'a> {
    /// The class labels, one per column.
    pub labels: &'a [Value],
    /// The probabilities, `[rows, classes]`.
    pub cells: &'a Data,
}

impl Serialize for Zipped<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let width = self.labels.len().max(1);
        let rows = self.cells.len() / width;
        let mut seq = serializer.serialize_seq(Some(rows))?;
        for row in 0..rows {
            seq.serialize_element(&ZippedRow { zipped: self, row })?;
        }
        seq.end()
    }
}

struct ZippedRow<'a> {
    zipped: &'a Zipped<'a>,
    row: usize,
}

impl Serialize for ZippedRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let labels = self.zipped.labels;
        let mut map = serializer.serialize_map(Some(labels.len()))?;
        for (column, label) in labels.iter().enumerate() {
            let key = match label {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let cell = Cell(self.zipped.cells, self.row * labels.len() + column);
            map.serialize_entry(&key, &cell)?;
        }
        map.end()
    }
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
    use serde_json::json;

    use super::*;

    fn json_of(value: &impl Serialize) -> Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn outputs_nest_by_shape_and_zip_by_label() {
        let cells = Data::Int(vec![1, 2, 3, 4]);
        let nested = |shape: &[usize]| {
            json_of(&Nested {
                shape,
                cells: &cells,
                start: 0,
            })
        };
        assert_eq!(nested(&[2, 2]), json!([[1, 2], [3, 4]]));
        assert_eq!(nested(&[4]), json!([1, 2, 3, 4]));
        assert_eq!(nested(&[4, 1]), json!([[1], [2], [3], [4]]));
        let labels = [json!(0), json!("b")];
        assert_eq!(
            json_of(&Zipped {
                labels: &labels,
                cells: &cells
            }),
            json!([{"0": 1, "b": 2}, {"0": 3, "b": 4}])
        );
        assert_eq!(json_of(&Flat(&cells)), json!([1, 2, 3, 4]));
    }

    #[test]
    fn binary_outputs_are_written_at_their_datatype_s_width() {
        let written = |data: Data, datatype: &str| {
            let mut out = Vec::new();
            write_binary(&data, datatype, &mut out);
            out
        };
        assert_eq!(written(Data::F32(vec![0.5]), "FP32"), 0.5f32.to_le_bytes());
        assert_eq!(written(Data::F64(vec![0.5]), "FP64"), 0.5f64.to_le_bytes());
        assert_eq!(
            written(Data::F64(vec![0.5]), "FP16"),
            half::f16::from_f32(0.5).to_le_bytes()
        );
        assert_eq!(written(Data::Int(vec![-2]), "INT32"), (-2i32).to_le_bytes());
        assert_eq!(written(Data::Int(vec![-2]), "INT64"), (-2i64).to_le_bytes());
        assert_eq!(written(Data::Int(vec![200]), "UINT8"), [200]);
        assert_eq!(written(Data::Bool(vec![true, false]), "BOOL"), [1, 0]);
        assert_eq!(
            written(Data::String(vec!["ab".into()]), "BYTES"),
            [2, 0, 0, 0, b'a', b'b']
        );
    }

    #[test]
    fn f32_values_print_as_their_shortest_decimal() {
        let cells = data_of(&tensor1(&[0.1f32, 2.0, 1.0000001])).unwrap();
        let text = serde_json::to_string(&Flat(&cells)).unwrap();
        assert_eq!(text, "[0.1,2.0,1.0000001]");
        let labels = data_of(&tensor1(&["setosa".to_string()])).unwrap();
        assert_eq!(
            serde_json::to_string(&Flat(&labels)).unwrap(),
            "[\"setosa\"]"
        );
    }

    #[test]
    fn f32_answers_written_straight_are_what_the_serializer_writes() {
        // Edge values, then many from a fixed pseudo-random walk over the bits.
        let mut values = vec![
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            0.1,
            1e-7,
            1e-45,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            123_456_790.0,
            1e20,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut bits: u32 = 0x1234_5678;
        while values.len() < 20_000 {
            bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            values.push(f32::from_bits(bits));
        }
        for shape in [
            vec![values.len()],
            vec![values.len() / 4, 4],
            vec![2, 5, 2000],
        ] {
            assert_written_as_serialized(&shape, &values);
        }
        for (shape, values) in [
            (vec![0, 3], vec![]),
            (vec![], vec![2.0]),
            (vec![3, 0], vec![]),
        ] {
            assert_written_as_serialized(&shape, &values);
        }
    }

    fn assert_written_as_serialized(shape: &[usize], values: &[f32]) {
        let cells = Data::F32(values.to_vec());
        let nested = Nested {
            shape,
            cells: &cells,
            start: 0,
        };
        let general = serde_json::to_string(&nested).unwrap();
        let straight = String::from_utf8(nested_f32_json(shape, values)).unwrap();
        let differs = straight
            .split(',')
            .zip(general.split(','))
            .find(|(a, b)| a != b);
        assert_eq!(differs, None, "shape {shape:?}");
        assert_eq!(straight, general, "shape {shape:?}");
    }
}
