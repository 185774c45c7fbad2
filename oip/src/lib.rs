//! Triton's binary tensor extension of the Open Inference Protocol over
//! HTTP (`extension_binary_data.md`), which `tritonclient.http` uses by
//! default: a JSON header of `Inference-Header-Content-Length` bytes, then
//! each binary tensor's bytes in order (little-endian, row-major; `BOOL` one
//! byte; `BYTES` a 4-byte length before each element; `FP16` and `BF16`
//! two bytes, which JSON carries as numbers).
//!
//! The host reads and checks a request here, outside the sandbox, before
//! any model runs, so that a hostile binary body is refused at the edge.
//! A guest that reads binary tensors itself (the built-in ONNX engine, and
//! a model of the guest SDK that says so) then gets the body as the client
//! framed it; any other gets the request as
//! JSON alone, its binary tensors turned into `data`. The outputs the client
//! asked to get as binary leave the model's JSON answer as bytes.

#[cfg(feature = "grpc")]
pub mod grpc;
mod header;
mod tensor;

use header::{Claim, Header};
pub use tensor::{Element, element_size, elements, strings};
use tensor::{check_tensor, datatype_and_count, tensor_values, write_values};

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;

use serde_json::{Map, Value};
use thiserror::Error;

/// The request and response header that gives the JSON header's length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The text of [`OIP_BINARY`], for the constants built from it: `concat!`
/// takes literals only.
macro_rules! oip_binary {
    () => {
        "application/vnd.oip.v2+octet-stream"
    };
}

/// The content type under which a v2 request or answer framed as Triton's
/// binary tensors crosses into and out of the sandbox, with a
/// `header-length` parameter: the JSON header, then the tensors' bytes.
/// Only a guest that reads binary tensors itself (the built-in ONNX engine,
/// or one with the [`READS_BINARY_TENSORS_SECTION`]) gets or gives it (see
/// `wit/model.wit`).
pub const OIP_BINARY: &str = oip_binary!();

/// The custom section by which a component says that it reads and writes
/// [`OIP_BINARY`] bodies: one byte, 1. The guest SDK writes it for a model
/// whose `READS_BINARY_TENSORS` is true, in the core module the component
/// embeds. A component without it (every component built before it existed)
/// gets v2 requests as JSON alone.
pub const READS_BINARY_TENSORS_SECTION: &str = "mme:reads-binary-tensors";

/// [`OIP_BINARY`] for a JSON header of `header_length` bytes.
pub fn framed_content_type(header_length: usize) -> String {
    // Joined, not formatted: guests write one per answer.
    let mut digits = itoa::Buffer::new();
    let length = digits.format(header_length);
    let mut content_type = String::with_capacity(FRAMED_PREFIX.len() + length.len());
    content_type.push_str(FRAMED_PREFIX);
    content_type.push_str(length);
    content_type
}

/// [`OIP_BINARY`] with its `header-length` parameter, as
/// [`framed_content_type`] writes it, up to the length's digits.
const FRAMED_PREFIX: &str = concat!(oip_binary!(), "; header-length=");

/// The JSON header's length of a body of [`OIP_BINARY`]; `None` for any
/// other content type, or one without a valid `header-length`.
pub fn framed_header_length(content_type: &str) -> Option<usize> {
    // As this crate writes it (every framed call between host and guest):
    // one comparison instead of splitting and folding case (in wasm, about
    // a thousand instructions a call).
    if let Some(digits) = content_type.strip_prefix(FRAMED_PREFIX)
        && let Ok(length) = digits.parse()
    {
        return Some(length);
    }
    // Every request and answer is asked this: HTTP's whitespace is ASCII,
    // and names as this crate writes them compare as bytes before any case
    // is folded.
    let same = |text: &str, name: &str| text == name || text.eq_ignore_ascii_case(name);
    let (media_type, parameters) = content_type.split_once(';')?;
    if !same(media_type.trim_ascii(), OIP_BINARY) {
        return None;
    }
    parameters.split(';').find_map(|parameter| {
        let (key, value) = parameter.split_once('=')?;
        if same(key.trim_ascii(), "header-length") {
            value.trim_ascii().parse().ok()
        } else {
            None
        }
    })
}

