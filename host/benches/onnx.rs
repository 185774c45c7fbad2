//! The ONNX engine's cost per prediction, inside its sandbox: a `predict`
//! call on an instance of the engine, JSON decoding and encoding included
//! (and, as `{model}_binary`, with the rows as Triton's binary FP32 tensor),
//! with batches of 1 and 64 rows, for the models `bench/onnx.sh` compares
//! with onnxruntime (a linear model, a 100-tree random forest, a 100-tree
//! XGBoost model and an MLP).
//!
//! `MME_ONNX_MODELS=$PWD/target/onnx-models cargo bench -p mme-host --bench onnx`
//! (after `cargo xtask test` or `bench/onnx.sh`, which make the models and
//! put the engine beside `target/release/mme`).

// `criterion_group!` generates public items without docs.
#![allow(missing_docs)]

use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mme_host::package::{Limits, Package};
use mme_host::registry::sandbox_for;
use mme_host::runtime::{Instance, Request, Runtime, RuntimeConfig, Tiering};

/// The models compared with onnxruntime, by the name make_models.py gives them.
const MODELS: &[&str] = &[
    "linear_regression",
    "random_forest_regressor",
    "xgboost_regressor",
    "mlp_regressor",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A request of `rows` rows of `features` values (the rows of the model's record).
fn request(rows: &serde_json::Value, count: usize) -> Request {
    let rows = rows.as_array().expect("rows");
    let batch: Vec<&serde_json::Value> = rows.iter().cycle().take(count).collect();
    Request {
        content_type: "application/json".into(),
        accept: String::new(),
        body: serde_json::to_vec(&batch).expect("json"),
        attributes: String::new(),
    }
}

/// The same rows as a v2 request with Triton's binary FP32 tensor that asks
/// for binary outputs, as `tritonclient` sends it by default and the host
/// passes it to the engine: no JSON numbers to parse or print, as
/// onnxruntime is given a ready array and gives one back.
fn binary_request(rows: &serde_json::Value, count: usize) -> Request {
    let rows = rows.as_array().expect("rows");
    let batch: Vec<&serde_json::Value> = rows.iter().cycle().take(count).collect();
    let features = batch[0].as_array().map_or(1, Vec::len);
    let mut data = Vec::new();
    for row in &batch {
        for value in row.as_array().expect("a row") {
            let x = value.as_f64().unwrap_or(f64::NAN) as f32;
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    let header = serde_json::json!({"inputs": [{"name": "X", "shape": [count, features],
        "datatype": "FP32", "parameters": {"binary_data_size": data.len()}}],
        "parameters": {"binary_data_output": true}});
    let mut body = serde_json::to_vec(&header).expect("json");
    let header_length = body.len();
    body.extend_from_slice(&data);
    Request {
        content_type: mme_oip::framed_content_type(header_length),
        accept: String::new(),
        body,
        attributes: String::new(),
    }
}

fn engine(c: &mut Criterion) {
    let models = PathBuf::from(
        std::env::var("MME_ONNX_MODELS")
            .unwrap_or_else(|_| root().join("target/onnx-models").display().to_string()),
    );
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 16,
        cache_dir: Some(root().join("target/bench-cache")),
        onnx_engine: Some(root().join("target/release/mme-onnx.wasm")),
        tiering: Tiering::OptimizedOnly,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let scratch = tempfile::tempdir().expect("scratch");
    let mut group = c.benchmark_group("onnx_engine");
    for name in MODELS {
        let folder = scratch.path().join(name);
        std::fs::create_dir_all(&folder).expect("folder");
        std::fs::copy(
            models.join(format!("{name}.onnx")),
            folder.join("model.onnx"),
        )
        .expect("run `cargo xtask test` or bench/onnx.sh first to make the models");
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(models.join(format!("{name}.json"))).expect("record"),
        )
        .expect("record json");
        let mut package =
            Package::open(&folder, scratch.path(), &Limits::default()).expect("package");
        let compiled = package.compile(&runtime, 1 << 30).expect("engine");
        let sandbox = sandbox_for(name, &package, &runtime, 64 << 20);
        let mut instance: Instance = runtime.instantiate(&compiled, &sandbox).expect("instance");
        instance.load(&package.load_options()).expect("load");
        for rows in [1usize, 64] {
            let forms = [
                (name.to_string(), request(&record["rows"], rows)),
                (
                    format!("{name}_binary"),
                    binary_request(&record["rows"], rows),
                ),
            ];
            for (id, request) in forms {
                let batch = [request];
                group.throughput(Throughput::Elements(rows as u64));
                group.bench_with_input(BenchmarkId::new(id, rows), &batch, |b, batch| {
                    b.iter(|| {
                        let answers = instance.predict(batch).expect("predict");
                        assert!(answers[0].is_ok(), "{:?}", answers[0]);
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
