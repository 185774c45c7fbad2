//! The engine itself: the model that `export_model!` exports.

mod dense;
mod graph;
mod ml;
mod tensors;

use mme_guest::{Config, Error, Model, Request, Response, export_model};
use serde_json::{Value, json};
use tract_onnx::prelude::*;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::decode::{BodyError, Data, InferRequest, Sent};
pub use graph::{Graph, Port};
use tensors::{Flat, Nested, Zipped, data_of};

/// Where the package's files are.
const MODEL_DIR: &str = "/model";

/// An ONNX model, ready to answer.
pub struct OnnxModel {
    graph: Graph,
}

/// The `.onnx` file to load: `option.model_file`, else `model.onnx`, else
/// the only `.onnx` file of the package.
fn model_file(config: &Config) -> Result<String, Error> {
    if let Some(name) = config.get("model_file") {
        if name.is_empty() || name.contains('/') || name == ".." {
            return Err(Error::invalid_input(format!(
                "option.model_file={name:?} must name a file at the top of the package"
            )));
        }
        return Ok(name.to_string());
    }
    if std::path::Path::new(MODEL_DIR).join("model.onnx").is_file() {
        return Ok("model.onnx".into());
    }
    let entries = std::fs::read_dir(MODEL_DIR)
        .map_err(|e| Error::internal(format!("cannot list {MODEL_DIR}: {e}")))?;
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".onnx"))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::invalid_input(
            "the package has no .onnx file; add model.onnx or set option.model_file",
        )),
        _ => Err(Error::invalid_input(format!(
            "the package has {} .onnx files ({}); name one with option.model_file",
            found.len(),
            found.join(", ")
        ))),
    }
}

