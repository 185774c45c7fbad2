//! The same keys over gRPC.

use super::*;

/// A gRPC request with `authorization` metadata if `key` is given.
fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_carry_the_same_keys() {
    let work = tempfile::tempdir().unwrap();
    let (server, _) = serve(work.path(), &["acme-iris"], "", &[]).await;
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let infer = ModelInferRequest {
        model_name: "acme-iris".into(),
        inputs: vec![InferInputTensor {
            name: "input-0".into(),
            datatype: "FP64".into(),
            shape: vec![1, 1],
            contents: Some(InferTensorContents {
                fp64_contents: vec![1.0],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    for (key, code) in [
        (None, Some(Code::Unauthenticated)),
        (Some(WRONG), Some(Code::Unauthenticated)),
        (Some(GLOBEX_MANAGE), Some(Code::NotFound)),
        (Some(ACME_INFER), None),
        (Some(ADMIN), None),
    ] {
        let answer = client.model_infer(with_key(infer.clone(), key)).await;
        assert_eq!(
            answer.as_ref().err().map(|s| s.code()),
            code,
            "{key:?}: {answer:?}"
        );
    }
    // Metadata is an inference key's call, a repository load a management
    // key's; another tenant's model is missing to both.
    let metadata = ModelMetadataRequest {
        name: "acme-iris".into(),
        version: String::new(),
    };
    let load = RepositoryModelLoadRequest {
        model_name: "acme-iris".into(),
        ..Default::default()
    };
    for (key, metadata_code, load_code) in [
        (
            None,
            Some(Code::Unauthenticated),
            Some(Code::Unauthenticated),
        ),
        (
            Some(WRONG),
            Some(Code::Unauthenticated),
            Some(Code::Unauthenticated),
        ),
        (
            Some(GLOBEX_MANAGE),
            Some(Code::NotFound),
            Some(Code::NotFound),
        ),
        (Some(ACME_INFER), None, Some(Code::PermissionDenied)),
        (Some(ACME_MANAGE), None, None),
        (Some(ADMIN), None, None),
    ] {
        let answer = client.model_metadata(with_key(metadata.clone(), key)).await;
        assert_eq!(
            answer.as_ref().err().map(|s| s.code()),
            metadata_code,
            "{key:?}: {answer:?}"
        );
        let answer = client
            .repository_model_load(with_key(load.clone(), key))
            .await;
        assert_eq!(
            answer.as_ref().err().map(|s| s.code()),
            load_code,
            "{key:?}: {answer:?}"
        );
    }
    // The server's own calls stay open, as /v2 and the health routes do.
    client.server_live(ServerLiveRequest {}).await.unwrap();
    client.server_ready(ServerReadyRequest {}).await.unwrap();
    client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap();

    let index = client
        .repository_index(with_key(
            RepositoryIndexRequest::default(),
            Some(ACME_INFER),
        ))
        .await;
    assert_eq!(index.unwrap_err().code(), Code::PermissionDenied);
    let index = client
        .repository_index(with_key(
            RepositoryIndexRequest::default(),
            Some(GLOBEX_MANAGE),
        ))
        .await
        .unwrap();
    assert!(index.into_inner().models.is_empty());
    let ready = ModelReadyRequest {
        name: "acme-iris".into(),
        version: String::new(),
    };
    let seen = client
        .model_ready(with_key(ready.clone(), Some(GLOBEX_MANAGE)))
        .await
        .unwrap();
    assert!(!seen.into_inner().ready);
    assert!(
        client
            .model_ready(with_key(ready, Some(ACME_INFER)))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let unload = RepositoryModelUnloadRequest {
        model_name: "acme-iris".into(),
        ..Default::default()
    };
    client
        .repository_model_unload(with_key(unload, Some(GLOBEX_MANAGE)))
        .await
        .unwrap();
    assert_eq!(
        call(&server, "GET", "/models/acme-iris", Some(ADMIN), "")
            .await
            .status,
        200
    );
}
