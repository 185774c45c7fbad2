//! End to end: a guest that misbehaves on command is contained. Each
//! misbehaviour fails its own request with a clear error; the same model
//! and its neighbours keep serving.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use common::{Server, error_kind_and_message as kind_and_message, faulty_folder, guest};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_guests_fail_alone_and_the_sandbox_holds() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("neighbour.tar.gz")).unwrap();
    faulty_folder(
        &store,
        "faulty",
        "request_timeout_ms=300\nmax_memory_mb=64\noption.greeting=hello\n",
    );
    faulty_folder(&store, "refuses", "option.fail_load=true\n");
    let server = Server::start(&store, &work.path().join("cache"), &[]).await;

    let (status, _, text) = server.predict("faulty", "\"ok\"").await;
    assert_eq!(
        (status, text.as_str()),
        (200, "\"hello\""),
        "option.* reaches load"
    );

    for (command, status, kind, words) in [
        ("panic", 500, "ModelCrashed", "unreachable"),
        ("loop", 504, "ModelTimeout", "300ms"),
        ("alloc", 500, "ModelCrashed", "crashed"),
        ("grow", 500, "ModelCrashed", "crashed"),
        ("recurse", 500, "ModelCrashed", "stack"),
        ("big", 500, "ModelError", "limit"),
        ("nonsense", 400, "InvalidInput", "unknown command"),
    ] {
        let (got, _, text) = server.predict("faulty", &format!("\"{command}\"")).await;
        let (got_kind, message) = kind_and_message(&text);
        assert_eq!(
            (got, got_kind.as_str()),
            (status, kind),
            "{command}: {text}"
        );
        assert!(message.contains(words), "{command}: {message}");
        // The model and its neighbour keep serving after each failure.
        assert_eq!(
            server.predict("faulty", "\"ok\"").await.0,
            200,
            "after {command}"
        );
        assert_eq!(
            server.predict("neighbour", "[[0.5]]").await.0,
            200,
            "after {command}"
        );
    }

    let (status, _, text) = server.predict("faulty", "\"sandbox\"").await;
    assert_eq!(status, 200, "{text}");
    let probe: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(probe["env_vars"], 0, "{probe}");
    assert_eq!(probe["model_readable"], true, "{probe}");
    for denied in [
        "model_writable",
        "etc_readable",
        "root_listable",
        "escape_readable",
        "tmp_writable",
        "network",
    ] {
        assert_eq!(probe[denied], false, "{denied}: {probe}");
    }
    assert!(!store.join("faulty/planted").exists());

    let (status, _, _) = server.predict("faulty", "\"print\"").await;
    assert_eq!(status, 200);
    let log = server.log_text();
    assert!(
        log.lines().any(|l| l.contains("hello from the guest")
            && l.contains("faulty")
            && l.contains("stdout")),
        "guest stdout is in the host log, tagged: {log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("a warning from the guest") && l.contains("stderr"))
    );

    let (status, _, text) = server.predict("refuses", "\"ok\"").await;
    let (kind, message) = kind_and_message(&text);
    assert_eq!((status, kind.as_str()), (500, "ModelLoadFailed"));
    assert!(
        message.contains("refuses") && message.contains("load refused on purpose"),
        "{message}"
    );
    assert_eq!(server.predict("neighbour", "[[0.5]]").await.0, 200);
}
