//! `mme inspect`: everything a load does, without serving — unpack, parse
//! the properties, compile, check the world, instantiate, run `load` — and
//! a report of what was found, or the step that failed and why.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::package::{Limits, Package, Properties};
use crate::registry::sandbox_for;
use crate::runtime::{Request, Runtime, RuntimeConfig};

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
    /// Size of `model.wasm`.
    pub wasm_bytes: usize,
    /// Hex BLAKE3 hash of `model.wasm`, the key of its compiled form.
    pub wasm_hash: String,
    /// Time of each step.
    pub compile: Duration,
    /// Time to instantiate.
    pub instantiate: Duration,
    /// Time of the guest's `load`.
    pub load: Duration,
    /// The answer to a sample request, when one was given.
    pub sample: Option<String>,
}

/// Checks the package at `source` (archive or folder). With `sample`, also
/// sends it as a JSON request and reports the answer.
pub fn inspect(source: &Path, sample: Option<&[u8]>) -> Result<Report, InspectError> {
    let scratch = tempfile::tempdir().map_err(|e| failed("setup")(e.to_string()))?;
    let mut package = Package::open(source, scratch.path(), &Limits::default())
        .map_err(|e| failed("unpack")(e.to_string()))?;
    let files = list_files(package.dir());
    let wasm = package
        .take_wasm(Limits::default().max_unpacked_bytes)
        .map_err(|e| failed("read model.wasm")(e.to_string()))?;
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .map_err(|e| failed("engine")(e.to_string()))?;
    let started = Instant::now();
    let compiled = runtime
        .compile(&wasm)
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
        .load(&package.properties.options)
        .map_err(|e| failed("load")(e.to_string()))?;
    let load = started.elapsed();
    let sample = match sample {
        None => None,
        Some(body) => {
            let request = Request {
                content_type: "application/json".into(),
                accept: String::new(),
                body: body.to_vec(),
                attributes: String::new(),
            };
            let mut results = instance
                .predict(std::slice::from_ref(&request))
                .map_err(|e| failed("predict")(e.to_string()))?;
            let answer = match results.pop() {
                Some(Ok(response)) => String::from_utf8_lossy(&response.body).into_owned(),
                Some(Err(error)) => return Err(failed("predict")(error.to_string())),
                None => return Err(failed("predict")("no result".into())),
            };
            Some(answer)
        }
    };
    Ok(Report {
        files,
        properties: package.properties.clone(),
        wasm_bytes: wasm.len(),
        wasm_hash: compiled.hash.clone(),
        compile,
        instantiate,
        load,
        sample,
    })
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
        writeln!(
            f,
            "  model.wasm:   {} bytes, blake3 {}",
            self.wasm_bytes, self.wasm_hash
        )?;
        writeln!(f, "  world:        mme:model/model (exports load, predict)")?;
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
        if let Some(sample) = &self.sample {
            writeln!(f, "  sample:       {sample}")?;
        }
        Ok(())
    }
}
