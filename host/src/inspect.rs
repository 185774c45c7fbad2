//! `mme inspect`: everything a load does, without serving — unpack, parse
//! the properties, compile, check the world, instantiate, run `load` — and
//! a report of what was found, or the step that failed and why.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;

use crate::package::{Limits, ModelCode, Package, Properties};
use crate::registry::{reads_binary_tensors, sandbox_for};
use crate::runtime::{
    Instance, METADATA_CONTENT_TYPE, OIP_JSON, Request, Runtime, RuntimeConfig, Tiering,
};

/// The step of the check that failed, and why.
#[derive(Debug, Error)]
#[error("{step} failed: {reason}")]
pub struct InspectError {
    /// Which step.
    pub step: &'static str,
    /// Why.
    pub reason: String,
}

fn failed(step: &'static str) -> impl FnOnce(String) -> InspectError {
    move |reason| InspectError { step, reason }
}

/// What a successful check found.
#[derive(Debug)]
pub struct Report {
    /// The files the guest sees under `/model` (every file but `model.wasm`), sorted.
    pub files: Vec<String>,
    /// The parsed settings.
    pub properties: Properties,
    /// What runs the model.
    pub code: ModelCode,
    /// Hex BLAKE3 hash of the component that runs it, the key of its compiled form.
    pub wasm_hash: String,
    /// What the model says it takes and gives (`inputs`, `outputs`).
    pub metadata: Value,
    /// Whether v2 requests reach it with binary tensors as bytes.
    pub reads_binary_tensors: bool,
    /// Time of each step.
    pub compile: Duration,
    /// Time to instantiate.
    pub instantiate: Duration,
    /// Time of the guest's `load`.
    pub load: Duration,
    /// The sample request sent, and the model's answer.
    pub sample: Option<(String, String)>,
}

/// Checks the package at `source` (archive or folder). With `sample`, also
/// sends it as a JSON request and reports the answer; an ONNX model without
/// one gets a request made from its graph's input shapes.
pub fn inspect(
    source: &Path,
    sample: Option<&[u8]>,
    onnx_engine: Option<PathBuf>,
) -> Result<Report, InspectError> {
    let scratch = tempfile::tempdir().map_err(|e| failed("setup")(e.to_string()))?;
    let mut package = Package::open(source, scratch.path(), &Limits::default())
        .map_err(|e| failed("unpack")(e.to_string()))?;
    let files = list_files(package.dir());
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 4,
        onnx_engine,
        // It runs one model once: Winch's code serves, Cranelift's would not pay.
        tiering: Tiering::BaselineOnly,
        ..RuntimeConfig::default()
    })
    .map_err(|e| failed("engine")(e.to_string()))?;
    let started = Instant::now();
    let compiled = package
        .compile(&runtime, Limits::default().max_unpacked_bytes)
        .map_err(|e| failed("compile")(e.to_string()))?;
    let compile = started.elapsed();
    let sandbox = sandbox_for(
        "inspect",
        &package,
        &runtime,
        crate::config::DEFAULT_MAX_RESPONSE_BYTES,
    );
    let started = Instant::now();
    let mut instance = runtime
        .instantiate(&compiled, &sandbox)
        .map_err(|e| failed("instantiate")(e.to_string()))?;
    let instantiate = started.elapsed();
    let started = Instant::now();
    instance
        .load(&package.load_options())
        .map_err(|e| failed("load")(e.to_string()))?;
    let load = started.elapsed();
    let metadata = call(&mut instance, METADATA_CONTENT_TYPE, b"")
        .ok()
        .and_then(|answer| serde_json::from_str(&answer).ok())
        .unwrap_or_else(|| json!({}));
    let request = match sample {
        Some(body) => Some(("application/json", body.to_vec())),
        None => sample_for(&metadata),
    };
    let sample = match request {
        None => None,
        Some((content_type, body)) => {
            let answer = call(&mut instance, content_type, &body)?;
            Some((String::from_utf8_lossy(&body).into_owned(), answer))
        }
    };
    Ok(Report {
        files,
        properties: package.properties.clone(),
        code: package.code().clone(),
        wasm_hash: compiled.hash.clone(),
        reads_binary_tensors: reads_binary_tensors(&package, &compiled),
        metadata,
        compile,
        instantiate,
        load,
        sample,
    })
}

/// Sends one request to the instance and returns the answer's body.
fn call(instance: &mut Instance, content_type: &str, body: &[u8]) -> Result<String, InspectError> {
    let request = Request {
        content_type: content_type.into(),
        accept: String::new(),
        body: body.to_vec(),
        attributes: String::new(),
    };
    let mut results = instance
        .predict(std::slice::from_ref(&request))
        .map_err(|e| failed("predict")(e.to_string()))?;
    match results.pop() {
        Some(Ok(response)) => Ok(String::from_utf8_lossy(&response.body).into_owned()),
        Some(Err(error)) => Err(failed("predict")(error.to_string())),
        None => Err(failed("predict")("no result".into())),
    }
}

/// The most values a made-up sample may hold: the shapes come from the
/// model, which is untrusted.
const MAX_SAMPLE_VALUES: usize = 1 << 16;

