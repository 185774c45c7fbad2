//! Who may call which route: the table of routes by kind of key, another
//! tenant's models, and hostile `Authorization` headers.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_each_kind_of_key_as_the_table_says() {
    let work = tempfile::tempdir().unwrap();
    let (server, _) = serve(work.path(), &["acme-iris", "globex-iris"], "", &[]).await;
    let keys = [
        None,
        Some(WRONG),
        Some(ACME_INFER),
        Some(ACME_MANAGE),
        Some(GLOBEX_MANAGE),
        Some(ADMIN),
    ];
    // Status for: no key, wrong key, acme's inference key, acme's
    // management key, globex's management key, the admin key.
    let open = [200; 6];
    let inference = [401, 401, 200, 200, 404, 200];
    let management = [401, 401, 403, 200, 404, 200];
    let listing = [401, 401, 403, 200, 200, 200];
    let admin = [401, 401, 403, 403, 403, 200];
    let table: [(&str, &str, &str, [u16; 6]); 21] = [
        ("GET", "/ping", "", open),
        ("GET", "/v2/health/live", "", open),
        ("GET", "/v2/health/ready", "", open),
        ("GET", "/v2", "", open),
        ("GET", "/metrics", "", admin),
        ("POST", "/predictions/acme-iris", "[[1.0]]", inference),
        (
            "POST",
            "/invocations?model_name=acme-iris",
            "[[1.0]]",
            inference,
        ),
        ("POST", "/v2/models/acme-iris/infer", OIP, inference),
        (
            "POST",
            "/v2/models/acme-iris/versions/1/infer",
            OIP,
            inference,
        ),
        ("GET", "/v2/models/acme-iris", "", inference),
        ("GET", "/v2/models/acme-iris/ready", "", inference),
        ("GET", "/v2/models/acme-iris/versions/1", "", inference),
        (
            "GET",
            "/v2/models/acme-iris/versions/1/ready",
            "",
            inference,
        ),
        ("POST", "/predictions/acme-iris/1", "[[1.0]]", inference),
        ("POST", "/models/acme-iris/invoke", "[[1.0]]", inference),
        ("GET", "/models/acme-iris", "", management),
        ("GET", "/models/acme-iris/1", "", management),
        (
            "PUT",
            "/models/acme-iris/1?min_worker=0&max_worker=2",
            "",
            management,
        ),
        (
            "PUT",
            "/models/acme-iris?min_worker=0&max_worker=2",
            "",
            management,
        ),
        ("GET", "/models", "", listing),
        ("POST", "/v2/repository/index", "{}", listing),
    ];
    for (method, path, body, expected) in table {
        for (key, want) in keys.iter().zip(expected) {
            let answer = call(&server, method, path, *key, body).await;
            assert_eq!(
                answer.status, want,
                "{method} {path} with {key:?}: {}",
                answer.body
            );
            if want == 401 {
                assert_eq!(answer.headers["www-authenticate"], "Bearer");
                assert!(
                    answer.body.contains("Authorization: Bearer"),
                    "{}",
                    answer.body
                );
            }
        }
    }
    // A name that does not decode is refused, never let through unchecked.
    let broken = call(
        &server,
        "POST",
        "/predictions/acme%FF",
        Some(GLOBEX_MANAGE),
        "[[1.0]]",
    )
    .await;
    assert_eq!(broken.status, 400, "{}", broken.body);
    // A percent-encoded name is the same name.
    let encoded = call(
        &server,
        "POST",
        "/predictions/acme%2Diris",
        Some(GLOBEX_MANAGE),
        "[[1.0]]",
    )
    .await;
    assert_eq!(encoded.status, 404, "{}", encoded.body);
    let encoded = call(
        &server,
        "POST",
        "/predictions/acme%2Diris",
        Some(ACME_INFER),
        "[[1.0]]",
    )
    .await;
    assert_eq!(encoded.status, 200, "{}", encoded.body);
    // The SageMaker header names the model as the query does.
    let answer = reqwest::Client::new()
        .post(format!("{}/invocations", server.url))
        .header("X-Amzn-SageMaker-Target-Model", "acme-iris.tar.gz")
        .header("authorization", format!("Bearer {GLOBEX_MANAGE}"))
        .header("content-type", "application/json")
        .body("[[1.0]]")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);

    // Each tenant lists its own models only; the admin lists all.
    let names = |body: &str| -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        let models = value
            .get("models")
            .unwrap_or(&value)
            .as_array()
            .unwrap()
            .clone();
        let mut names: Vec<String> = models
            .iter()
            .map(|m| {
                m.get("modelName")
                    .or(m.get("name"))
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    };
    call(
        &server,
        "POST",
        "/predictions/globex-iris",
        Some(GLOBEX_MANAGE),
        "[[1.0]]",
    )
    .await;
    let acme = call(&server, "GET", "/models", Some(ACME_MANAGE), "").await;
    assert_eq!(names(&acme.body), ["acme-iris"]);
    let globex = call(
        &server,
        "POST",
        "/v2/repository/index",
        Some(GLOBEX_MANAGE),
        "{}",
    )
    .await;
    assert_eq!(names(&globex.body), ["globex-iris"]);
    let all = call(&server, "GET", "/models", Some(ADMIN), "").await;
    assert_eq!(names(&all.body), ["acme-iris", "globex-iris"]);

    // Another tenant's unload is Triton's answer for a model that is not
    // there, and unloads nothing; its delete is a 404.
    let unload = call(
        &server,
        "POST",
        "/v2/repository/models/acme-iris/unload",
        Some(GLOBEX_MANAGE),
        "",
    )
    .await;
    assert_eq!((unload.status, unload.body.as_str()), (200, "{}"));
    assert_eq!(
        call(
            &server,
            "DELETE",
            "/models/acme-iris",
            Some(GLOBEX_MANAGE),
            ""
        )
        .await
        .status,
        404
    );
    assert_eq!(
        call(&server, "DELETE", "/models/acme-iris", Some(ACME_INFER), "")
            .await
            .status,
        403
    );
    assert_eq!(
        call(&server, "GET", "/models/acme-iris", Some(ACME_MANAGE), "")
            .await
            .status,
        200
    );
    assert_eq!(
        call(
            &server,
            "DELETE",
            "/models/acme-iris",
            Some(ACME_MANAGE),
            ""
        )
        .await
        .status,
        200
    );
    let load = call(
        &server,
        "POST",
        "/v2/repository/models/acme-iris/load",
        Some(GLOBEX_MANAGE),
        "",
    )
    .await;
    assert_eq!(load.status, 404);
    let load = call(
        &server,
        "POST",
        "/v2/repository/models/acme-iris/load",
        Some(ACME_MANAGE),
        "",
    )
    .await;
    assert_eq!(load.status, 200, "{}", load.body);

    // The audit log names tenants and outcomes, and never a token.
    let log = server.log_text();
    assert!(log.contains("mme::audit"), "{log}");
    assert!(
        log.contains("tenant=\"acme\"") || log.contains("tenant=acme"),
        "{log}"
    );
    for token in [ADMIN, ACME_INFER, ACME_MANAGE, GLOBEX_MANAGE, WRONG] {
        assert!(!log.contains(token), "the log holds the token {token}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_model_answers_as_a_model_that_does_not_exist() {
    let work = tempfile::tempdir().unwrap();
    let (server, _) = serve(work.path(), &["acme-iris"], "", &[]).await;
    // Loaded, so that the routes for loaded models know it.
    assert_eq!(
        call(
            &server,
            "POST",
            "/predictions/acme-iris",
            Some(ADMIN),
            "[[1.0]]"
        )
        .await
        .status,
        200
    );
    for (method, route, body) in [
        ("POST", "/predictions/{}", "[[1.0]]"),
        ("POST", "/invocations?model_name={}", "[[1.0]]"),
        ("POST", "/v2/models/{}/infer", OIP),
        ("GET", "/v2/models/{}", ""),
        ("GET", "/v2/models/{}/ready", ""),
        ("GET", "/v2/models/{}/versions/1", ""),
        ("POST", "/predictions/{}/1", "[[1.0]]"),
        ("POST", "/models/{}/invoke", "[[1.0]]"),
        ("GET", "/models/{}", ""),
        ("GET", "/models/{}/1", ""),
        ("PUT", "/models/{}?max_worker=1", ""),
        ("DELETE", "/models/{}/1", ""),
        ("DELETE", "/models/{}", ""),
        ("POST", "/v2/repository/models/{}/load", ""),
        ("POST", "/v2/repository/models/{}/unload", ""),
    ] {
        let hidden = call(
            &server,
            method,
            &route.replace("{}", "acme-iris"),
            Some(GLOBEX_MANAGE),
            body,
        )
        .await;
        let absent = call(
            &server,
            method,
            &route.replace("{}", "globex-xyzw"),
            Some(GLOBEX_MANAGE),
            body,
        )
        .await;
        assert_eq!(
            (hidden.status, hidden.body.replace("acme-iris", "NAME")),
            (absent.status, absent.body.replace("globex-xyzw", "NAME")),
            "{method} {route}"
        );
    }
    // Still loaded: nothing another tenant did reached it.
    assert_eq!(
        call(&server, "GET", "/models/acme-iris", Some(ADMIN), "")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_authorization_headers_are_refused_plainly() {
    let work = tempfile::tempdir().unwrap();
    let (server, _) = serve(work.path(), &["acme-iris"], "", &[]).await;
    let long = format!("Bearer {}", "x".repeat(16 * 1024));
    let values: Vec<reqwest::header::HeaderValue> = vec![
        reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        reqwest::header::HeaderValue::from_static("Bearer"),
        reqwest::header::HeaderValue::from_static("Basic YWRtaW46YWRtaW4="),
        reqwest::header::HeaderValue::from_str(&format!("Bearer {ADMIN}x")).unwrap(),
        reqwest::header::HeaderValue::from_str(&long).unwrap(),
    ];
    for value in values {
        let answer = reqwest::Client::new()
            .post(format!("{}/predictions/acme-iris", server.url))
            .header("authorization", value.clone())
            .body("[[1.0]]")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{value:?}");
    }
    // The server is none the worse.
    let answer = call(
        &server,
        "POST",
        "/predictions/acme-iris",
        Some(ACME_INFER),
        "[[1.0]]",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}