impl OnnxModel {
    /// Loads a graph from bytes (what `load` does with the package's file).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let graph = Graph::load(bytes).map_err(|e| Error::invalid_input(e.0))?;
        Ok(OnnxModel { graph })
    }

    /// The graph's inputs and outputs, as the Open Inference Protocol's
    /// model metadata lists them.
    pub fn describe(&self) -> Value {
        let port = |p: &Port| {
            let shape: Vec<i64> = p.shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect();
            let (datatype, shape) = match &p.zipmap {
                // A ZipMap answers on v2 as its FP32 [N, classes] tensor.
                Some(labels) => ("FP32", vec![-1, labels.len() as i64]),
                None => (tensors::datatype(p.datum), shape),
            };
            json!({ "name": p.name, "datatype": datatype, "shape": shape })
        };
        json!({
            "platform": "onnx",
            "inputs": self.graph.inputs.iter().map(port).collect::<Vec<_>>(),
            "outputs": self.graph.outputs.iter().map(port).collect::<Vec<_>>(),
        })
    }

    fn run(&self, inputs: TVec<TValue>) -> Result<TVec<Tensor>, Error> {
        self.graph
            .run(inputs)
            .map_err(|e| Error::invalid_input(format!("the graph cannot run on this input: {e}")))
    }

    /// A JSON array or CSV rows, for a graph with one input.
    fn predict_plain(&self, request: &Request) -> Result<Response, Error> {
        let [input] = self.graph.inputs.as_slice() else {
            let names: Vec<&str> = self.graph.inputs.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::invalid_input(format!(
                "this model has {} inputs ({}); send an Open Inference Protocol request to /v2/models/{{model}}/infer with a tensor for each",
                names.len(),
                names.join(", ")
            )));
        };
        let sent = if media_type(&request.content_type) == mme_guest::CSV {
            Sent::from_csv(&request.body).map_err(Error::invalid_input)?
        } else {
            Sent::from_json(&request.body).map_err(|error| match error {
                BodyError::Syntax(e) => Error::invalid_input(format!(
                    "the body is not JSON ({e}); send an array of rows such as [[0.5, 1.0]], or text/csv"
                )),
                BodyError::Content(e) => Error::invalid_input(e.to_string()),
            })?
        };
        let tensor = tensors::tensor_for(sent, input).map_err(Error::invalid_input)?;
        let outputs = self.run(tvec!(tensor))?;
        let cells = outputs
            .iter()
            .map(data_of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::internal)?;
        let answers: Vec<(&str, Answer<'_>)> = self
            .graph
            .outputs
            .iter()
            .zip(&outputs)
            .zip(&cells)
            .map(|((port, tensor), cells)| {
                let answer = match &port.zipmap {
                    Some(labels) => Answer::Zipped(Zipped { labels, cells }),
                    None => Answer::Nested(Nested {
                        shape: tensor.shape(),
                        cells,
                        start: 0,
                    }),
                };
                (port.name.as_str(), answer)
            })
            .collect();
        match answers.as_slice() {
            [
                (
                    _,
                    Answer::Nested(Nested {
                        shape,
                        cells: Data::F32(values),
                        ..
                    }),
                ),
            ] => Ok(Response::new(
                mme_guest::JSON,
                tensors::nested_f32_json(shape, values),
            )),
            [(_, only)] => Response::json(only),
            many => Response::json(&ByName(many)),
        }
    }

    /// An Open Inference Protocol request: a tensor per input, by name.
    /// `header` is its JSON; `binary`, the bytes of the tensors that
    /// follow it as binary data, in the order of `inputs`. A request that
    /// came `framed` as binary may be answered so.
    fn predict_v2(&self, header: &[u8], binary: &[u8], framed: bool) -> Result<Response, Error> {
        let infer: InferRequest = serde_json::from_slice(header).map_err(|e| {
            Error::invalid_input(format!(
                "not an Open Inference Protocol request ({{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}}): {e}"
            ))
        })?;
        if let Some(name) = infer.duplicate_input() {
            return Err(Error::invalid_input(format!(
                "the request has more than one tensor named {name:?}; send one per input"
            )));
        }
        let mut sent = binary_tensors(&infer, binary)?;
        let single = self.graph.inputs.len() == 1 && infer.inputs.len() == 1;
        let mut feeds = TVec::new();
        for port in &self.graph.inputs {
            let at = infer
                .inputs
                .iter()
                .position(|t| single || t.name == port.name)
                .ok_or_else(|| {
                    Error::invalid_input(format!(
                        "the request has no tensor for input {:?}",
                        port.name
                    ))
                })?;
            let values = match sent[at].take() {
                Some(values) => values,
                None => infer.inputs[at].sent().map_err(Error::invalid_input)?,
            };
            feeds.push(tensors::tensor_for(values, port).map_err(Error::invalid_input)?);
        }
        if let Some(extra) = infer
            .inputs
            .iter()
            .find(|t| !single && !self.graph.inputs.iter().any(|p| p.name == t.name))
        {
            return Err(Error::invalid_input(format!(
                "the model has no input {:?}; its inputs are {}",
                extra.name,
                self.graph
                    .inputs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let wanted: Option<Vec<&str>> = infer
            .outputs
            .as_ref()
            .map(|outputs| outputs.iter().map(|o| o.name.as_str()).collect());
        if let Some(wanted) = &wanted
            && let Some(unknown) = wanted
                .iter()
                .find(|w| !self.graph.outputs.iter().any(|p| p.name == **w))
        {
            return Err(Error::invalid_input(format!(
                "the model has no output {unknown:?}"
            )));
        }
        let outputs = self.run(feeds)?;
        let mut cells = Vec::new();
        for (port, tensor) in self.graph.outputs.iter().zip(&outputs) {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.contains(&port.name.as_str()))
            {
                continue;
            }
            cells.push((port, tensor, data_of(tensor).map_err(Error::internal)?));
        }
        // The outputs the client wants as binary data leave as bytes after
        // the JSON, when the request came framed so (the host answers the
        // others); the rest as JSON `data`.
        let mut tail = Vec::new();
        let mut outputs = Vec::with_capacity(cells.len());
        for (port, tensor, cells) in &cells {
            let datatype = tensors::datatype(tensor.datum_type());
            let (data, parameters) = if framed && infer.wants_binary(&port.name) {
                let start = tail.len();
                tensors::write_binary(cells, datatype, &mut tail);
                let binary_data_size = tail.len() - start;
                (None, Some(BinaryParameters { binary_data_size }))
            } else {
                (Some(Flat(cells)), None)
            };
            outputs.push(OutputTensor {
                name: &port.name,
                datatype,
                shape: tensor.shape(),
                data,
                parameters,
            });
        }
        let answer = Response::json(&InferAnswer {
            id: infer.id,
            outputs,
        })?;
        if tail.is_empty() {
            return Ok(answer);
        }
        let header_length = answer.body.len();
        let mut body = answer.body;
        body.extend_from_slice(&tail);
        Ok(Response::new(
            mme_oip::framed_content_type(header_length),
            body,
        ))
    }
}

/// The values of the request's binary tensors, by their place in
/// `inputs` (`None` for a tensor sent as JSON), after checking that their
/// sizes take up `binary` exactly.
fn binary_tensors(infer: &InferRequest, mut binary: &[u8]) -> Result<Vec<Option<Sent>>, Error> {
    let mut sent = Vec::with_capacity(infer.inputs.len());
    for tensor in &infer.inputs {
        let Some(size) = tensor.parameters.binary_data_size else {
            sent.push(None);
            continue;
        };
        let bytes = usize::try_from(size)
            .ok()
            .and_then(|size| binary.split_off(..size))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "input {:?}: binary_data_size is {size} but only {} bytes follow",
                    tensor.name,
                    binary.len()
                ))
            })?;
        sent.push(Some(
            tensor.sent_binary(bytes).map_err(Error::invalid_input)?,
        ));
    }
    if !binary.is_empty() {
        return Err(Error::invalid_input(format!(
            "{} bytes follow the last binary input: the binary_data_size values and the body disagree",
            binary.len()
        )));
    }
    Ok(sent)
}

