//! End to end: clients that send slowly (slowloris) cannot hold the
//! server's connections or its models: a request head that does not arrive
//! in time closes the connection, a body that does not arrive gets 408,
//! and other clients are served all along.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::time::Duration;

use common::{Server, copies, guest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the server sends on `stream` until it closes it, bounded so
/// that a server that never closes fails the test instead of hanging it.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received));
    match read.await {
        Ok(_) => String::from_utf8_lossy(&received).into_owned(),
        Err(_) => panic!("the server kept a stalled connection open"),
    }
}

async fn serve(work: &std::path::Path) -> Server {
    let store = work.join("store");
    copies(&store, &guest("linear-regression"), "m", 1);
    Server::start(
        &store,
        &work.join("cache"),
        &["--header-read-timeout", "1s", "--body-read-timeout", "1s"],
    )
    .await
}

fn address(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_that_never_ends_is_cut_off_and_others_are_served() {
    let work = tempfile::tempdir().unwrap();
    let server = serve(work.path()).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(address(&server)).await.unwrap();
        stream
            .write_all(b"POST /predictions/m0 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        stalled.push(stream);
    }
    // While twenty heads hang, a normal client is served.
    let (status, _, body) = server.predict("m0", "[[0.5]]").await;
    assert_eq!(status, 200, "{body}");
    for stream in &mut stalled {
        let answer = read_until_closed(stream).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    assert_eq!(server.predict("m0", "[[0.5]]").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_gets_408() {
    let work = tempfile::tempdir().unwrap();
    let server = serve(work.path()).await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream
        .write_all(
            b"POST /predictions/m0 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\nConnection: close\r\n\r\n[[0.5",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");
    assert!(answer.contains("--body-read-timeout"), "{answer}");
    assert_eq!(server.predict("m0", "[[0.5]]").await.0, 200);
}