/// A request made from the model's listed inputs: one row of 0.5 (1 for
/// integers, "a" for strings), as JSON rows for one input or a v2 request
/// for several. `None` when the model lists no inputs, or shapes too large
/// for a sample.
fn sample_for(metadata: &Value) -> Option<(&'static str, Vec<u8>)> {
    let inputs = metadata.get("inputs")?.as_array()?;
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        // A dimension of any size (-1) gets one.
        let shape: Vec<usize> = input["shape"]
            .as_array()?
            .iter()
            .map(|d| d.as_u64().map_or(1, |d| d as usize))
            .collect();
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= MAX_SAMPLE_VALUES)?;
        let datatype = input["datatype"].as_str().unwrap_or("FP32");
        let value = match datatype {
            "BYTES" => json!("a"),
            "BOOL" => json!(true),
            t if t.starts_with("FP") => json!(0.5),
            _ => json!(1),
        };
        tensors.push((input["name"].clone(), datatype, shape, vec![value; count]));
    }
    match tensors.as_slice() {
        [] => None,
        [(_, _, shape, data)] => Some((
            "application/json",
            nest(shape, data).to_string().into_bytes(),
        )),
        many => {
            let inputs: Vec<Value> = many
                .iter()
                .map(|(name, datatype, shape, data)| {
                    json!({ "name": name, "shape": shape, "datatype": datatype, "data": data })
                })
                .collect();
            Some((
                OIP_JSON,
                json!({ "inputs": inputs }).to_string().into_bytes(),
            ))
        }
    }
}

/// Flat values as nested lists of `shape`.
fn nest(shape: &[usize], values: &[Value]) -> Value {
    match shape {
        [] => values.first().cloned().unwrap_or(Value::Null),
        [_] => Value::Array(values.to_vec()),
        [_, rest @ ..] => {
            let stride = rest.iter().product::<usize>().max(1);
            Value::Array(
                values
                    .chunks(stride)
                    .map(|chunk| nest(rest, chunk))
                    .collect(),
            )
        }
    }
}

fn list_files(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(root)
                && relative != Path::new(crate::package::WASM_FILE)
            {
                files.push(relative.display().to_string());
            }
        }
    }
    files.sort();
    files
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.properties;
        writeln!(f, "package OK")?;
        writeln!(f, "  /model:       {}", self.files.join(", "))?;
        match &self.code {
            ModelCode::Wasm => writeln!(f, "  model.wasm:   blake3 {}", self.wasm_hash)?,
            ModelCode::Onnx { file } => writeln!(
                f,
                "  engine:       OnnxRuntime (the built-in ONNX engine, blake3 {}) on {file}",
                self.wasm_hash
            )?,
        }
        for (kind, key) in [("input", "inputs"), ("output", "outputs")] {
            for port in self.metadata[key].as_array().into_iter().flatten() {
                writeln!(
                    f,
                    "  {kind:<7}       {} {} {}",
                    port["name"].as_str().unwrap_or("?"),
                    port["datatype"].as_str().unwrap_or("?"),
                    port["shape"]
                )?;
            }
        }
        writeln!(f, "  world:        mme:model/model (exports load, predict)")?;
        writeln!(
            f,
            "  v2 tensors:   {}",
            if self.reads_binary_tensors {
                "binary data reaches the model as bytes"
            } else {
                "binary data reaches the model as JSON numbers (the model does not say it reads bytes)"
            }
        )?;
        writeln!(
            f,
            "  workers:      min {}, max {}",
            p.min_workers,
            p.max_workers
                .map_or("compute threads".to_string(), |m| m.to_string())
        )?;
        writeln!(
            f,
            "  batching:     batch_size {}, max_batch_delay {:?}, job_queue_size {}",
            p.batch_size, p.max_batch_delay, p.job_queue_size
        )?;
        writeln!(f, "  timeout:      {:?}", p.request_timeout)?;
        for (key, value) in &p.options {
            writeln!(f, "  option.{key} = {value}")?;
        }
        for key in &p.unknown_keys {
            writeln!(f, "  warning: unknown key {key:?} is ignored")?;
        }
        writeln!(
            f,
            "  timings:      compile {:?}, instantiate {:?}, load {:?}",
            self.compile, self.instantiate, self.load
        )?;
        if let Some((request, answer)) = &self.sample {
            writeln!(f, "  sample:       {request}")?;
            writeln!(f, "  answer:       {answer}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_made_from_the_listed_shapes_within_a_bound() {
        let one = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]});
        let (kind, body) = sample_for(&one).unwrap();
        assert_eq!(
            (kind, body.as_slice()),
            ("application/json", b"[[0.5,0.5]]".as_slice())
        );
        let two = json!({"inputs": [
            {"name": "a", "datatype": "INT64", "shape": [-1]},
            {"name": "b", "datatype": "BYTES", "shape": [1, 1]}
        ]});
        let (kind, body) = sample_for(&two).unwrap();
        let request: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(kind, OIP_JSON);
        assert_eq!(request["inputs"][1]["data"], json!(["a"]));
        // A model that claims a huge input gets no sample, not a huge allocation.
        for shape in [json!([100000, 100000]), json!([u64::MAX, 2])] {
            let huge = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape}]});
            assert!(sample_for(&huge).is_none(), "{huge}");
        }
        assert!(sample_for(&json!({})).is_none());
    }
}