/// One output's answer on the plain routes.
enum Answer<'a> {
    Nested(Nested<'a>),
    Zipped(Zipped<'a>),
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Nested(nested) => nested.serialize(serializer),
            Answer::Zipped(zipped) => zipped.serialize(serializer),
        }
    }
}

/// Several outputs: one JSON object keyed by output name, in graph order.
struct ByName<'a>(&'a [(&'a str, Answer<'a>)]);

impl Serialize for ByName<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, answer) in self.0 {
            map.serialize_entry(name, answer)?;
        }
        map.end()
    }
}

/// A v2 answer.
#[derive(Serialize)]
struct InferAnswer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputTensor<'a>>,
}

/// One v2 output tensor: its values as JSON `data`, or as binary data
/// after the JSON, whose size its parameters give.
#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Flat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
}

/// Where an output's binary data is: its size in bytes, in output order.
#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl Model for OnnxModel {
    /// The host hands an ONNX model binary tensors as bytes whatever this
    /// says; said, so that the component declares what it does.
    const READS_BINARY_TENSORS: bool = true;

    fn load(config: &Config) -> Result<Self, Error> {
        let file = model_file(config)?;
        let path = std::path::Path::new(MODEL_DIR).join(&file);
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::invalid_input(format!("cannot read {file} from the package: {e}"))
        })?;
        OnnxModel::from_bytes(&bytes).map_err(|e| match e {
            Error::InvalidInput(m) => Error::invalid_input(format!("{file}: {m}")),
            other => other,
        })
    }

    fn predict(&self, request: Request) -> Result<Response, Error> {
        if let Some(length) = mme_oip::framed_header_length(&request.content_type) {
            let (header, binary) = request.body.split_at_checked(length).ok_or_else(|| {
                Error::invalid_input("the binary request is shorter than its JSON header")
            })?;
            self.predict_v2(header, binary, true)
        } else if request.is_open_inference() {
            self.predict_v2(&request.body, &[], false)
        } else {
            self.predict_plain(&request)
        }
    }

    fn metadata(&self) -> Value {
        self.describe()
    }
}

export_model!(OnnxModel);
