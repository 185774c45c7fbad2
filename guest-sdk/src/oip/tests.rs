use super::*;

const REQUEST: &str =
    r#"{"id":"r1","inputs":[{"name":"x","shape":[2,1],"datatype":"FP64","data":[0.5,2.0]}]}"#;

fn reply(body: &str) -> Reply {
    Reply::of(body.as_bytes(), None)
}

/// A request framed as Triton's binary tensors: `header` of JSON, then `tensors`.
fn framed(header: &str, tensors: &[u8]) -> (Vec<u8>, Option<usize>) {
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(tensors);
    (body, Some(header.len()))
}

#[test]
fn a_binary_input_tensor_becomes_a_matrix_of_its_datatype() {
    let fp32: Vec<u8> = [0.5f32, -2.0, 3.25, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let (body, length) = framed(
        r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#,
        &fp32,
    );
    let m = matrix(&body, length).unwrap();
    assert_eq!((m.rows, m.cols, m.data), (2, 2, vec![0.5, -2.0, 3.25, 4.0]));
    let int64: Vec<u8> = [-3i64, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    let (body, length) = framed(
        r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":16}},{"name":"y","shape":[1],"datatype":"FP64","data":[1]}]}"#,
        &int64,
    );
    assert_eq!(matrix(&body, length).unwrap().data, vec![-3.0, 7.0]);
    // A framed request whose first input is JSON reads its data.
    let (body, length) = framed(
        r#"{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP64","data":[[9]]}]}"#,
        &[],
    );
    assert_eq!(matrix(&body, length).unwrap().data, vec![9.0]);
}

#[test]
fn hostile_framing_is_invalid_input_that_says_why() {
    let header = r#"{"inputs":[{"name":"x","shape":[2,1],"datatype":"FP64","parameters":{"binary_data_size":16}}]}"#;
    for ((body, length), words) in [
        (framed(header, &[0; 8]), "8 bytes follow"),
        (framed(&header.replace("16", "24"), &[0; 24]), "3 values"),
        (
            (header.as_bytes().to_vec(), Some(header.len() + 1)),
            "has only",
        ),
        (
            (header.as_bytes().to_vec(), Some(10)),
            "not an Open Inference",
        ),
        (
            framed(
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64"}]}"#,
                &[],
            ),
            "neither data nor binary_data_size",
        ),
        (
            framed(
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","parameters":{"binary_data_size":18446744073709551615}}]}"#,
                &[],
            ),
            "binary_data_size",
        ),
    ] {
        match matrix(&body, length) {
            Err(Error::InvalidInput(message)) => {
                assert!(message.contains(words), "{words}: {message}")
            }
            other => panic!("{words}: {other:?}"),
        }
    }
}

#[test]
fn an_answer_wanted_as_binary_is_framed_after_its_json_header() {
    let (body, length) = framed(
        r#"{"id":"b7","inputs":[{"name":"x","shape":[2,1],"datatype":"FP64","parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":true}}"#,
        &[0; 16],
    );
    let wrapped = wrap(
        Reply::of(&body, length),
        Response::json(&[2.0, 5.0]).unwrap(),
    )
    .unwrap();
    let header_length = mme_oip::framed_header_length(&wrapped.content_type).unwrap();
    let (header, tail) = wrapped.body.split_at(header_length);
    let header: Value = serde_json::from_slice(header).unwrap();
    assert_eq!(
        header,
        json!({"id": "b7", "outputs": [{"name": "output-0", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]})
    );
    let values: Vec<f64> = tail
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values, vec![2.0, 5.0]);
    // Asked for by name, or not at all.
    let by_name =
        r#"{"inputs":[],"outputs":[{"name":"output-0","parameters":{"binary_data":true}}]}"#;
    let wrapped = wrap(reply(by_name), Response::json(&[1.0]).unwrap()).unwrap();
    assert!(mme_oip::framed_header_length(&wrapped.content_type).is_some());
    // An answer that is not a flat list takes the general way, framed alike.
    let wrapped = wrap(reply(by_name), Response::json(&[[1.0], [2.0]]).unwrap()).unwrap();
    let header_length = mme_oip::framed_header_length(&wrapped.content_type).unwrap();
    let header: Value = serde_json::from_slice(&wrapped.body[..header_length]).unwrap();
    assert_eq!(header["outputs"][0]["shape"], json!([2, 1]));
    assert_eq!(wrapped.body.len(), header_length + 16);
    let (body, length) = framed(r#"{"inputs":[]}"#, &[]);
    let wrapped = wrap(Reply::of(&body, length), Response::json(&[1.0]).unwrap()).unwrap();
    assert_eq!(wrapped.content_type, JSON);
}

#[test]
fn an_input_tensor_becomes_a_matrix_flat_or_nested() {
    let m = matrix(REQUEST.as_bytes(), None).unwrap();
    assert_eq!((m.rows, m.cols, m.data), (2, 1, vec![0.5, 2.0]));
    let nested =
        r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
    assert_eq!(
        matrix(nested.as_bytes(), None).unwrap().data,
        vec![1.0, 2.0, 3.0, 4.0]
    );
    let vector = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[1,2,3]}]}"#;
    let m = matrix(vector.as_bytes(), None).unwrap();
    assert_eq!((m.rows, m.cols), (3, 1));
}

