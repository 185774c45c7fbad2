use super::*;
use serde_json::json;

fn input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: InferTensorContents,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: Default::default(),
        contents: Some(contents),
    }
}

fn request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        id: "r1".into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    }
}

/// The framed request as the HTTP surface reads it, as JSON alone.
fn as_json(request: ModelInferRequest) -> Value {
    let (body, length) = framed_request(request).expect("framed");
    let framed = crate::read_request(body, Some(&length.to_string())).expect("readable");
    serde_json::from_slice(&framed.into_json().expect("json")).expect("a JSON object")
}

fn refused(request: ModelInferRequest) -> String {
    match framed_request(request) {
        Ok(_) => panic!("a bad request was framed"),
        Err(GrpcError::Invalid(message)) => message,
        Err(other) => panic!("a bad request is the client's fault, not {other:?}"),
    }
}

#[test]
fn typed_contents_are_framed_as_binary_tensors_of_their_datatype() {
    let inputs = vec![
        input(
            "x",
            "FP32",
            &[2, 2],
            InferTensorContents {
                fp32_contents: vec![1.5, -2.0, 0.25, 4.0],
                ..Default::default()
            },
        ),
        input(
            "n",
            "INT8",
            &[3],
            InferTensorContents {
                int_contents: vec![-128, 0, 127],
                ..Default::default()
            },
        ),
        input(
            "flag",
            "BOOL",
            &[2],
            InferTensorContents {
                bool_contents: vec![true, false],
                ..Default::default()
            },
        ),
        input(
            "word",
            "BYTES",
            &[2],
            InferTensorContents {
                bytes_contents: vec![b"ab".to_vec(), b"".to_vec()],
                ..Default::default()
            },
        ),
    ];
    let json = as_json(request(inputs, Vec::new()));
    assert_eq!(json["id"], "r1");
    assert_eq!(json["inputs"][0]["data"], json!([1.5, -2.0, 0.25, 4.0]));
    assert_eq!(json["inputs"][1]["data"], json!([-128, 0, 127]));
    assert_eq!(json["inputs"][2]["data"], json!([true, false]));
    assert_eq!(json["inputs"][3]["data"], json!(["ab", ""]));
}

#[test]
fn raw_contents_pass_as_they_are_and_every_output_is_asked_for_as_binary() {
    let mut raw = Vec::new();
    for x in [1.0f64, 2.0] {
        raw.extend_from_slice(&x.to_le_bytes());
    }
    let mut sent = request(
        vec![input("x", "FP64", &[1, 2], InferTensorContents::default())],
        vec![raw],
    );
    let (body, length) = framed_request(sent.clone()).expect("framed");
    let header: Value = serde_json::from_slice(&body[..length]).expect("header");
    assert_eq!(header["parameters"]["binary_data_output"], true);
    assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 16);
    assert_eq!(
        as_json(sent.clone())["inputs"][0]["data"],
        json!([1.0, 2.0])
    );

    sent.outputs = vec![proto::model_infer_request::InferRequestedOutputTensor {
        name: "y".into(),
        parameters: Default::default(),
    }];
    let (body, length) = framed_request(sent).expect("framed");
    let header: Value = serde_json::from_slice(&body[..length]).expect("header");
    assert_eq!(header["outputs"][0]["parameters"]["binary_data"], true);
}