/// Why a binary request cannot be read, in words a client can act on.
#[derive(Debug, Error, PartialEq)]
#[error("{0}")]
pub struct BinaryError(String);

fn fail<T>(message: impl Into<String>) -> Result<T, BinaryError> {
    Err(BinaryError(message.into()))
}

/// A request body compressed with `Content-Encoding`, made plain.
#[derive(Debug, Error, PartialEq)]
pub enum EncodingError {
    /// An encoding other than gzip, deflate or identity.
    #[error("Content-Encoding {0:?} is not supported: send gzip, deflate or identity")]
    Unsupported(String),
    /// The body grows past the limit as it is decompressed.
    #[error("the request body is larger than {0} bytes once decompressed")]
    TooLarge(usize),
    /// The body is not what its encoding says.
    #[error("the request body is not valid {encoding}: {reason}")]
    Corrupt {
        /// The encoding it claims.
        encoding: String,
        /// What the decoder found.
        reason: String,
    },
}

/// `body` decompressed as `encoding` says (gzip or deflate, as
/// `tritonclient` sends them), reading at most `limit` bytes of output, so
/// that a small bomb costs no more memory than a large plain body.
pub fn decompress(body: Vec<u8>, encoding: &str, limit: usize) -> Result<Vec<u8>, EncodingError> {
    let encoding = encoding.trim().to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "" | "identity" => return Ok(body),
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(body.as_slice())),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(body.as_slice())),
        _ => return Err(EncodingError::Unsupported(encoding)),
    };
    let mut plain = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut plain)
        .map_err(|e| EncodingError::Corrupt {
            encoding: encoding.clone(),
            reason: e.to_string(),
        })?;
    if plain.len() > limit {
        return Err(EncodingError::TooLarge(limit));
    }
    Ok(plain)
}

/// Which outputs the client wants as binary data: `binary_data_output` on
/// the request sets it for all, `binary_data` on a requested output for that one.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BinaryOutputs {
    all: bool,
    named: HashMap<String, bool>,
}

impl BinaryOutputs {
    /// Every output as binary data (`binary_data_output`).
    pub fn all() -> Self {
        BinaryOutputs {
            all: true,
            named: HashMap::new(),
        }
    }

    /// Whether any output may be wanted as binary.
    pub fn any(&self) -> bool {
        self.all || self.named.values().any(|&b| b)
    }

    fn wants(&self, name: &str) -> bool {
        self.named.get(name).copied().unwrap_or(self.all)
    }
}

/// A v2 request as JSON alone, and the outputs its client wants as binary.
/// `header_length` is the `Inference-Header-Content-Length` header, if sent.
pub fn decode_request(
    body: Vec<u8>,
    header_length: Option<&str>,
) -> Result<(Vec<u8>, BinaryOutputs), BinaryError> {
    let framed = read_request(body, header_length)?;
    let wanted = framed.wanted.clone();
    Ok((framed.into_json()?, wanted))
}

/// A v2 request read and checked, kept as the client framed it: a guest
/// that reads binary tensors itself gets the bytes unchanged
/// ([`Framed::into_binary`]), any other the request as JSON alone
/// ([`Framed::into_json`]).
#[derive(Debug)]
pub struct Framed {
    /// The body as it arrived.
    body: Vec<u8>,
    /// The JSON header, parsed, with the binary output choices taken out;
    /// `None` for a plain JSON body that asks for nothing binary, which is
    /// passed on unparsed, and for a framed header read into borrowed
    /// fields only (parsed when it is needed as JSON).
    header: Option<Map<String, Value>>,
    /// The JSON header's length, when binary tensors follow it.
    header_length: Option<usize>,
    /// Where each binary input's bytes are in `body`, by its place in `inputs`.
    tensors: Vec<(usize, Range<usize>)>,
    wanted: BinaryOutputs,
}