#[test]
fn bad_tensors_are_invalid_input_that_says_why() {
    for (body, words) in [
        ("{}", "inputs"),
        (r#"{"inputs":[]}"#, "no input tensor"),
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a","b"]}]}"#,
            "BYTES",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[3,1],"datatype":"FP64","data":[1,2]}]}"#,
            "2 values",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1,1,1],"datatype":"FP64","data":[1]}]}"#,
            "shape",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[{"a":1}]}]}"#,
            "numbers",
        ),
    ] {
        match matrix(body.as_bytes(), None) {
            Err(Error::InvalidInput(message)) => {
                assert!(message.contains(words), "{body}: {message}")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn a_plain_answer_is_wrapped_in_one_output_tensor_with_the_id() {
    let answer = Response::json(&[2.0, 5.0]).unwrap();
    let wrapped = wrap(reply(REQUEST), answer).unwrap();
    let value: Value = serde_json::from_slice(&wrapped.body).unwrap();
    assert_eq!(
        value,
        json!({"id": "r1", "outputs": [{"name": "output-0", "shape": [2], "datatype": "FP64", "data": [2.0, 5.0]}]})
    );
    let nested = wrap(reply("{}"), Response::json(&[[1, 2], [3, 4]]).unwrap()).unwrap();
    let value: Value = serde_json::from_slice(&nested.body).unwrap();
    assert_eq!(value["outputs"][0]["shape"], json!([2, 2]));
    assert!(value.get("id").is_none());
    let labels = wrap(reply("{}"), Response::json(&["cat"]).unwrap()).unwrap();
    let value: Value = serde_json::from_slice(&labels.body).unwrap();
    assert_eq!(value["outputs"][0]["datatype"], "BYTES");
}

#[test]
fn an_answer_that_is_already_v2_or_not_json_is_left_alone() {
    let own = Response::json(&json!({"outputs": []})).unwrap();
    assert_eq!(wrap(reply(REQUEST), own.clone()).unwrap(), own);
    let framed = Response::new(mme_oip::framed_content_type(2), b"[1]xyz".to_vec());
    assert_eq!(wrap(reply(REQUEST), framed.clone()).unwrap(), framed);
    let ragged = Response::json(&json!([[1], [2, 3]])).unwrap();
    assert!(wrap(reply("{}"), ragged).is_err());
}

#[test]
fn a_flat_answer_written_by_hand_reads_as_the_protocol_says() {
    let ids = [
        None,
        Some(""),
        Some("r-1"),
        Some("a \"quoted\" \\ id"),
        Some("line\nbreak\ttab\u{1}"),
        Some("ü€😀"),
    ];
    let lists: [&[f64]; 3] = [&[], &[2.0], &[1e300, -0.0, 3.5, -1.25e-7]];
    for id in ids {
        for values in lists {
            for binary in [false, true] {
                let reply = Reply {
                    id: id.map(str::to_string),
                    binary,
                };
                let wrapped = wrap_flat(&reply, values, "kept".into()).unwrap();
                assert_eq!(wrapped.attributes, "kept");
                let mut output =
                    json!({"name": "output-0", "shape": [values.len()], "datatype": "FP64"});
                let header = match mme_oip::framed_header_length(&wrapped.content_type) {
                    Some(length) => {
                        assert!(binary, "{id:?} {values:?}: framed though not asked");
                        let (header, tail) = wrapped.body.split_at(length);
                        let read: Vec<f64> = tail
                            .chunks_exact(8)
                            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                            .collect();
                        assert_eq!(read, values);
                        output["parameters"] = json!({"binary_data_size": 8 * values.len()});
                        header
                    }
                    None => {
                        assert!(!binary, "{id:?} {values:?}: not framed though asked");
                        assert_eq!(wrapped.content_type, JSON);
                        output["data"] = json!(values);
                        &wrapped.body[..]
                    }
                };
                let mut expected = json!({"outputs": [output]});
                if let Some(id) = id {
                    expected["id"] = json!(id);
                }
                let header: Value = serde_json::from_slice(header)
                    .unwrap_or_else(|e| panic!("{id:?} {values:?} {binary}: {e}"));
                assert_eq!(header, expected, "{id:?} {values:?} {binary}");
            }
        }
    }
}
