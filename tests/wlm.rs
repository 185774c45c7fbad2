//! End to end: the work-load manager with the real binary and a real guest
//! that computes for as long as it is told. A burst adds workers and idle
//! ones retire; a full queue refuses at once and loses nothing; bounds
//! change live; batches form.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Server, error_kind_and_message, faulty_folder};
use futures_util::future::join_all;
use serde_json::Value;

async fn describe(server: &Server, model: &str) -> Value {
    let response = reqwest::get(format!("{}/models/{model}", server.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "describe {model}");
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// One answer: status, `Retry-After`, body.
type Answer = (u16, Option<String>, String);

/// Sends every command to `model` at once, each on its own connection.
async fn burst(server: &Server, model: &str, commands: Vec<String>) -> Vec<Answer> {
    let client = reqwest::Client::new();
    let requests = commands.into_iter().map(|command| {
        let request = client
            .post(format!("{}/predictions/{model}", server.url))
            .header("content-type", "application/json")
            .body(format!("\"{command}\""));
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (
                response.status().as_u16(),
                retry_after,
                response.text().await.unwrap(),
            )
        }
    });
    join_all(requests).await
}

/// Polls `model`'s describe until `done` holds, for up to `limit`.
async fn wait_for(
    server: &Server,
    model: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let body = describe(server, model).await;
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_adds_workers_and_idle_ones_retire_to_the_minimum() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(
        &store,
        "burst",
        "minWorkers=1\nmaxWorkers=2\nmax_idle_time=1\n",
    );
    faulty_folder(&store, "zero", "minWorkers=0\nmax_idle_time=1\n");
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--compute-threads", "2"],
    )
    .await;

    assert_eq!(server.predict("burst", "\"ok\"").await.0, 200);
    assert_eq!(describe(&server, "burst").await["workers"], 1);

    let sent: Vec<String> = (0..24).map(|i| format!("work:40:{i}")).collect();
    let during = async {
        let mut most = 0;
        for _ in 0..20 {
            most = most.max(
                describe(&server, "burst").await["workers"]
                    .as_u64()
                    .unwrap(),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    };
    let (answers, most_during) = tokio::join!(burst(&server, "burst", sent), during);
    assert!(
        answers.iter().all(|(status, _, _)| *status == 200),
        "{answers:?}"
    );
    let ids: HashSet<String> = answers.iter().map(|(_, _, body)| body.clone()).collect();
    assert_eq!(ids.len(), 24, "each request got its own answer");
    let after = describe(&server, "burst").await;
    assert_eq!(
        most_during.max(after["workers"].as_u64().unwrap()),
        2,
        "the burst scaled up to maxWorkers"
    );
    assert!(after["scaleUps"].as_u64().unwrap() >= 1, "{after}");
    assert_eq!(after["requests"]["completed"], 25);

    let settled = wait_for(&server, "burst", Duration::from_secs(10), |d| {
        d["workers"] == 1
    })
    .await;
    assert_eq!(
        settled["workers"], 1,
        "idle workers retire to minWorkers: {settled}"
    );
    assert!(settled["scaleDowns"].as_u64().unwrap() >= 1);
    assert_eq!(
        server
            .metric("mme_workers{model=\"burst\",version=\"1\"}")
            .await,
        1.0
    );
    assert!(
        server
            .metric("mme_scale_ups_total{model=\"burst\",version=\"1\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        server
            .metric("mme_queue_seconds_count{model=\"burst\",version=\"1\"}")
            .await,
        25.0
    );

    // minWorkers=0: the model keeps no instance when idle, and comes back on demand.
    assert_eq!(server.predict("zero", "\"ok\"").await.0, 200);
    let idle = wait_for(&server, "zero", Duration::from_secs(10), |d| {
        d["workers"] == 0
    })
    .await;
    assert_eq!(idle["workers"], 0, "scaled to zero: {idle}");
    assert_eq!(
        server.predict("zero", "\"work:1:back\"").await.2,
        "\"back\""
    );
    assert!(server.stop(), "clean exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_refuses_at_once_with_retry_after_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(&store, "tiny", "maxWorkers=1\njob_queue_size=2\n");
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--compute-threads", "2"],
    )
    .await;
    assert_eq!(server.predict("tiny", "\"ok\"").await.0, 200);

    let sent: Vec<String> = (0..30).map(|i| format!("work:30:{i}")).collect();
    let answers = burst(&server, "tiny", sent).await;
    let ok: Vec<&Answer> = answers.iter().filter(|a| a.0 == 200).collect();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.0 == 503).collect();
    assert_eq!(ok.len() + refused.len(), 30, "only 200 or 503: {answers:?}");
    assert!(
        ok.len() >= 2,
        "at least the queue's two places were served: {}",
        ok.len()
    );
    assert!(!refused.is_empty(), "30 at once overflow a queue of 2");
    for (_, retry_after, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"));
        let (kind, message) = error_kind_and_message(body);
        assert_eq!(kind, "QueueFull");
        assert!(
            message.contains("\"tiny\"") && message.contains(" 2 "),
            "{message}"
        );
    }
    let ids: HashSet<&String> = ok.iter().map(|a| &a.2).collect();
    assert_eq!(ids.len(), ok.len(), "no request answered twice");

    let counts = describe(&server, "tiny").await;
    assert_eq!(
        counts["requests"]["completed"],
        ok.len() as u64 + 1,
        "{counts}"
    );
    assert_eq!(
        counts["requests"]["rejected"],
        refused.len() as u64,
        "{counts}"
    );
    assert_eq!(counts["requestInQueue"], 0);
    assert_eq!(
        server.predict("tiny", "\"ok\"").await.0,
        200,
        "it serves again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bounds_change_live_batches_form_and_a_full_queue_can_say_429() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    faulty_folder(&store, "tiny", "maxWorkers=1\njob_queue_size=1\n");
    faulty_folder(
        &store,
        "batched",
        "maxWorkers=1\nbatch_size=4\nmax_batch_delay=2000\n",
    );
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--compute-threads", "2", "--queue-full-status", "429"],
    )
    .await;

    let answers = burst(
        &server,
        "tiny",
        (0..20).map(|i| format!("work:30:{i}")).collect(),
    )
    .await;
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.0 == 429).collect();
    assert!(!refused.is_empty(), "{answers:?}");
    assert!(refused.iter().all(|a| a.1.as_deref() == Some("1")));
    assert!(answers.iter().all(|a| a.0 == 200 || a.0 == 429));

    let client = reqwest::Client::new();
    let put = |query: &str| client.put(format!("{}/models/{query}", server.url)).send();
    let response = put("tiny?min_worker=2&max_worker=3").await.unwrap();
    assert_eq!(response.status(), 200);
    let described = describe(&server, "tiny").await;
    assert_eq!(
        (
            described["minWorkers"].as_u64(),
            described["maxWorkers"].as_u64()
        ),
        (Some(2), Some(3))
    );
    assert!(described["workers"].as_u64().unwrap() >= 2, "{described}");
    let response = put("tiny?min_worker=5&max_worker=3").await.unwrap();
    assert_eq!(response.status(), 400);
    let (_, message) = error_kind_and_message(&response.text().await.unwrap());
    assert!(
        message.contains("min_worker (5)") && message.contains("max_worker (3)"),
        "{message}"
    );
    assert_eq!(put("tiny?min_worker=lots").await.unwrap().status(), 400);
    assert_eq!(put("absent?max_worker=2").await.unwrap().status(), 404);

    // Four requests at once fill one batch; a lone one waits max_batch_delay and runs alone.
    assert_eq!(server.predict("batched", "\"ok\"").await.0, 200);
    let answers = burst(&server, "batched", vec!["batch".to_string(); 4]).await;
    assert!(
        answers.iter().all(|a| a.0 == 200 && a.2 == "4"),
        "{answers:?}"
    );
    let started = Instant::now();
    assert_eq!(server.predict("batched", "\"batch\"").await.2, "1");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "a partial batch waits its delay"
    );
    // Three batches: the warm-up, the four, the lone one.
    assert_eq!(
        server
            .metric("mme_batch_size_count{model=\"batched\",version=\"1\"}")
            .await,
        3.0
    );
    assert_eq!(
        server
            .metric("mme_batch_size_sum{model=\"batched\",version=\"1\"}")
            .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_ups_beyond_a_full_instance_pool_fail_no_request() {
    // Twelve models keep one instance each in a pool of fourteen: bursts on
    // every model ask for far more instances than the pool holds.
    const MODELS: usize = 12;
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    for index in 0..MODELS {
        faulty_folder(&store, &format!("m{index}"), "minWorkers=1\nmaxWorkers=2\n");
    }
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--compute-threads", "2", "--max-instances", "14"],
    )
    .await;
    for index in 0..MODELS {
        assert_eq!(server.predict(&format!("m{index}"), "\"ok\"").await.0, 200);
    }

    // Two passes over the models, four at a time, six requests each at
    // once: every model has a backlog that asks for its second worker.
    let mut answers = Vec::new();
    for round in 0..2 * MODELS / 4 {
        let bursts = (0..4).map(|offset| {
            let model = format!("m{}", (round * 4 + offset) % MODELS);
            let commands = (0..6)
                .map(|i| format!("work:20:{round}-{offset}-{i}"))
                .collect();
            let server = &server;
            async move { burst(server, &model, commands).await }
        });
        answers.extend(join_all(bursts).await.into_iter().flatten());
    }
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert_eq!(answers.len(), 2 * MODELS * 6);
    assert!(
        server.metric("mme_instances").await <= 14.0,
        "the pool's size holds"
    );
    assert!(
        server.metric("mme_spare_instances_taken_total").await >= 1.0,
        "idle instances above minWorkers were taken back for models with backlog"
    );
    for index in 0..MODELS {
        let workers = describe(&server, &format!("m{index}")).await["workers"]
            .as_u64()
            .unwrap();
        assert!((1..=2).contains(&workers), "m{index}: {workers} workers");
    }
    assert!(server.stop(), "clean exit");
}