/// Reads a v2 request: the JSON header, the outputs wanted as binary, and
/// each binary input's bytes, checked against its datatype and shape (a
/// hostile body is refused here, before any model runs).
/// `header_length` is the `Inference-Header-Content-Length` header, if sent.
pub fn read_request(body: Vec<u8>, header_length: Option<&str>) -> Result<Framed, BinaryError> {
    read_request_for(body, header_length, Reader::BinaryTensors)
}

/// How the model that a request goes to reads it, where that is known
/// before the request is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// It reads binary tensors itself, or it is not known yet: a framed
    /// header is read into borrowed fields, and parsed as a tree only if
    /// the request must become JSON after all.
    BinaryTensors,
    /// It takes the request as JSON alone ([`Framed::into_json`]): a framed
    /// header is parsed as a tree at once, which `into_json` then edits.
    Json,
}

/// [`read_request`] for a model that reads requests as `reader` says.
pub fn read_request_for(
    body: Vec<u8>,
    header_length: Option<&str>,
    reader: Reader,
) -> Result<Framed, BinaryError> {
    let Some(length) = header_length else {
        // Plain JSON: it can still ask for binary outputs, but most requests
        // do not, and are passed on unparsed.
        if memchr::memmem::find(&body, b"binary_data").is_none() {
            return Ok(Framed::plain(body, None, BinaryOutputs::default()));
        }
        let mut request = object(&body)?;
        let wanted = binary_outputs(&mut request)?;
        if let Some(input) = binary_inputs(&request).next() {
            return fail(format!(
                "input {input:?} has binary_data_size but the request has no Inference-Header-Content-Length header"
            ));
        }
        return Ok(Framed::plain(body, Some(request), wanted));
    };
    let length: usize = length.trim().parse().or_else(|_| {
        fail(format!(
            "Inference-Header-Content-Length is {length:?}; it must be the JSON header's length in bytes"
        ))
    })?;
    if length > body.len() {
        return fail(format!(
            "Inference-Header-Content-Length is {length} but the body has only {} bytes",
            body.len()
        ));
    }
    // For a model that may read the bytes itself, the common header is
    // read into borrowed fields; one that the protocol's types do not fit
    // is read as a tree (which names what is wrong), as is every header of
    // a request that will become JSON.
    let fields = match reader {
        Reader::BinaryTensors => Header::read(&body[..length]),
        Reader::Json => None,
    };
    let (header, wanted, tensors) = match fields {
        Some(fields) => (
            None,
            fields.wanted(),
            place(&body, length, fields.claims())?,
        ),
        None => read_tree(&body, length)?,
    };
    Ok(Framed {
        body,
        header,
        header_length: Some(length),
        tensors,
        wanted,
    })
}

/// What [`read_request`] keeps of a framed request's header.
type Parts = (
    Option<Map<String, Value>>,
    BinaryOutputs,
    Vec<(usize, Range<usize>)>,
);

/// A framed request's header read as a tree, with the binary output choices
/// taken out, and where each binary input's bytes are.
fn read_tree(body: &[u8], length: usize) -> Result<Parts, BinaryError> {
    let mut request = object(&body[..length])?;
    let wanted = binary_outputs(&mut request)?;
    let tensors = place(body, length, claims(&request))?;
    Ok((Some(request), wanted, tensors))
}

/// The inputs of a header read as a tree whose bytes follow it.
fn claims(request: &Map<String, Value>) -> impl Iterator<Item = Claim<'_>> {
    let inputs = request.get("inputs").and_then(Value::as_array);
    inputs
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, input)| {
            let Value::Object(input) = input else {
                return None;
            };
            let size = input.get("parameters")?.get("binary_data_size")?;
            Some(Claim {
                index,
                name: input.get("name").and_then(Value::as_str).unwrap_or("?"),
                size: size.as_u64().and_then(|s| usize::try_from(s).ok()),
                shape: datatype_and_count(input),
            })
        })
}

