//! The guest's predictions match the native linfa model to 1e-5, for JSON
//! and CSV bodies, run through the real host runtime.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use linfa::traits::Predict;
use linfa_linear::FittedLinearRegression;
use mme_host::package::{Limits, Package};
use mme_host::runtime::{
    CountingAllocator, INSTANCE_HOST_BYTES, LogBudget, Request, Runtime, RuntimeConfig, Sandbox,
};
use ndarray::Array2;

/// As in the `mme` binary: the host side of each instance is measured.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn package_path() -> PathBuf {
    let dir = std::env::var_os("MME_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mme-examples"));
    let path = dir.join("linear-regression.tar.gz");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

fn json_request(content_type: &str, body: impl Into<Vec<u8>>) -> Request {
    Request {
        content_type: content_type.into(),
        accept: String::new(),
        body: body.into(),
        attributes: String::new(),
    }
}

#[test]
fn guest_predictions_match_native_linfa() {
    let scratch = tempfile::tempdir().unwrap();
    let mut package = Package::open(&package_path(), scratch.path(), &Limits::default()).unwrap();
    let bytes = std::fs::read(package.dir().join("model.bin")).unwrap();
    let (native, _): (FittedLinearRegression<f64>, _) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert!(
        (native.params()[0] - 2.0).abs() < 0.1,
        "the trainer fits y = 2x + 1"
    );
    assert!((native.intercept() - 1.0).abs() < 0.1);

    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let compiled = runtime
        .compile(&package.take_wasm(1 << 30).unwrap())
        .unwrap();
    let sandbox = Sandbox {
        model: Arc::from("linear-regression"),
        dir: package.dir().to_path_buf(),
        max_memory_bytes: 64 << 20,
        timeout: Duration::from_secs(10),
        load_timeout: Duration::from_secs(10),
        max_response_bytes: 1 << 20,
        log_budget: Arc::new(LogBudget::new(1 << 16, Duration::from_secs(10))),
        memory: runtime.instance_memory().granted().child(),
    };
    let mut instance = runtime.instantiate(&compiled, &sandbox).unwrap();
    instance.load(&[]).unwrap();
    // The instance's linear memory is counted, and given back when it goes.
    assert!(
        sandbox.memory.bytes() >= 64 << 10,
        "{}",
        sandbox.memory.bytes()
    );
    let memory = runtime.instance_memory();
    assert_eq!(memory.granted().bytes(), sandbox.memory.bytes());
    // Until a sample, the grant is what counts (with the host's side); the
    // pages the pooled instance really holds are far fewer than it was granted.
    let host = memory.host_bytes();
    assert!(
        (4 << 10..=256 << 10).contains(&host) && host != INSTANCE_HOST_BYTES,
        "the instance's host side is measured where it is made: {host} bytes"
    );
    assert_eq!(memory.bytes(), sandbox.memory.bytes() + host);
    assert!(
        memory.sample(Duration::ZERO),
        "the pool's pages can be read"
    );
    assert!(
        memory.bytes() > 0 && memory.bytes() < sandbox.memory.bytes() / 2,
        "{} bytes resident of {} granted",
        memory.bytes(),
        sandbox.memory.bytes()
    );

    let xs: Vec<f64> = (-50..=50).map(|i| f64::from(i) * 0.37).collect();
    let expected = native.predict(&Array2::from_shape_vec((xs.len(), 1), xs.clone()).unwrap());
    let json = serde_json::to_string(&xs.iter().map(|x| vec![*x]).collect::<Vec<_>>()).unwrap();
    let csv: String = xs.iter().map(|x| format!("{x}\n")).collect();
    for request in [
        json_request("application/json", json),
        json_request("text/csv", csv),
    ] {
        let mut results = instance.predict(std::slice::from_ref(&request)).unwrap();
        let response = results.pop().unwrap().unwrap();
        assert_eq!(response.content_type, "application/json");
        let served: Vec<f64> = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(served.len(), expected.len());
        for (s, e) in served.iter().zip(expected.iter()) {
            assert!(
                (s - e).abs() < 1e-5,
                "{}: served {s}, native {e}",
                request.content_type
            );
        }
    }

    let request = json_request("application/json", "[[1.0, 2.0]]");
    let mut results = instance.predict(std::slice::from_ref(&request)).unwrap();
    let error = results.pop().unwrap().unwrap_err();
    assert!(error.to_string().contains("1 feature(s), got 2"), "{error}");
    drop(instance);
    assert_eq!(runtime.instance_memory().granted().bytes(), 0);
    assert!(runtime.instance_memory().sample(Duration::ZERO));
    assert_eq!(
        runtime.instance_memory().bytes(),
        0,
        "a freed slot holds nothing"
    );
}
