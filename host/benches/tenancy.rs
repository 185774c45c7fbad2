//! What tenancy adds to each request on the hot path: finding the caller
//! by its bearer token (a SHA-256 of the token, one map lookup, one
//! constant-time comparison), checking that its tenant owns the model (its
//! name patterns) and that its key may infer, with its rate limiter. The
//! tenants file is the one `bench/tenants.sh` serves with: 100 tenants,
//! 201 keys. What a request costs the server in all is in BENCHMARKS.md
//! ("Tenancy on the hot path"), so the two can be set side by side.
//!
//! `cargo bench -p mme-host --bench tenancy`

// `criterion_group!` generates public items without docs.
#![allow(missing_docs)]

use std::io::Write;

use criterion::{Criterion, criterion_group, criterion_main};
use mme_host::api::tenancy::{Action, Tenancy};

/// 100 tenants, each with an inference key and a management key (given as
/// their SHA-256, as a production file gives them), and an admin key.
fn tenants_file() -> String {
    let digest = |token: &str| {
        use sha2::Digest;
        format!("sha256:{:x}", sha2::Sha256::digest(token.as_bytes()))
    };
    let mut text = format!("[admin]\nkeys = [\"{}\"]\n", digest("admin-token"));
    for index in 0..100 {
        text.push_str(&format!(
            "[tenants.t{index}]\nmodels = [\"t{index}-*\"]\ninference_keys = [\"{}\"]\nmanagement_keys = [\"{}\"]\nrequests_per_second = 1000000000\n",
            digest(&format!("t{index}-infer")),
            digest(&format!("t{index}-manage")),
        ));
    }
    text
}

fn tenancy(c: &mut Criterion) {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(tenants_file().as_bytes())
        .expect("the tenants file");
    let tenancy = Tenancy::load(file.path()).expect("a valid tenants file");
    let mut group = c.benchmark_group("tenancy");
    group.bench_function("admit_one_inference", |b| {
        b.iter(|| {
            let caller = tenancy
                .identify(Some(std::hint::black_box("t57-infer")))
                .expect("a known key");
            assert!(caller.sees(std::hint::black_box("t57-model-123")));
            caller.permit(Action::Infer).expect("allowed");
            caller
        })
    });
    group.bench_function("refuse_an_unknown_key", |b| {
        b.iter(|| tenancy.identify(Some(std::hint::black_box("not-a-key"))))
    });
    group.finish();
}

criterion_group!(benches, tenancy);
criterion_main!(benches);
