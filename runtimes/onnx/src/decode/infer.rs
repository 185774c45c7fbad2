//! An Open Inference Protocol (v2) request as the engine reads it: a
//! tensor per input by name, its data as JSON or as binary bytes.

use serde::Deserialize;

use super::array::Walk;
use super::{Scalar, Sent, Values, numbers};

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
