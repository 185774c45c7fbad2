//! End to end: hostile packages, hostile loads and hostile HTTP each get a
//! precise error, cost nothing to the other models, and write nothing
//! outside the server's own folders.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, delete, error_kind_and_message, faulty_folder, get, guest, post_json};
use flate2::Compression;
use flate2::write::GzEncoder;
use mme_host::package::archive::testing::hostile_archive;
use serde_json::{Value, json};
use tar::EntryType;

const ROW: &str = "[[0.5]]";

/// A tar entry whose header claims `size` bytes, gzipped, with only a
/// little data behind it: a bomb that the header alone gives away.
fn lying_size_archive(size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path("model.wasm").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
    gzip.write_all(header.as_bytes()).unwrap();
    gzip.write_all(&[0u8; 4096]).unwrap();
    gzip.finish().unwrap()
}

/// A component that is valid wasm but implements another world: it exports
/// one function, `hello`, and nothing of `mme:model`.
const WRONG_WORLD: &str = r#"(component
  (core module $m (func (export "f") (result i32) i32.const 1))
  (core instance $i (instantiate $m))
  (func (export "hello") (result u32) (canon lift (core func $i "f"))))"#;

#[tokio::test(flavor = "multi_thread")]
async fn hostile_packages_and_loads_fail_alone_with_precise_errors() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("neighbour.tar.gz")).unwrap();
    let component = {
        let dir = work.path().join("unpacked");
        std::fs::create_dir_all(&dir).unwrap();
        mme_host::package::archive::unpack(&guest("linear-regression"), &dir, &Default::default())
            .unwrap();
        std::fs::read(dir.join("model.wasm")).unwrap()
    };
    let archive = |name: &str, entries: &[(&str, EntryType, &[u8])]| {
        std::fs::write(
            store.join(format!("{name}.tar.gz")),
            hostile_archive(entries),
        )
        .unwrap();
    };
    archive(
        "traversal",
        &[
            ("model.wasm", EntryType::Regular, &component),
            ("../evil", EntryType::Regular, b"x"),
        ],
    );
    archive("absolute", &[("/tmp/mme-evil", EntryType::Regular, b"x")]);
    archive("symlink", &[("model.wasm", EntryType::Symlink, b"")]);
    archive("hardlink", &[("model.wasm", EntryType::Link, b"")]);
    archive("device", &[("null", EntryType::Char, b"")]);
    std::fs::write(store.join("bomb.tar.gz"), lying_size_archive(5 << 30)).unwrap();
    archive(
        "no-wasm",
        &[("serving.properties", EntryType::Regular, b"minWorkers=1\n")],
    );
    archive(
        "not-wasm",
        &[("model.wasm", EntryType::Regular, b"hello, not wasm")],
    );
    archive(
        "core-module",
        &[("model.wasm", EntryType::Regular, b"\0asm\x01\0\0\0")],
    );
    archive(
        "wrong-world",
        &[(
            "model.wasm",
            EntryType::Regular,
            &wat::parse_str(WRONG_WORLD).unwrap(),
        )],
    );
    for (name, properties) in [
        ("bad-value", &b"batch_size=lots\n"[..]),
        ("duplicate-key", b"batch_size=2\nbatch_size=3\n"),
        ("binary-properties", b"\xff\xfe\x00\x01garbage"),
    ] {
        archive(
            name,
            &[
                ("model.wasm", EntryType::Regular, &component),
                ("serving.properties", EntryType::Regular, properties),
            ],
        );
    }
    std::fs::write(store.join("many-entries.tar.gz"), {
        let names: Vec<String> = (0..20_000).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, EntryType, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), EntryType::Regular, &b""[..]))
            .collect();
        hostile_archive(&entries)
    })
    .unwrap();
    faulty_folder(&store, "panics-in-load", "option.panic_load=true\n");
    faulty_folder(
        &store,
        "slow-load",
        "model_loading_timeout=1\noption.load_ms=20000\n",
    );
    faulty_folder(&store, "chatty", "");
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;

    for (name, words) in [
        ("traversal", "`..`"),
        ("absolute", "absolute"),
        ("symlink", "symlink"),
        ("hardlink", "hardlink"),
        ("device", "character device"),
        ("bomb", "decompression bomb"),
        ("many-entries", "entries"),
        ("no-wasm", "model.wasm"),
        ("not-wasm", "not WebAssembly"),
        ("core-module", "core wasm module"),
        ("wrong-world", "mme:model"),
        ("bad-value", "batch_size"),
        ("duplicate-key", "batch_size"),
        ("binary-properties", "serving.properties"),
    ] {
        let (status, _, body) = server.predict(name, ROW).await;
        let (kind, message) = error_kind_and_message(&body);
        assert_eq!(
            (status, kind.as_str()),
            (400, "InvalidPackage"),
            "{name}: {body}"
        );
        assert!(
            message.contains(name) && message.contains(words),
            "{name}: {message}"
        );
        // Registering the same package by url is refused the same way.
        let url = format!("file://{}", store.join(format!("{name}.tar.gz")).display());
        let (status, body) = post_json(
            &server,
            "/models",
            &format!(r#"{{"model_name":"{name}-by-url","url":"{url}"}}"#),
        )
        .await;
        assert_eq!(status, 400, "{name} by url: {body}");
        assert_eq!(
            server.predict("neighbour", ROW).await.0,
            200,
            "after {name}"
        );
    }
    assert!(!work.path().join("evil").exists() && !store.join("evil").exists());
    assert!(!Path::new("/tmp/mme-evil").exists());

    let (status, _, body) = server.predict("panics-in-load", ROW).await;
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!((status, kind.as_str()), (500, "ModelLoadFailed"), "{body}");
    assert!(message.contains("crashed"), "{message}");

    let started = Instant::now();
    let (status, _, body) = server.predict("slow-load", ROW).await;
    let (kind, message) = error_kind_and_message(&body);
    assert_eq!((status, kind.as_str()), (500, "ModelLoadFailed"), "{body}");
    assert!(message.contains("model_loading_timeout"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the load deadline stopped it"
    );

    // 16 MiB of stdout and stderr: the request succeeds, and the log takes
    // only the model's share of it, then says what it dropped.
    assert_eq!(server.predict("chatty", "\"ok\"").await.0, 200);
    let log_before = server.log_text().len();
    let (status, _, body) = server.predict("chatty", "\"flood\"").await;
    assert_eq!((status, body.as_str()), (200, "\"flooded\""));
    assert_eq!(server.predict("chatty", "\"ok\"").await.0, 200);
    let grown = server.log_text().len() - log_before;
    assert!(
        grown < 1 << 20,
        "the log grew {grown} bytes for 16 MiB of output"
    );
    let log = server.log_text();
    assert!(
        log.contains("output reached the log cap"),
        "{}",
        &log[log_before..]
    );

    // Describe tells a failed model from an unknown one, and DELETE forgets it.
    let (status, body) = get(&server, "/models/not-wasm").await;
    let described: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &described["status"]),
        (200, &json!("FAILED")),
        "{body}"
    );
    assert_eq!(described["error"]["type"], "InvalidPackage", "{body}");
    assert!(
        described["failedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    assert_eq!(delete(&server, "/models/not-wasm").await, 200);
    assert_eq!(get(&server, "/models/not-wasm").await.0, 404);

    // An asynchronous registration is PENDING while it loads, then FAILED.
    let url = format!("file://{}", store.join("slow-load").display());
    let (status, body) = post_json(
        &server,
        &format!("/models?url={url}&model_name=later&synchronous=false"),
        "",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (_, body) = get(&server, "/models/later").await;
    assert!(body.contains("\"PENDING\""), "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let described = loop {
        let (_, body) = get(&server, "/models/later").await;
        if !body.contains("PENDING") || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        described.contains("\"FAILED\"") && described.contains("model_loading_timeout"),
        "{described}"
    );
    // A name that is loaded is refused at once, not after a 202.
    assert_eq!(server.predict("neighbour", ROW).await.0, 200);
    let url = format!("file://{}", store.join("neighbour.tar.gz").display());
    let (status, body) = post_json(
        &server,
        &format!("/models?url={url}&model_name=neighbour&synchronous=false"),
        "",
    )
    .await;
    assert_eq!(status, 409, "{body}");

    assert_eq!(server.predict("neighbour", ROW).await.0, 200);
    let host_panics: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("panicked") && !line.contains("mme::guest"))
        .collect();
    assert!(host_panics.is_empty(), "{host_panics:?}");
}

/// Sends `request` as raw bytes, exactly as written, and returns the
/// status and the body: HTTP clients would normalise the hostile paths.
fn raw_exchange(url: &str, request: &str) -> (u16, String) {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_string())
}