/// Where each claimed input's bytes are in `body`, after the header's
/// `length` bytes, each checked against its datatype and shape; the claims
/// must use every byte.
fn place<'a>(
    body: &[u8],
    length: usize,
    claims: impl Iterator<Item = Claim<'a>>,
) -> Result<Vec<(usize, Range<usize>)>, BinaryError> {
    let mut tensors = Vec::new();
    let mut at = length;
    for claim in claims {
        let name = claim.name;
        let size = claim.size.ok_or_else(|| {
            BinaryError(format!(
                "input {name:?}: binary_data_size must be a count of bytes"
            ))
        })?;
        let left = body.len() - at;
        if size > left {
            return fail(format!(
                "input {name:?}: binary_data_size is {size} but only {left} bytes follow"
            ));
        }
        claim
            .shape
            .and_then(|shape| check_tensor(shape, &body[at..at + size]))
            .map_err(|reason| BinaryError(format!("input {name:?}: {reason}")))?;
        tensors.push((claim.index, at..at + size));
        at += size;
    }
    if at != body.len() {
        return fail(format!(
            "{} bytes follow the last binary input: the binary_data_size values and the body disagree",
            body.len() - at
        ));
    }
    Ok(tensors)
}

impl Framed {
    fn plain(body: Vec<u8>, header: Option<Map<String, Value>>, wanted: BinaryOutputs) -> Self {
        Framed {
            body,
            header,
            header_length: None,
            tensors: Vec::new(),
            wanted,
        }
    }

    /// The outputs the client wants as binary data.
    pub fn wanted(&self) -> &BinaryOutputs {
        &self.wanted
    }

    /// The body as the client sent it (checked), and the JSON header's
    /// length when binary tensors follow it.
    pub fn into_binary(self) -> (Vec<u8>, Option<usize>) {
        (self.body, self.header_length)
    }

    /// The request as JSON alone: each binary input's values as `data`,
    /// and no binary parameters left.
    pub fn into_json(self) -> Result<Vec<u8>, BinaryError> {
        let mut request = match (self.header, self.header_length) {
            (Some(request), _) => request,
            // Read into borrowed fields only: read as a tree now, with the
            // binary output choices taken out as the tree's reading does.
            (None, Some(length)) => {
                let json = self.body.get(..length).unwrap_or_default();
                let mut request = object(json)?;
                binary_outputs(&mut request)?;
                request
            }
            (None, None) => return Ok(self.body),
        };
        if let Some(Value::Array(inputs)) = request.get_mut("inputs") {
            for (index, range) in &self.tensors {
                let Some(Value::Object(input)) = inputs.get_mut(*index) else {
                    continue;
                };
                take_parameter(input, "binary_data_size");
                let data = tensor_values(input, &self.body[range.clone()]).map_err(|reason| {
                    let name = input.get("name").and_then(Value::as_str).unwrap_or("?");
                    BinaryError(format!("input {name:?}: {reason}"))
                })?;
                input.insert("data".into(), Value::Array(data));
            }
        }
        to_json(&request)
    }
}

/// The model's v2 answer with the outputs in `wanted` as binary data: the
/// JSON header and the bytes after it, and the header's length; `None` when
/// no output is binary (the answer stays JSON alone).
pub fn encode_response(
    answer: &mut Map<String, Value>,
    wanted: &BinaryOutputs,
) -> Result<Option<Vec<u8>>, BinaryError> {
    let mut tail = Vec::new();
    if let Some(Value::Array(outputs)) = answer.get_mut("outputs") {
        for output in outputs.iter_mut() {
            let Value::Object(output) = output else {
                continue;
            };
            let name = output
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !wanted.wants(&name) {
                continue;
            }
            let Some(data) = output.remove("data") else {
                continue;
            };
            let datatype = output
                .get("datatype")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let start = tail.len();
            write_values(datatype, &data, &mut tail)
                .map_err(|reason| BinaryError(format!("output {name:?}: {reason}")))?;
            let size = tail.len() - start;
            let parameters = output
                .entry("parameters")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(parameters) = parameters {
                parameters.insert("binary_data_size".into(), size.into());
            }
        }
    }
    Ok((!tail.is_empty()).then_some(tail))
}

