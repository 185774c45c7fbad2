//! The elements of a binary tensor: their sizes by datatype, reading them
//! (checked against the datatype and shape the JSON header gives), and
//! writing JSON values as them.

use half::{bf16, f16};
use serde_json::{Map, Value};

/// The bytes of one element of `datatype`; `None` for `BYTES`, whose
/// elements carry their own length.
pub fn element_size(datatype: &str) -> Result<Option<usize>, String> {
    Ok(Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        "BYTES" => return Ok(None),
        other => return Err(format!("unknown datatype {other:?}")),
    }))
}

/// The datatype and element count of a binary input, as its JSON says.
pub(crate) fn datatype_and_count(input: &Map<String, Value>) -> Result<(&str, usize), String> {
    checked_shape(
        input.get("datatype").and_then(Value::as_str),
        input
            .get("shape")
            .and_then(Value::as_array)
            .map(|dims| dims.iter().map(Value::as_u64)),
    )
}

/// An input's datatype and element count, from its `datatype` and `shape`
/// as the header gave them (`None` for a size that is not a count).
pub(crate) fn checked_shape(
    datatype: Option<&str>,
    shape: Option<impl Iterator<Item = Option<u64>>>,
) -> Result<(&str, usize), String> {
    let datatype = datatype.ok_or("it has no datatype")?;
    let count = shape
        .ok_or("it has no shape")?
        .try_fold(1usize, |n, d| {
            d.and_then(|d| usize::try_from(d).ok())
                .and_then(|d| n.checked_mul(d))
        })
        .ok_or("its shape must be a list of sizes")?;
    Ok((datatype, count))
}

/// Checks a binary input's bytes against its datatype and shape.
pub(crate) fn check_tensor((datatype, count): (&str, usize), bytes: &[u8]) -> Result<(), String> {
    match element_size(datatype)? {
        None => strings(bytes, count).map(drop),
        Some(size) if count.checked_mul(size) == Some(bytes.len()) => Ok(()),
        Some(size) => Err(format!(
            "binary_data_size is {} bytes, but {count} {datatype} elements (its shape) take {}",
            bytes.len(),
            count.saturating_mul(size)
        )),
    }
}

/// The values of a binary tensor as JSON; its bytes were checked against
/// its datatype and shape when the request was read.
pub(crate) fn tensor_values(
    input: &Map<String, Value>,
    bytes: &[u8],
) -> Result<Vec<Value>, String> {
    let (datatype, count) = datatype_and_count(input)?;
    if element_size(datatype)?.is_none() {
        return Ok(strings(bytes, count)?
            .into_iter()
            .map(|s| Value::String(s.to_string()))
            .collect());
    }
    elements(datatype, bytes)?
        .map(|element| match element {
            Element::Bool(b) => Ok(Value::Bool(b)),
            Element::Signed(i) => Ok(i.into()),
            Element::Unsigned(u) => Ok(u.into()),
            Element::Float(x) => serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(|| format!("{x} is not a number JSON can carry; send finite values")),
        })
        .collect()
}

/// One element of a fixed-width datatype, as the kind of number it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Element {
    /// `BOOL`.
    Bool(bool),
    /// `INT8` to `INT64`.
    Signed(i64),
    /// `UINT8` to `UINT64`.
    Unsigned(u64),
    /// `FP16`, `BF16`, `FP32` and `FP64`, exactly.
    Float(f64),
}

impl Element {
    /// The element as a number (`BOOL` as 0 or 1; a 64-bit integer may round).
    pub fn as_f64(self) -> f64 {
        match self {
            Element::Bool(b) => f64::from(u8::from(b)),
            Element::Signed(i) => i as f64,
            Element::Unsigned(u) => u as f64,
            Element::Float(x) => x,
        }
    }
}