fn request(method: &str, path: &str, content_type: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_http_gets_a_clear_json_error_on_every_route() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("neighbour.tar.gz")).unwrap();
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--max-request-bytes", "4096"],
    )
    .await;
    let long = "m".repeat(10_000);
    let json = "application/json";
    let cases: Vec<(String, u16, &str)> = vec![
        (
            request("POST", "/predictions/..", json, ROW),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", "/predictions/.hidden", json, ROW),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", "/predictions/a%2Fb", json, ROW),
            400,
            "InvalidModelName",
        ),
        // A name is never read as a name and a version.
        (
            request("POST", "/predictions/a%2F2", json, ROW),
            400,
            "InvalidModelName",
        ),
        (
            request("GET", "/models/a%2F2", json, ""),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", "/predictions/neighbour/01", json, ROW),
            400,
            "InvalidModelVersion",
        ),
        (
            request("POST", "/predictions/neighbour/%2e%2e", json, ROW),
            400,
            "InvalidModelVersion",
        ),
        (
            request("DELETE", "/models/neighbour/18446744073709551616", json, ""),
            400,
            "InvalidModelVersion",
        ),
        (
            request("POST", "/predictions/neighbour/2", json, ROW),
            404,
            "ModelNotFound",
        ),
        (
            request("POST", "/predictions/%2e%2e%2fetc", json, ROW),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", "/predictions/a%00b", json, ROW),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", &format!("/predictions/{long}"), json, ROW),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", "/models/a%2Fb/invoke", json, ROW),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", "/v2/models/..%2f..%2fetc/infer", json, "{}"),
            400,
            "InvalidModelName",
        ),
        (
            request("GET", "/models/..", json, ""),
            400,
            "InvalidModelName",
        ),
        (
            request("DELETE", "/models/a%00b", json, ""),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", "/invocations?model_name=..%2Fetc", json, ROW),
            400,
            "InvalidModelName",
        ),
        (
            request("POST", "/models", json, "{not json"),
            400,
            "InvalidRequest",
        ),
        (
            request("POST", "/models", json, r#"{"url": 7}"#),
            400,
            "InvalidRequest",
        ),
        (
            request("POST", "/models", "text/plain", r#"{"url":"x"}"#),
            415,
            "UnsupportedMediaType",
        ),
        (
            request(
                "POST",
                "/models?url=file:///etc/passwd&model_name=etc",
                json,
                "",
            ),
            400,
            "InvalidPackage",
        ),
        (
            request(
                "POST",
                "/predictions/neighbour",
                json,
                &"[[0.5]],".repeat(1000),
            ),
            413,
            "PayloadTooLarge",
        ),
        (
            request("POST", "/predictions/neighbour", json, "{malformed"),
            400,
            "InvalidInput",
        ),
        (
            request("POST", "/predictions/neighbour", "image/png", "\u{1}PNG"),
            400,
            "InvalidInput",
        ),
        (
            request("GET", "/no/such/route", json, ""),
            404,
            "UnknownRoute",
        ),
        (
            request("PUT", "/predictions/neighbour", json, ROW),
            405,
            "MethodNotAllowed",
        ),
    ];
    for (raw, status, kind) in &cases {
        let (got, body) = raw_exchange(&server.url, raw);
        let first_line = raw.lines().next().unwrap_or_default();
        let shown = &first_line[..first_line.len().min(80)];
        let (got_kind, message) = error_kind_and_message(&body);
        assert_eq!(
            (got, got_kind.as_str()),
            (*status, *kind),
            "{shown}: {body}"
        );
        assert!(!message.is_empty(), "{shown}: {body}");
        assert!(
            body.len() < 2048,
            "{shown}: the error quotes too much: {} bytes",
            body.len()
        );
        assert_eq!(
            server.predict("neighbour", ROW).await.0,
            200,
            "after {shown}"
        );
    }
    assert!(!work.path().join("etc").exists());
    assert!(!server.log_text().contains("panicked"));
}