#[test]
fn inputs_that_do_not_say_their_data_clearly_are_refused_with_the_reason() {
    let fp32 = |values: Vec<f32>| InferTensorContents {
        fp32_contents: values,
        ..Default::default()
    };
    let cases = [
        (
            request(
                vec![input("x", "FP32", &[1], fp32(vec![1.0]))],
                vec![vec![0; 4], vec![0; 4]],
            ),
            "2 entries for 1 inputs",
        ),
        (
            request(
                vec![input("x", "FP32", &[1], fp32(vec![1.0]))],
                vec![vec![0; 4]],
            ),
            "both contents and raw_input_contents",
        ),
        (
            request(
                vec![input(
                    "x",
                    "FP32",
                    &[1],
                    InferTensorContents {
                        int_contents: vec![1],
                        ..Default::default()
                    },
                )],
                Vec::new(),
            ),
            "carries int_contents; its values go in fp32_contents",
        ),
        (
            request(
                vec![input(
                    "x",
                    "INT8",
                    &[1],
                    InferTensorContents {
                        int_contents: vec![300],
                        ..Default::default()
                    },
                )],
                Vec::new(),
            ),
            "300 does not fit INT8",
        ),
        (
            request(
                vec![input(
                    "x",
                    "UINT16",
                    &[1],
                    InferTensorContents {
                        uint_contents: vec![70_000],
                        ..Default::default()
                    },
                )],
                Vec::new(),
            ),
            "70000 does not fit UINT16",
        ),
        (
            request(vec![input("x", "FP16", &[1], fp32(vec![1.0]))], Vec::new()),
            "send its bytes in raw_input_contents",
        ),
        (
            request(vec![input("x", "FP32", &[2], fp32(Vec::new()))], Vec::new()),
            "it has no data",
        ),
        (
            request(
                vec![input("x", "COMPLEX", &[1], fp32(vec![1.0]))],
                Vec::new(),
            ),
            "unknown datatype",
        ),
    ];
    for (request, reason) in cases {
        let message = refused(request);
        assert!(message.contains(reason), "{message}");
        // Each names the input, but for a count that belongs to no one input.
        let named = message.contains("\"x\"") || reason.contains("entries");
        assert!(named, "{message}");
    }
}

#[test]
fn a_framed_answer_becomes_raw_outputs_in_order() {
    let header = json!({
        "model_name": "m",
        "id": "r1",
        "parameters": {"sequence": 3},
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
            {"name": "label", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}},
        ],
    });
    let mut body = serde_json::to_vec(&header).expect("json");
    let length = body.len();
    body.extend_from_slice(&1.0f32.to_le_bytes());
    body.extend_from_slice(&2.0f32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.push(b'a');
    let response = infer_response(&body, Some(length)).expect("an answer");
    assert_eq!(response.model_name, "m");
    assert_eq!(response.model_version, "");
    assert_eq!(response.id, "r1");
    assert_eq!(
        response.parameters["sequence"].parameter_choice,
        Some(ParameterChoice::Int64Param(3))
    );
    assert_eq!(response.outputs.len(), 2);
    assert_eq!(response.outputs[0].shape, vec![2]);
    assert!(response.outputs[0].parameters.is_empty());
    assert_eq!(response.raw_output_contents[0].len(), 8);
    assert_eq!(response.raw_output_contents[1], b"\x01\0\0\0a");
}

#[test]
fn an_answer_without_its_bytes_is_an_internal_error() {
    for (header, tail) in [
        (
            json!({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]}),
            0,
        ),
        (
            json!({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 8}}]}),
            4,
        ),
    ] {
        let mut body = serde_json::to_vec(&header).expect("json");
        let length = body.len();
        body.resize(length + tail, 0);
        let Err(GrpcError::Internal(message)) = infer_response(&body, Some(length)) else {
            panic!("an answer without its data was not the model's fault");
        };
        assert!(message.contains("\"y\""), "{message}");
    }
    let Err(GrpcError::Internal(_)) = infer_response(b"[1, 2]", None) else {
        panic!("an answer that is not an object was not the model's fault");
    };
}