/// The elements of `bytes` read as `datatype`, little-endian, in order; a
/// last element cut short is left out (the caller checks the length
/// against the shape). `BYTES`, whose elements have no fixed width, is an
/// error: read it with [`strings`].
pub fn elements<'a>(
    datatype: &str,
    bytes: &'a [u8],
) -> Result<impl Iterator<Item = Element> + 'a, String> {
    let size = element_size(datatype)?
        .ok_or_else(|| format!("{datatype} elements have no fixed width"))?;
    #[derive(Clone, Copy)]
    enum Kind {
        Bool,
        Signed(u32),
        Unsigned,
        F16,
        Bf16,
        F32,
        F64,
    }
    let kind = match datatype {
        "BOOL" => Kind::Bool,
        "INT8" | "INT16" | "INT32" | "INT64" => Kind::Signed(8 * size as u32),
        "FP16" => Kind::F16,
        "BF16" => Kind::Bf16,
        "FP32" => Kind::F32,
        "FP64" => Kind::F64,
        _ => Kind::Unsigned,
    };
    Ok(bytes.chunks_exact(size).map(move |chunk| {
        let mut le = [0u8; 8];
        le[..size].copy_from_slice(chunk);
        let bits = u64::from_le_bytes(le);
        match kind {
            Kind::Bool => Element::Bool(bits != 0),
            Kind::Signed(width) => {
                let shift = 64 - width;
                Element::Signed(((bits << shift) as i64) >> shift)
            }
            Kind::Unsigned => Element::Unsigned(bits),
            Kind::F16 => Element::Float(f16::from_bits(bits as u16).to_f64()),
            Kind::Bf16 => Element::Float(bf16::from_bits(bits as u16).to_f64()),
            Kind::F32 => Element::Float(f64::from(f32::from_bits(bits as u32))),
            Kind::F64 => Element::Float(f64::from_bits(bits)),
        }
    }))
}

/// `count` BYTES elements, each a 4-byte little-endian length and its
/// bytes, which must be UTF-8: JSON and the models' string inputs take text.
pub fn strings(mut bytes: &[u8], count: usize) -> Result<Vec<&str>, String> {
    let mut values = Vec::new();
    while !bytes.is_empty() {
        let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
            return Err("a BYTES element's 4-byte length is cut short".into());
        };
        let length = usize::try_from(u32::from_le_bytes(*length)).map_err(|e| e.to_string())?;
        if length > rest.len() {
            return Err(format!(
                "a BYTES element claims {length} bytes but only {} follow",
                rest.len()
            ));
        }
        let (text, rest) = rest.split_at(length);
        let text = std::str::from_utf8(text)
            .map_err(|_| "a BYTES element is not UTF-8 text, which JSON cannot carry")?;
        values.push(text);
        bytes = rest;
    }
    if values.len() != count {
        return Err(format!(
            "it holds {} BYTES elements but its shape says {count}",
            values.len()
        ));
    }
    Ok(values)
}

/// Appends `data` (a flat or nested JSON list) as `datatype`'s bytes.
pub(crate) fn write_values(datatype: &str, data: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    let size = element_size(datatype)?;
    let mut failed = None;
    visit(data, &mut |value| {
        if failed.is_some() {
            return;
        }
        let written = match (datatype, size, value) {
            ("BYTES", _, Value::String(s)) => u32::try_from(s.len())
                .map(|n| {
                    out.extend_from_slice(&n.to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                })
                .is_ok(),
            ("BOOL", _, Value::Bool(b)) => {
                out.push(u8::from(*b));
                true
            }
            ("FP32", _, Value::Number(n)) => n
                .as_f64()
                .map(|x| out.extend_from_slice(&(x as f32).to_le_bytes()))
                .is_some(),
            ("FP16", _, Value::Number(n)) => n
                .as_f64()
                .map(|x| out.extend_from_slice(&f16::from_f64(x).to_le_bytes()))
                .is_some(),
            ("BF16", _, Value::Number(n)) => n
                .as_f64()
                .map(|x| out.extend_from_slice(&bf16::from_f64(x).to_le_bytes()))
                .is_some(),
            ("FP64", _, Value::Number(n)) => n
                .as_f64()
                .map(|x| out.extend_from_slice(&x.to_le_bytes()))
                .is_some(),
            (_, Some(size), Value::Number(n)) => integer_bytes(n, size, datatype.starts_with('U'))
                .map(|bytes| out.extend_from_slice(&bytes[..size]))
                .is_some(),
            _ => false,
        };
        if !written {
            failed = Some(format!(
                "the model answered {value} for a {datatype} tensor"
            ));
        }
    });
    failed.map_or(Ok(()), Err)
}

/// An integer's little-endian bytes, if it fits in `size` bytes.
fn integer_bytes(n: &serde_json::Number, size: usize, unsigned: bool) -> Option<[u8; 8]> {
    let bits = u32::try_from(size * 8).ok()?;
    if unsigned {
        let x = n.as_u64()?;
        (bits == 64 || x < 1 << bits).then(|| x.to_le_bytes())
    } else {
        let x = n.as_i64()?;
        let fits = bits == 64 || (-(1i64 << (bits - 1))..1i64 << (bits - 1)).contains(&x);
        fits.then(|| x.to_le_bytes())
    }
}

/// Calls `f` on every leaf of nested lists, in row-major order.
fn visit(value: &Value, f: &mut impl FnMut(&Value)) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| visit(item, f)),
        leaf => f(leaf),
    }
}
