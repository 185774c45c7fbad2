//! Quotas: models, rates and memory are each tenant's own.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn quotas_and_rates_are_the_tenants_and_leave_other_tenants_alone() {
    let work = tempfile::tempdir().unwrap();
    let names = ["acme-1", "acme-2", "acme-3", "globex-1"];
    let (server, _) = serve(
        work.path(),
        &names,
        "max_models = 2\nrequests_per_second = 5",
        &[],
    )
    .await;
    for name in ["acme-1", "acme-2"] {
        let answer = call(
            &server,
            "POST",
            &format!("/v2/repository/models/{name}/load"),
            Some(ACME_MANAGE),
            "",
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let over = call(
        &server,
        "POST",
        "/predictions/acme-3",
        Some(ACME_INFER),
        "[[1.0]]",
    )
    .await;
    assert_eq!(over.status, 403, "{}", over.body);
    assert!(
        over.body.contains("QuotaExceeded") && over.body.contains("max_models"),
        "{}",
        over.body
    );
    // A model loaded already is no new load.
    assert_eq!(
        call(
            &server,
            "POST",
            "/predictions/acme-1",
            Some(ACME_INFER),
            "[[1.0]]"
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(&server, "DELETE", "/models/acme-2", Some(ACME_MANAGE), "")
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        call(
            &server,
            "POST",
            "/predictions/acme-3",
            Some(ACME_INFER),
            "[[1.0]]"
        )
        .await
        .status,
        200
    );

    // Past five a second acme gets 429 with Retry-After; globex does not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut limited = 0;
    for _ in 0..20 {
        let answer = call(
            &server,
            "POST",
            "/predictions/acme-1",
            Some(ACME_INFER),
            "[[1.0]]",
        )
        .await;
        if answer.status == 429 {
            limited += 1;
            let wait: u64 = answer.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(wait >= 1, "{wait}");
            assert!(
                answer.body.contains("requests_per_second"),
                "{}",
                answer.body
            );
        } else {
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
        let other = call(
            &server,
            "POST",
            "/predictions/globex-1",
            Some(GLOBEX_MANAGE),
            "[[1.0]]",
        )
        .await;
        assert_eq!(other.status, 200, "{}", other.body);
    }
    assert!(
        limited >= 10,
        "only {limited} of 20 calls were over 5 a second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_memory_share_evicts_its_own_models_only() {
    let work = tempfile::tempdir().unwrap();
    let names = [
        "acme-1", "acme-2", "acme-3", "acme-4", "acme-5", "globex-1", "globex-2",
    ];
    let (server, _) = serve(work.path(), &names, "", &[]).await;
    for name in ["globex-1", "globex-2", "acme-1"] {
        let answer = call(
            &server,
            "POST",
            &format!("/predictions/{name}"),
            Some(ADMIN),
            "[[1.0]]",
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // Room for two of acme's models, not three.
    share_of_halves(&server, work.path(), "acme-1", 5, "").await;

    for name in ["acme-2", "acme-3", "acme-4", "acme-5", "acme-1"] {
        let answer = call(
            &server,
            "POST",
            &format!("/predictions/{name}"),
            Some(ACME_INFER),
            "[[1.0]]",
        )
        .await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        let listed = call(&server, "GET", "/models", Some(ACME_MANAGE), "").await;
        let value: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
        let loaded = value["models"].as_array().unwrap().len();
        assert!(
            loaded <= 2,
            "acme holds {loaded} models within a share of two: {}",
            listed.body
        );
    }
    // Globex's models were never the ones to go.
    for name in ["globex-1", "globex-2"] {
        let answer = call(
            &server,
            "GET",
            &format!("/models/{name}"),
            Some(GLOBEX_MANAGE),
            "",
        )
        .await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loads_still_in_flight_count_against_the_share() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // Each load takes most of a second in the model's `load`: the window in
    // which a model is admitted and not yet listed.
    for name in ["acme-0", "acme-1", "acme-2"] {
        faulty_folder(&store, name, "option.sleep_load_ms=800\n");
    }
    let tenants = tenants_file(work.path(), "");
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--tenants", tenants.to_str().unwrap()],
    )
    .await;
    let answer = call(
        &server,
        "POST",
        "/predictions/acme-0",
        Some(ADMIN),
        "\"ok\"",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Room for two of acme's models, not three.
    share_of_halves(&server, work.path(), "acme-0", 5, "").await;

    // Two loads at once: the second is admitted while the first sleeps in
    // `load`, and must count it (and so evict acme-0 to make room).
    let (first, second) = tokio::join!(
        call(
            &server,
            "POST",
            "/predictions/acme-1",
            Some(ACME_INFER),
            "\"ok\""
        ),
        call(
            &server,
            "POST",
            "/predictions/acme-2",
            Some(ACME_INFER),
            "\"ok\""
        ),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(second.status, 200, "{}", second.body);
    let listed = call(&server, "GET", "/models", Some(ACME_MANAGE), "").await;
    let value: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    let names: Vec<&str> = value["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["modelName"].as_str())
        .collect();
    assert_eq!(
        names,
        ["acme-1", "acme-2"],
        "acme's share holds two models; the last two loaded stay"
    );
}