/// The JSON object `header` with `fields` (string values) written first,
/// without building its tree: the cheap way to name the model in a framed
/// answer. `None` when `header` is not one JSON object, when any field's
/// name appears in it anywhere, or when it has an escape, which could
/// spell a field's name in other bytes (`"model\u005fname"`): the caller
/// then edits the parsed object, so that no key is written twice and a
/// model cannot name itself after another.
pub fn with_fields_first(header: &[u8], fields: &[(&str, &str)]) -> Option<Vec<u8>> {
    if memchr::memchr(b'\\', header).is_some()
        || fields
            .iter()
            .any(|(key, _)| mentions(header, key.as_bytes()))
    {
        return None;
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(header).ok()?;
    let start = header.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = header.get(start..)?.strip_prefix(b"{")?;
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(header.len() + 64);
    out.push(b'{');
    for (index, (key, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        serde_json::to_writer(&mut out, value).ok()?;
    }
    if !empty && !fields.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Whether `needle` occurs in `haystack`: for the short names and headers
/// of answers, a scan from each occurrence of its first byte costs less
/// than building a `memmem` finder per call.
fn mentions(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    memchr::memchr_iter(first, haystack).any(|at| {
        haystack
            .get(at + 1..)
            .is_some_and(|after| after.starts_with(rest))
    })
}

fn object(json: &[u8]) -> Result<Map<String, Value>, BinaryError> {
    serde_json::from_slice(json).or_else(|e| {
        fail(format!(
            "the inference request's JSON header is not a JSON object ({e}); check Inference-Header-Content-Length"
        ))
    })
}

fn to_json(request: &Map<String, Value>) -> Result<Vec<u8>, BinaryError> {
    serde_json::to_vec(request).or_else(|e| fail(format!("cannot write the request as JSON: {e}")))
}

/// Removes parameter `key` from `holder`'s `parameters`, and the
/// `parameters` object when that leaves it empty.
fn take_parameter(holder: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let Some(Value::Object(parameters)) = holder.get_mut("parameters") else {
        return None;
    };
    let taken = parameters.remove(key);
    if parameters.is_empty() {
        holder.remove("parameters");
    }
    taken
}

/// The names of inputs that claim binary data.
fn binary_inputs(request: &Map<String, Value>) -> impl Iterator<Item = &str> {
    request
        .get("inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|input| input.pointer("/parameters/binary_data_size").is_some())
        .map(|input| input.get("name").and_then(Value::as_str).unwrap_or("?"))
}

/// Reads and removes the binary output choices of a request.
fn binary_outputs(request: &mut Map<String, Value>) -> Result<BinaryOutputs, BinaryError> {
    let flag = |value: Value, what: &str| {
        value
            .as_bool()
            .ok_or_else(|| BinaryError(format!("{what} must be true or false")))
    };
    let mut wanted = BinaryOutputs::default();
    if let Some(all) = take_parameter(request, "binary_data_output") {
        wanted.all = flag(all, "binary_data_output")?;
    }
    if let Some(Value::Array(outputs)) = request.get_mut("outputs") {
        for output in outputs.iter_mut() {
            let Value::Object(output) = output else {
                continue;
            };
            if let Some(binary) = take_parameter(output, "binary_data") {
                let name = output
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                wanted
                    .named
                    .insert(name.to_string(), flag(binary, "an output's binary_data")?);
            }
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests;
