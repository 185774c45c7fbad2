//! The tenants file: read again on SIGHUP, and refused at start when broken.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reads_the_tenants_file_again_and_a_broken_file_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (server, _) = serve(work.path(), &["acme-iris"], "", &[]).await;
    let file = work.path().join("tenants.toml");
    std::fs::write(&file, "[tenants.acme]\nmodels = [").unwrap();
    server.signal("HUP");
    server.wait_logged("was not read again").await;
    assert_eq!(
        call(
            &server,
            "POST",
            "/predictions/acme-iris",
            Some(ACME_INFER),
            "[[1.0]]"
        )
        .await
        .status,
        200
    );
    let rotated = format!(
        "[tenants.acme]\nmodels = [\"acme-*\"]\ninference_keys = [\"{}\"]\n",
        digest("tok-rotated-1")
    );
    std::fs::write(&file, rotated).unwrap();
    server.signal("HUP");
    server.wait_logged("tenants file read again").await;
    assert_eq!(
        call(
            &server,
            "POST",
            "/predictions/acme-iris",
            Some(ACME_INFER),
            "[[1.0]]"
        )
        .await
        .status,
        401
    );
    assert_eq!(
        call(
            &server,
            "POST",
            "/predictions/acme-iris",
            Some("tok-rotated-1"),
            "[[1.0]]"
        )
        .await
        .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_tenants_file_stops_the_start_with_its_place() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("tenants.toml");
    std::fs::write(
        &file,
        "[tenants.acme]\nmodels = [\"acme-*\"]\ninference_keys = [\"sha256:nothex\"]\n",
    )
    .unwrap();
    let output = common::mme()
        .args(["serve", "--model-store"])
        .arg(work.path())
        .args(["--bind", "127.0.0.1:0", "--grpc-bind", "off", "--tenants"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[tenants.acme] inference_keys[0]"),
        "{stderr}"
    );
    let output = common::mme()
        .args(["serve", "--model-store"])
        .arg(work.path())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--grpc-bind",
            "off",
            "--multi-model",
            "--tenants",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SageMaker"));
}