#[test]
fn an_answer_read_into_fields_reads_as_the_tree_reads_it() {
    let answers = [
        // In the protocol's types.
        r#"{"model_name":"m","model_version":"2","id":"r\u00e9","parameters":{"s":3,"t":"x","u":1.5,"v":[1]},
            "outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8,"k":true}}]}"#,
        r#"{"outputs":[]}"#,
        r#"{}"#,
        r#"{"outputs":null,"id":null,"parameters":null}"#,
        r#"{"outputs":[{"name":"a","shape":[-1],"parameters":{"binary_data_size":0}},{"name":"b","datatype":"BYTES","parameters":{"binary_data_size":8}}]}"#,
        r#"{"outputs":[{"name":"y","parameters":{"binary_data_size":"8"}}]}"#,
        r#"{"outputs":[{"name":"y","parameters":{"binary_data_size":9}}]}"#,
        // Not in the protocol's types: the tree's reading decides.
        r#"{"model_name":7,"outputs":[{"name":"y","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":8}}]}"#,
        r#"{"outputs":[{"name":"y","shape":[1.5,"x",18446744073709551615],"parameters":{"binary_data_size":8}}]}"#,
        r#"{"outputs":[["y","FP32",[1],{"binary_data_size":8}]]}"#,
        r#"{"outputs":[{"name":"y","parameters":[8]}]}"#,
        r#"{"outputs":{"name":"y"}}"#,
        r#"{"parameters":[1,2],"outputs":[]}"#,
        r#"{"id":"a","id":"b","outputs":[]}"#,
        r#"{"outputs":[{"name":"y","name":"z","parameters":{"binary_data_size":8}}]}"#,
        r#"["m","2","r1",{},[]]"#,
        r#"[]"#,
        r#"7"#,
        r#"{"outputs":[}"#,
        "",
    ];
    let data = [7u8; 8];
    for answer in answers {
        let mut body = answer.as_bytes().to_vec();
        body.extend_from_slice(&data);
        let header = answer.as_bytes();
        assert_eq!(
            infer_response(&body, Some(header.len())),
            infer_response_from_tree(header, &data),
            "{answer}"
        );
    }
    // Both readings ran above: the first seven answers are read into fields, the rest as trees.
    for (index, answer) in answers.iter().enumerate() {
        let fields = serde_json::from_slice::<Object<Answer>>(answer.as_bytes());
        assert_eq!(fields.is_ok(), index < 7, "{answer}");
    }
    // JSON that is not UTF-8 (a Latin-1 byte in a name): an error either way.
    let latin = b"{\"outputs\":[{\"name\":\"y\xe9\",\"datatype\":\"FP32\",\"shape\":[1],\"parameters\":{\"binary_data_size\":4}}]}";
    let mut body = latin.to_vec();
    body.extend_from_slice(&data[..4]);
    let read = infer_response(&body, Some(latin.len()));
    assert!(read.is_err());
    assert_eq!(read, infer_response_from_tree(latin, &data[..4]));
}

#[test]
fn a_parameter_the_binary_extension_owns_is_written_once_with_its_value() {
    let given = |key: &str, value: ParameterChoice| {
        HashMap::from([
            (
                key.to_string(),
                InferParameter {
                    parameter_choice: Some(value),
                },
            ),
            (
                "kept".to_string(),
                InferParameter {
                    parameter_choice: None,
                },
            ),
        ])
    };
    let mut sent = request(
        vec![input(
            "x",
            "FP32",
            &[1],
            InferTensorContents {
                fp32_contents: vec![1.0],
                ..Default::default()
            },
        )],
        vec![],
    );
    sent.inputs[0].parameters = given("binary_data_size", ParameterChoice::Int64Param(99));
    sent.parameters = given("binary_data_output", ParameterChoice::BoolParam(false));
    let (body, length) = framed_request(sent).expect("framed");
    let header = std::str::from_utf8(&body[..length]).expect("UTF-8");
    assert_eq!(header.matches("binary_data_size").count(), 1, "{header}");
    assert_eq!(header.matches("binary_data_output").count(), 1, "{header}");
    let json: Value = serde_json::from_str(header).expect("JSON");
    assert_eq!(json["inputs"][0]["parameters"]["binary_data_size"], 4);
    assert_eq!(json["inputs"][0]["parameters"]["kept"], Value::Null);
    assert_eq!(json["parameters"]["binary_data_output"], true);
    assert_eq!(json["id"], "r1");
    let no_id = ModelInferRequest {
        id: String::new(),
        ..request(vec![], vec![])
    };
    let (body, length) = framed_request(no_id).expect("framed");
    let json: Value = serde_json::from_slice(&body[..length]).expect("JSON");
    assert!(json.get("id").is_none(), "{json}");
    assert_eq!(json["inputs"], json!([]));
}

#[test]
fn metadata_lists_the_tensors_with_their_shapes() {
    let metadata = json!({
        "name": "m", "versions": ["1"], "platform": "onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
    });
    let response = metadata_response(&metadata);
    assert_eq!(response.name, "m");
    assert_eq!(response.versions, vec!["1"]);
    assert_eq!(response.platform, "onnx");
    assert_eq!(response.inputs[0].shape, vec![-1, 4]);
    assert_eq!(response.outputs[0].datatype, "INT64");
}
