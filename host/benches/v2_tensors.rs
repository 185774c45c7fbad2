//! What a v2 request with Triton's binary tensors costs the host and the
//! example guest together, in the two ways it can reach a guest: turned
//! into JSON by the host (every guest that does not say it reads binary
//! tensors) or handed over as the client framed it (the example, which
//! sets the SDK's `READS_BINARY_TENSORS`). Each iteration reads and checks
//! the request as the host does, converts it or not, runs the guest's
//! `predict`, and names the model in the answer with its output as binary
//! data, as the host does; `/predictions`' plain JSON body is the baseline.
//!
//! `MME_EXAMPLES_DIR=$PWD/target/mme-examples cargo bench -p mme-host --bench v2_tensors`
//! (after `cargo xtask package-examples --out target/mme-examples`);
//! `MME_BENCH_PACKAGE=other.tar.gz` measures another build of the example,
//! such as one from before it could read binary tensors (which then runs
//! only the first two).

// `criterion_group!` generates public items without docs.
#![allow(missing_docs)]

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use mme_host::package::{Limits, Package};
use mme_host::registry::sandbox_for;
use mme_host::runtime::{Instance, Request, Runtime, RuntimeConfig, Tiering};

fn request(content_type: String, body: Vec<u8>) -> Request {
    Request {
        content_type,
        accept: String::new(),
        body,
        attributes: String::new(),
    }
}

/// One row, one feature, as `mme bench --route v2-binary` sends it.
fn framed_body() -> (Vec<u8>, usize) {
    let header = serde_json::json!({"inputs": [{"name": "input-0", "shape": [1, 1],
        "datatype": "FP64", "parameters": {"binary_data_size": 8}}],
        "parameters": {"binary_data_output": true}});
    let mut body = serde_json::to_vec(&header).expect("json");
    let header_length = body.len();
    body.extend_from_slice(&0.5f64.to_le_bytes());
    (body, header_length)
}

fn v2_tensors(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let examples = std::env::var_os("MME_EXAMPLES_DIR")
        .map_or_else(|| root.join("target/mme-examples"), PathBuf::from);
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 4,
        cache_dir: Some(root.join("target/bench-cache")),
        tiering: Tiering::OptimizedOnly,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let scratch = tempfile::tempdir().expect("scratch");
    let source = std::env::var_os("MME_BENCH_PACKAGE")
        .map_or_else(|| examples.join("linear-regression.tar.gz"), PathBuf::from);
    let mut package = Package::open(&source, scratch.path(), &Limits::default())
        .expect("run `cargo xtask package-examples --out target/mme-examples` first");
    let compiled = package.compile(&runtime, 1 << 30).expect("compile");
    let sandbox = sandbox_for("example", &package, &runtime, 64 << 20);
    let mut instance: Instance = runtime.instantiate(&compiled, &sandbox).expect("instance");
    instance.load(&package.load_options()).expect("load");
    let (framed, header_length) = framed_body();
    let length = header_length.to_string();
    let mut run = |request: Request| {
        let mut answers = instance.predict(&[request]).expect("predict");
        answers.pop().expect("an answer").expect("a prediction")
    };
    let named = [("model_name", "example"), ("model_version", "1")];
    let mut group = c.benchmark_group("v2_tensors");
    group.bench_function("predictions_json", |b| {
        b.iter(|| run(request("application/json".into(), b"[[0.5]]".to_vec())).body)
    });
    group.bench_function("binary_as_json", |b| {
        b.iter(|| {
            let read = mme_oip::read_request(framed.clone(), Some(&length)).expect("read");
            let json = read.into_json().expect("json");
            let answer = run(request("application/vnd.oip.v2+json".into(), json));
            // The host names the model and writes the output as bytes.
            let mut answer: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&answer.body).expect("a JSON answer");
            for (key, value) in named {
                answer.insert(key.into(), value.into());
            }
            let tail = mme_oip::encode_response(&mut answer, &mme_oip::BinaryOutputs::all())
                .expect("binary");
            let mut body = serde_json::to_vec(&answer).expect("json");
            body.extend(tail.expect("binary outputs"));
            body
        })
    });
    if !compiled.reads_binary_tensors() {
        group.finish();
        return;
    }
    group.bench_function("binary_as_bytes", |b| {
        b.iter(|| {
            let read = mme_oip::read_request(framed.clone(), Some(&length)).expect("read");
            let (body, header_length) = read.into_binary();
            let header_length = header_length.expect("framed");
            let answer = run(request(mme_oip::framed_content_type(header_length), body));
            // The host names the model in the header the guest framed.
            let length = mme_oip::framed_header_length(&answer.content_type).expect("framed");
            let mut body =
                mme_oip::with_fields_first(&answer.body[..length], &named).expect("a JSON header");
            body.extend_from_slice(&answer.body[length..]);
            body
        })
    });
    group.finish();
}

criterion_group!(benches, v2_tensors);
criterion_main!(benches);
