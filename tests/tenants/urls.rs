//! Where packages may come from: `--allowed-urls`, with tenants and without.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn packages_register_only_from_the_allowed_roots_and_a_missing_path_looks_the_same() {
    let work = tempfile::tempdir().unwrap();
    let (server, store) = serve(work.path(), &["acme-iris"], "", &[]).await;
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(guest("linear-regression"), outside.join("m.tar.gz")).unwrap();
    std::os::unix::fs::symlink(outside.join("m.tar.gz"), store.join("link.tar.gz")).unwrap();
    std::os::unix::fs::symlink(&outside, store.join("door")).unwrap();
    let register =
        |name: &str, url: String| (format!(r#"{{"model_name":"{name}","url":"{url}"}}"#), url);
    let store_text = store.display().to_string();
    let outside_text = outside.display().to_string();
    let mut refused = Vec::new();
    for (body, url) in [
        register("acme-a", format!("{outside_text}/m.tar.gz")),
        register("acme-b", format!("file://{outside_text}/m.tar.gz")),
        register("acme-c", format!("{store_text}/../outside/m.tar.gz")),
        register("acme-d", format!("{store_text}/link.tar.gz")),
        register("acme-e", format!("{store_text}/door/m.tar.gz")),
        register("acme-f", format!("{store_text}/missing.tar.gz")),
        register("acme-g", format!("{outside_text}/missing.tar.gz")),
        register("acme-h", "/etc".to_string()),
        register("acme-i", "s3://models/globex/m.tar.gz".to_string()),
    ] {
        let answer = call(&server, "POST", "/models", Some(ACME_MANAGE), &body).await;
        assert_eq!(answer.status, 403, "{url}: {}", answer.body);
        refused.push(answer.body);
    }
    // DJL's query form is checked the same way.
    let query = format!("/models?url={outside_text}/m.tar.gz&model_name=acme-j");
    refused.push(
        call(&server, "POST", &query, Some(ACME_MANAGE), "")
            .await
            .body,
    );
    refused.dedup();
    assert_eq!(
        refused.len(),
        1,
        "every refusal is the same answer: {refused:?}"
    );
    assert!(refused[0].contains("UrlNotAllowed"), "{}", refused[0]);

    // Another tenant's s3:// prefix is outside globex's own urls.
    let body = r#"{"model_name":"globex-a","url":"s3://models/acme/m.tar.gz"}"#;
    assert_eq!(
        call(&server, "POST", "/models", Some(GLOBEX_MANAGE), body)
            .await
            .status,
        403
    );
    // A name outside the tenant's patterns cannot be registered at all.
    let (body, _) = register("globex-x", format!("{store_text}/acme-iris.tar.gz"));
    let answer = call(&server, "POST", "/models", Some(ACME_MANAGE), &body).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    // Inside the store, it loads.
    let (body, _) = register("acme-copy", format!("{store_text}/acme-iris.tar.gz"));
    let answer = call(&server, "POST", "/models", Some(ACME_MANAGE), &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = call(
        &server,
        "POST",
        "/predictions/acme-copy",
        Some(ACME_INFER),
        "[[1.0]]",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_urls_apply_without_tenants_too() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(guest("linear-regression"), store.join("m.tar.gz")).unwrap();
    let roots = store.display().to_string();
    let server = Server::start(
        &store,
        &work.path().join("cache"),
        &["--allowed-urls", &roots],
    )
    .await;
    let outside = r#"{"model_name":"x","url":"/etc"}"#;
    assert_eq!(
        call(&server, "POST", "/models", None, outside).await.status,
        403
    );
    let inside = format!(r#"{{"model_name":"x","url":"{roots}/m.tar.gz"}}"#);
    assert_eq!(
        call(&server, "POST", "/models", None, &inside).await.status,
        200
    );
    // No tenants: no keys needed.
    assert_eq!(call(&server, "GET", "/metrics", None, "").await.status, 200);
}
