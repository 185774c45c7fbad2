//! End to end: models loaded on demand from a real S3-compatible server
//! (`s3s-fs` on loopback), through the local package cache.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::path::Path;
use std::time::Duration;

use common::s3::{CuttingProxy, S3Server};
use common::{Server, delete, error_kind_and_message, guest, post_json};

const BUCKET: &str = "models";
const ROW: &str = "[[0.5]]";

/// An S3 server holding `count` copies of the example under `models/prod/`.
fn store_with_models(root: &Path, count: usize) -> S3Server {
    let s3 = S3Server::start(root);
    let package = std::fs::read(guest("linear-regression")).unwrap();
    for index in 0..count {
        s3.put(BUCKET, &format!("prod/m{index}.tar.gz"), &package);
    }
    s3
}

async fn serve_from(s3: &S3Server, cache: &Path, extra: &[&str]) -> Server {
    let mut args: Vec<String> = s3.serve_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with_env("s3://models/prod", cache, &args, &S3Server::env()).await
}

/// The packages kept in the package cache, by their recorded url.
fn cached_urls(cache: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cache.join("packages")) else {
        return Vec::new();
    };
    let mut urls: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            record["url"].as_str().unwrap().to_string()
        })
        .collect();
    urls.sort();
    urls
}

#[tokio::test(flavor = "multi_thread")]
async fn models_load_from_s3_on_demand_and_reload_from_the_cache() {
    let work = tempfile::tempdir().unwrap();
    let s3 = store_with_models(&work.path().join("s3"), 2);
    let cache = work.path().join("cache");
    let server = serve_from(&s3, &cache, &[]).await;

    let (status, _, body) = server.predict("m0", ROW).await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
    assert_eq!(server.metric("mme_package_downloads_total").await, 1.0);
    assert_eq!(cached_urls(&cache), vec!["s3://models/prod/m0.tar.gz"]);
    let describe = common::get(&server, "/models/m0").await.1;
    assert!(
        describe.contains("s3://models/prod/m0.tar.gz"),
        "{describe}"
    );

    // A missing key is a 404 that names it.
    let (status, _, body) = server.predict("absent", ROW).await;
    assert_eq!(status, 404, "{body}");
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!(kind, "ModelNotFound");
    assert!(
        message.contains("s3://models/prod/absent.tar.gz"),
        "{message}"
    );

    // Unloaded, then asked for again: the package comes from the cache.
    assert_eq!(delete(&server, "/models/m0").await, 200);
    let (status, _, body) = server.predict("m0", ROW).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.metric("mme_package_downloads_total").await, 1.0);
    assert_eq!(server.metric("mme_package_cache_hits_total").await, 1.0);
    assert!(
        server
            .metric("mme_model_load_phase_seconds_count{phase=\"download\"}")
            .await
            >= 2.0
    );

    // A restart keeps the cache: the S3 server is not needed for m0 now.
    drop(server);
    let mut s3 = s3;
    s3.stop();
    let server = serve_from(&s3, &cache, &[]).await;
    let (status, _, body) = server.predict("m0", ROW).await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
    assert_eq!(server.metric("mme_package_downloads_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_requests_download_once() {
    let work = tempfile::tempdir().unwrap();
    let s3 = store_with_models(&work.path().join("s3"), 1);
    let server = serve_from(&s3, &work.path().join("cache"), &[]).await;
    let calls: Vec<_> = (0..24).map(|_| server.predict("m0", ROW)).collect();
    for (status, _, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(server.metric("mme_package_downloads_total").await, 1.0);
    assert_eq!(
        server.metric("mme_model_loads_total{result=\"ok\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_goes_down_gives_503_and_the_server_recovers() {
    let work = tempfile::tempdir().unwrap();
    let mut s3 = store_with_models(&work.path().join("s3"), 3);
    let server = serve_from(&s3, &work.path().join("cache"), &[]).await;
    assert_eq!(server.predict("m0", ROW).await.0, 200);

    s3.stop();
    // Every S3 call has a timeout: a bounded client wait shows there is no hang.
    let response = reqwest::Client::new()
        .post(format!("{}/predictions/m1", server.url))
        .header("content-type", "application/json")
        .body(ROW)
        .timeout(Duration::from_secs(45))
        .send()
        .await
        .expect("an answer while S3 is down, not a hang");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap(),
        "1"
    );
    let (kind, message) = error_kind_and_message(&response.text().await.unwrap());
    assert_eq!(kind, "StoreUnavailable");
    assert!(message.contains("s3://models/prod/m1.tar.gz"), "{message}");
    // The loaded model does not need the store.
    assert_eq!(server.predict("m0", ROW).await.0, 200);

    s3.resume();
    let (status, _, body) = server.predict("m1", ROW).await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_object_is_a_clear_error_and_is_not_cached() {
    let work = tempfile::tempdir().unwrap();
    let s3 = store_with_models(&work.path().join("s3"), 0);
    let package = std::fs::read(guest("linear-regression")).unwrap();
    s3.put(BUCKET, "prod/broken.tar.gz", &package[..package.len() / 2]);
    s3.put(BUCKET, "prod/garbage.tar.gz", b"\x1f\x8b not really gzip");
    let cache = work.path().join("cache");
    let server = serve_from(&s3, &cache, &[]).await;
    for name in ["broken", "garbage"] {
        let (status, _, body) = server.predict(name, ROW).await;
        assert_eq!(status, 400, "{body}");
        let (kind, message) = error_kind_and_message(&body);
        assert_eq!(kind, "InvalidPackage");
        assert!(
            message.contains(&format!("s3://models/prod/{name}.tar.gz")),
            "{message}"
        );
    }
    assert_eq!(server.metric("mme_package_downloads_total").await, 2.0);
    assert!(cached_urls(&cache).is_empty(), "{:?}", cached_urls(&cache));
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("packages"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_models_loads_one_s3_object_by_url() {
    let work = tempfile::tempdir().unwrap();
    let s3 = store_with_models(&work.path().join("s3"), 0);
    s3.put(
        BUCKET,
        "team/regressor.tar.gz",
        &std::fs::read(guest("linear-regression")).unwrap(),
    );
    let store = work.path().join("empty-store");
    std::fs::create_dir_all(&store).unwrap();
    let server = Server::start_with_env(
        &store,
        &work.path().join("cache"),
        &["--s3-endpoint", &s3.endpoint(), "--s3-path-style"],
        &S3Server::env(),
    )
    .await;
    let (status, body) = post_json(
        &server,
        "/models?url=s3://models/team/regressor.tar.gz&model_name=reg",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", server.log_text());
    assert_eq!(server.predict("reg", ROW).await.0, 200);

    let (status, body) = post_json(
        &server,
        "/models",
        r#"{"model_name":"gone","url":"s3://models/team/gone.tar.gz"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("s3://models/team/gone.tar.gz"), "{body}");

    let (status, body) = post_json(
        &server,
        "/models",
        r#"{"model_name":"bad","url":"s3://NOT_A_BUCKET/k.tar.gz"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_kind_and_message(&body).0, "InvalidRequest");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_credentials_says_so() {
    let work = tempfile::tempdir().unwrap();
    let s3 = store_with_models(&work.path().join("s3"), 1);
    let nowhere = work.path().join("no-such-file").display().to_string();
    let server = Server::start_with_env(
        "s3://models/prod",
        &work.path().join("cache"),
        &["--s3-endpoint", &s3.endpoint(), "--s3-path-style"],
        &[
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_SHARED_CREDENTIALS_FILE", &nowhere),
            ("AWS_CONFIG_FILE", &nowhere),
            ("AWS_REGION", "us-east-1"),
        ],
    )
    .await;
    let (status, _, body) = server.predict("m0", ROW).await;
    assert_eq!(status, 502, "{body}");
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!(kind, "StoreError");
    assert!(message.contains("no AWS credentials"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_cut_short_is_retried_and_a_store_that_always_cuts_is_a_clear_503() {
    let work = tempfile::tempdir().unwrap();
    let s3 = store_with_models(&work.path().join("s3"), 2);
    // Packages are about 90 KiB: every download is cut after 32 KiB.
    let proxy = CuttingProxy::start(&s3, 32 << 10, 1).await;
    let cache = work.path().join("cache");
    let args = proxy.serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_env("s3://models/prod", &cache, &args, &S3Server::env()).await;

    let (status, _, body) = server.predict("m0", ROW).await;
    assert_eq!(status, 200, "one cut is retried: {body}");
    assert!(server.log_text().contains("download broke off; retrying"));
    assert_eq!(cached_urls(&cache), ["s3://models/prod/m0.tar.gz"]);

    proxy.set_cuts(u32::MAX);
    let started = std::time::Instant::now();
    let (status, _, body) = server.predict("m1", ROW).await;
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!((status, kind.as_str()), (503, "StoreUnavailable"), "{body}");
    assert!(message.contains("s3://models/prod/m1.tar.gz"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        cached_urls(&cache),
        ["s3://models/prod/m0.tar.gz"],
        "no part is kept"
    );
    assert_eq!(
        package_files(&cache),
        2,
        "m0's package and record, no partial download"
    );
    assert_eq!(
        server.predict("m0", ROW).await.0,
        200,
        "the loaded model serves on"
    );

    proxy.set_cuts(0);
    assert_eq!(
        server.predict("m1", ROW).await.0,
        200,
        "and m1 loads once the store heals"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_for_the_package_cache_is_507_and_costs_the_other_models_nothing() {
    let work = tempfile::tempdir().unwrap();
    let s3 = store_with_models(&work.path().join("s3"), 2);
    let cache = work.path().join("cache");
    let packages = cache.join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    // A 150 KiB file system for the packages, in a mount namespace of the
    // server's own: room for one package of about 90 KiB, not two.
    let mut wrapper = std::process::Command::new("unshare");
    wrapper
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=150k tmpfs "$0" && exec "$@""#);
    wrapper.arg(&packages).arg(env!("CARGO_BIN_EXE_mme"));
    let args = s3.serve_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server =
        Server::start_from(wrapper, "s3://models/prod", &cache, &args, &S3Server::env()).await;

    assert_eq!(server.predict("m0", ROW).await.0, 200);
    let (status, _, body) = server.predict("m1", ROW).await;
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!((status, kind.as_str()), (507, "PackageCacheFull"), "{body}");
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        message.contains("--package-cache-size"),
        "says what to do: {message}"
    );
    assert_eq!(
        server.predict("m0", ROW).await.0,
        200,
        "the loaded model serves on"
    );
    assert!(server.stop(), "SIGTERM ends the server with status 0");
}

/// How many files the package cache holds.
fn package_files(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("packages")).map_or(0, |entries| entries.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repository_index_lists_the_s3_stores_packages() {
    let work = tempfile::tempdir().unwrap();
    let s3 = store_with_models(&work.path().join("s3"), 3);
    // Not packages of this store: another prefix, and not an archive.
    s3.put(BUCKET, "other/x.tar.gz", b"x");
    s3.put(BUCKET, "prod/readme.txt", b"x");
    let server = serve_from(&s3, &work.path().join("cache"), &[]).await;
    let (status, _, _) = server.predict("m1", ROW).await;
    assert_eq!(status, 200);
    let (status, body) = post_json(&server, "/v2/repository/index", "").await;
    assert_eq!(status, 200, "{body}");
    let entries: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed: Vec<(&str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("m0", "UNAVAILABLE"),
            ("m1", "READY"),
            ("m2", "UNAVAILABLE")
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn numbered_versions_load_from_s3_as_from_a_folder() {
    let work = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&work.path().join("s3"));
    // Triton's layout in S3: version 1 is the example, version 2 the echo guest.
    s3.put(
        BUCKET,
        "prod/v/1.tar.gz",
        &std::fs::read(guest("linear-regression")).unwrap(),
    );
    s3.put(
        BUCKET,
        "prod/v/2.tar.gz",
        &std::fs::read(guest("echo")).unwrap(),
    );
    let server = serve_from(&s3, &work.path().join("cache"), &[]).await;
    // Without a version, the highest in the store: the echo guest.
    let (status, body) = post_json(&server, "/predictions/v", ROW).await;
    assert_eq!((status, body.as_str()), (200, ROW), "{}", server.log_text());
    let (status, body) = post_json(&server, "/predictions/v/1", ROW).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body, ROW, "version 1 is the example, which computes");
    let (status, body) = post_json(&server, "/predictions/v/3", ROW).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        error_kind_and_message(&body)
            .1
            .contains("s3://models/prod/v/3.tar.gz"),
        "{body}"
    );
}
