use std::io::Write;

use serde_json::{Value, json};

use super::*;

/// A request as `tritonclient.http` writes one: the JSON header, then the bytes.
fn binary_request(header: &Value, tail: &[u8]) -> (Vec<u8>, String) {
    let mut body = serde_json::to_vec(header).expect("json");
    let length = body.len().to_string();
    body.extend_from_slice(tail);
    (body, length)
}

fn decoded(body: Vec<u8>, length: Option<&str>) -> (Value, BinaryOutputs) {
    let (json, wanted) = decode_request(body, length).expect("decodes");
    (serde_json::from_slice(&json).expect("json"), wanted)
}

fn error(body: Vec<u8>, length: Option<&str>) -> String {
    decode_request(body, length)
        .expect_err("refused")
        .to_string()
}

#[test]
fn binary_inputs_of_every_type_become_json_data() {
    let mut tail = Vec::new();
    for x in [0.5f32, -2.0] {
        tail.extend_from_slice(&x.to_le_bytes());
    }
    tail.extend_from_slice(&1.25f64.to_le_bytes());
    tail.extend_from_slice(&(-7i64).to_le_bytes());
    tail.extend_from_slice(&[1, 0]);
    for word in ["ab", ""] {
        tail.extend_from_slice(&(word.len() as u32).to_le_bytes());
        tail.extend_from_slice(word.as_bytes());
    }
    let header = json!({
        "id": "r",
        "inputs": [
            {"name": "f", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
            {"name": "d", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}},
            {"name": "i", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}},
            {"name": "b", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": 2}},
            {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 10}},
            {"name": "j", "datatype": "INT32", "shape": [1], "data": [3]},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": true}}],
    });
    let (body, length) = binary_request(&header, &tail);
    let (request, wanted) = decoded(body, Some(&length));
    let inputs = &request["inputs"];
    assert_eq!(inputs[0]["data"], json!([0.5, -2.0]));
    assert_eq!(inputs[1]["data"], json!([1.25]));
    assert_eq!(inputs[2]["data"], json!([-7]));
    assert_eq!(inputs[3]["data"], json!([true, false]));
    assert_eq!(inputs[4]["data"], json!(["ab", ""]));
    assert_eq!(inputs[5]["data"], json!([3]));
    // The extension's parameters are the host's business, not the model's.
    assert!(inputs[0].get("parameters").is_none(), "{request}");
    assert!(
        request["outputs"][0].get("parameters").is_none(),
        "{request}"
    );
    assert!(wanted.wants("y") && !wanted.wants("z"));
}

#[test]
fn plain_json_passes_unparsed_unless_it_asks_for_binary_outputs() {
    let body = br#"{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1]}]}"#.to_vec();
    let (json, wanted) = decode_request(body.clone(), None).expect("plain");
    assert_eq!(json, body);
    assert!(!wanted.any());
    let asks = json!({"inputs": [], "parameters": {"binary_data_output": true}});
    let (request, wanted) = decoded(serde_json::to_vec(&asks).expect("json"), None);
    assert!(wanted.wants("anything"));
    assert!(request.get("parameters").is_none(), "{request}");
    let but_one = json!({
        "inputs": [],
        "parameters": {"binary_data_output": true},
        "outputs": [{"name": "keep", "parameters": {"binary_data": false}}],
    });
    let (_, wanted) = decoded(serde_json::to_vec(&but_one).expect("json"), None);
    assert!(wanted.wants("other") && !wanted.wants("keep"));
}

#[test]
fn hostile_binary_bodies_are_refused_with_what_is_wrong() {
    let input = |size: Value, datatype: &str, shape: Value| {
        json!({"inputs": [{"name": "x", "datatype": datatype, "shape": shape,
            "parameters": {"binary_data_size": size}}]})
    };
    let four = 1.0f32.to_le_bytes();
    let cases: Vec<(Vec<u8>, Option<String>, &str)> = vec![
        (
            b"{}".to_vec(),
            Some("x".into()),
            "must be the JSON header's length",
        ),
        (
            b"{}".to_vec(),
            Some("99".into()),
            "the body has only 2 bytes",
        ),
        (
            b"{}".to_vec(),
            Some("18446744073709551616".into()),
            "must be the JSON header",
        ),
        (b"not json".to_vec(), Some("8".into()), "not a JSON object"),
        {
            let (b, l) = binary_request(&input(json!(8), "FP32", json!([1])), &four);
            (b, Some(l), "only 4 bytes follow")
        },
        {
            let (b, l) = binary_request(&input(json!(4), "FP32", json!([2])), &four);
            (b, Some(l), "2 FP32 elements (its shape) take 8")
        },
        {
            let trailing = [&four[..], &[0, 0]].concat();
            let (b, l) = binary_request(&input(json!(4), "FP32", json!([1])), &trailing);
            (b, Some(l), "2 bytes follow the last binary input")
        },
        {
            let (b, l) = binary_request(&input(json!(-1), "FP32", json!([1])), &four);
            (b, Some(l), "binary_data_size must be a count")
        },
        {
            let huge = json!([u64::MAX, u64::MAX]);
            let (b, l) = binary_request(&input(json!(4), "FP32", huge), &four);
            (b, Some(l), "shape must be a list of sizes")
        },
        {
            let (b, l) = binary_request(&input(json!(4), "FP16", json!([1])), &four);
            (b, Some(l), "1 FP16 elements (its shape) take 2")
        },
        {
            let (b, l) = binary_request(&input(json!(4), "COMPLEX", json!([1])), &four);
            (b, Some(l), "unknown datatype")
        },
        {
            let nan = f32::NAN.to_le_bytes();
            let (b, l) = binary_request(&input(json!(4), "FP32", json!([1])), &nan);
            (b, Some(l), "send finite values")
        },
        {
            let claims = [255, 255, 255, 255, b'a'];
            let (b, l) = binary_request(&input(json!(5), "BYTES", json!([1])), &claims);
            (b, Some(l), "claims 4294967295 bytes but only 1 follow")
        },
        {
            let cut = [1, 0];
            let (b, l) = binary_request(&input(json!(2), "BYTES", json!([1])), &cut);
            (b, Some(l), "cut short")
        },
        {
            let two = [1, 0, 0, 0, b'a', 1, 0, 0, 0, b'b'];
            let (b, l) = binary_request(&input(json!(10), "BYTES", json!([3])), &two);
            (b, Some(l), "holds 2 BYTES elements but its shape says 3")
        },
        {
            let latin = [1, 0, 0, 0, 0xff];
            let (b, l) = binary_request(&input(json!(5), "BYTES", json!([1])), &latin);
            (b, Some(l), "not UTF-8")
        },
        (
            serde_json::to_vec(&input(json!(4), "FP32", json!([1]))).expect("json"),
            None,
            "no Inference-Header-Content-Length header",
        ),
        (
            serde_json::to_vec(&json!({"parameters": {"binary_data_output": "yes"}}))
                .expect("json"),
            None,
            "binary_data_output must be true or false",
        ),
    ];
    for (body, length, expected) in cases {
        let message = error(body, length.as_deref());
        assert!(
            message.contains(expected),
            "{message:?} should say {expected:?}"
        );
    }
}

#[test]
fn outputs_asked_for_as_binary_leave_the_answer_as_bytes() {
    let mut answer: Map<String, Value> = serde_json::from_value(json!({
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2, 1], "data": [[0.5], [2.0]]},
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["cat"]},
            {"name": "n", "datatype": "INT16", "shape": [1], "data": [-2]},
            {"name": "ok", "datatype": "BOOL", "shape": [1], "data": [true]},
            {"name": "json", "datatype": "FP64", "shape": [1], "data": [1.5]},
        ]
    }))
    .expect("answer");
    let wanted = BinaryOutputs {
        all: true,
        named: HashMap::from([("json".to_string(), false)]),
    };
    let tail = encode_response(&mut answer, &wanted)
        .expect("encodes")
        .expect("binary");
    let mut expected = Vec::new();
    expected.extend_from_slice(&0.5f32.to_le_bytes());
    expected.extend_from_slice(&2.0f32.to_le_bytes());
    expected.extend_from_slice(&[3, 0, 0, 0, b'c', b'a', b't']);
    expected.extend_from_slice(&(-2i16).to_le_bytes());
    expected.push(1);
    assert_eq!(tail, expected);
    let outputs = &answer["outputs"];
    let sizes: Vec<&Value> = (0..4)
        .map(|i| &outputs[i]["parameters"]["binary_data_size"])
        .collect();
    assert_eq!(sizes, [&json!(8), &json!(7), &json!(2), &json!(1)]);
    assert!(outputs[0].get("data").is_none());
    assert_eq!(outputs[4]["data"], json!([1.5]));

    let mut plain = answer.clone();
    assert_eq!(
        encode_response(&mut plain, &BinaryOutputs::default()),
        Ok(None)
    );
}

#[test]
fn an_answer_that_does_not_fit_its_datatype_is_an_error_that_names_the_output() {
    let mut answer: Map<String, Value> = serde_json::from_value(json!({
        "outputs": [{"name": "n", "datatype": "INT8", "shape": [1], "data": [300]}]
    }))
    .expect("answer");
    let wanted = BinaryOutputs {
        all: true,
        named: HashMap::new(),
    };
    let message = encode_response(&mut answer, &wanted)
        .expect_err("300 is no INT8")
        .to_string();
    assert!(
        message.contains("\"n\"") && message.contains("INT8"),
        "{message}"
    );
}

#[test]
fn compressed_bodies_are_decompressed_under_the_same_cap() {
    let plain = br#"{"inputs":[]}"#.to_vec();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&plain).expect("gzip");
    let gzip = gzip.finish().expect("gzip");
    assert_eq!(decompress(gzip, "gzip", 1024), Ok(plain.clone()));
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&plain).expect("deflate");
    let zlib = zlib.finish().expect("deflate");
    assert_eq!(decompress(zlib, "Deflate", 1024), Ok(plain.clone()));
    assert_eq!(decompress(plain.clone(), "identity", 4), Ok(plain.clone()));

    // A bomb: 64 MiB of zeros in a few KiB, read no further than the cap.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        bomb.write_all(&zeros).expect("bomb");
    }
    let bomb = bomb.finish().expect("bomb");
    assert!(bomb.len() < 1 << 20);
    assert_eq!(
        decompress(bomb, "gzip", 1 << 20),
        Err(EncodingError::TooLarge(1 << 20))
    );

    assert!(matches!(
        decompress(b"not gzip".to_vec(), "gzip", 1024),
        Err(EncodingError::Corrupt { .. })
    ));
    assert_eq!(
        decompress(plain, "br", 1024),
        Err(EncodingError::Unsupported("br".into()))
    );
}

#[test]
fn only_a_framed_content_type_has_a_header_length() {
    assert_eq!(framed_header_length(&framed_content_type(42)), Some(42));
    assert!(framed_content_type(7).starts_with(OIP_BINARY));
    // Written as this crate writes it, then more: the general reading.
    let more = format!("{}; x=1", framed_content_type(42));
    assert_eq!(framed_header_length(&more), Some(42));
    let digits_spaced = format!("{OIP_BINARY}; header-length= 9 ");
    assert_eq!(framed_header_length(&digits_spaced), Some(9));
    let not_digits = format!("{OIP_BINARY}; header-length=4x2");
    assert_eq!(framed_header_length(&not_digits), None);
    let spaced = format!("{OIP_BINARY};Header-Length = 7;x=1");
    assert_eq!(framed_header_length(&spaced), Some(7));
    assert_eq!(framed_header_length(OIP_BINARY), None);
    assert_eq!(
        framed_header_length(&format!("{OIP_BINARY}; header-length=-1")),
        None
    );
    assert_eq!(
        framed_header_length("application/json; header-length=42"),
        None
    );
}

#[test]
fn half_precision_tensors_become_numbers_and_numbers_half_precision() {
    let mut tail = Vec::new();
    for x in [0.5f32, -1.25] {
        tail.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
    }
    tail.extend_from_slice(&half::bf16::from_f32(3.0).to_le_bytes());
    let header = json!({
        "inputs": [
            {"name": "h", "datatype": "FP16", "shape": [2], "parameters": {"binary_data_size": 4}},
            {"name": "b", "datatype": "BF16", "shape": [1], "parameters": {"binary_data_size": 2}},
        ],
    });
    let (body, length) = binary_request(&header, &tail);
    let (request, _) = decoded(body, Some(&length));
    assert_eq!(request["inputs"][0]["data"], json!([0.5, -1.25]));
    assert_eq!(request["inputs"][1]["data"], json!([3.0]));

    let mut answer: Map<String, Value> = serde_json::from_value(json!({
        "outputs": [
            {"name": "h", "datatype": "FP16", "shape": [2], "data": [0.5, -1.25]},
            {"name": "b", "datatype": "BF16", "shape": [1], "data": [3.0]},
        ]
    }))
    .expect("answer");
    let all = BinaryOutputs {
        all: true,
        named: HashMap::new(),
    };
    let written = encode_response(&mut answer, &all).expect("encodes");
    assert_eq!(written, Some(tail));
}

#[test]
fn elements_read_every_fixed_width_datatype_at_its_extremes() {
    use crate::{Element, elements};
    let read = |datatype: &str, bytes: &[u8]| -> Vec<Element> {
        elements(datatype, bytes).expect("a fixed width").collect()
    };
    assert_eq!(
        read("BOOL", &[0, 1, 7]),
        [false, true, true].map(Element::Bool)
    );
    assert_eq!(
        read("INT8", &[0x80, 0x7f]),
        [-128, 127].map(Element::Signed)
    );
    assert_eq!(read("INT16", &(-2i16).to_le_bytes()), [Element::Signed(-2)]);
    assert_eq!(
        read("INT32", &i32::MIN.to_le_bytes()),
        [Element::Signed(i64::from(i32::MIN))]
    );
    assert_eq!(
        read("INT64", &i64::MIN.to_le_bytes()),
        [Element::Signed(i64::MIN)]
    );
    assert_eq!(read("UINT8", &[255]), [Element::Unsigned(255)]);
    assert_eq!(
        read("UINT64", &u64::MAX.to_le_bytes()),
        [Element::Unsigned(u64::MAX)]
    );
    assert_eq!(
        read("FP16", &half::f16::from_f32(1.5).to_le_bytes()),
        [Element::Float(1.5)]
    );
    assert_eq!(
        read("BF16", &half::bf16::from_f32(-3.0).to_le_bytes()),
        [Element::Float(-3.0)]
    );
    assert_eq!(read("FP32", &0.25f32.to_le_bytes()), [Element::Float(0.25)]);
    assert_eq!(
        read("FP64", &1e300f64.to_le_bytes()),
        [Element::Float(1e300)]
    );
    // A last element cut short is left out; BYTES has no fixed width.
    assert_eq!(read("INT32", &[1, 0, 0, 0, 9]), [Element::Signed(1)]);
    assert!(elements("BYTES", b"").is_err());
    assert_eq!(Element::Bool(true).as_f64(), 1.0);
}

#[test]
fn fields_are_written_first_into_a_header_that_does_not_have_them() {
    let fields = [("model_name", "m\"1"), ("model_version", "2")];
    let named = with_fields_first(br#" {"id":"a","outputs":[]}"#, &fields).unwrap();
    let value: Value = serde_json::from_slice(&named).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"model_name": "m\"1", "model_version": "2", "id": "a", "outputs": []})
    );
    let empty = with_fields_first(b"{ }", &fields).unwrap();
    let value: Value = serde_json::from_slice(&empty).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"model_name": "m\"1", "model_version": "2"})
    );
    // Not one object, a field already there (even as text), or an escape
    // (which could spell a field's name in other bytes): the caller parses.
    for header in [
        &b"[1]"[..],
        b"{\"a\":",
        b"{} {}",
        b"",
        br#"{"model_name":"x"}"#,
        br#"{"id":"model_version"}"#,
        br#"{"outputs":[],"model\u005fname":"another"}"#,
        br#"{"id":"a\"b"}"#,
    ] {
        assert_eq!(
            with_fields_first(header, &fields),
            None,
            "{}",
            String::from_utf8_lossy(header)
        );
    }
}

/// A framed request read as `read_request` reads it (borrowed fields where
/// they fit), and as a tree: the same JSON for the model, the same binary
/// choices and places, or the same error.
fn both_readings(header: &str, tail: &[u8]) -> (Result<(Vec<u8>, BinaryOutputs), String>, bool) {
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(tail);
    let length = header.len();
    let fast = Header::read(header.as_bytes()).is_some();
    let read = read_request(body.clone(), Some(&length.to_string()))
        .and_then(|framed| {
            let wanted = framed.wanted.clone();
            Ok((framed.tensors.clone(), framed.into_json()?, wanted))
        })
        .map_err(|e| e.to_string());
    let as_json = read_request_for(body.clone(), Some(&length.to_string()), Reader::Json)
        .and_then(|framed| {
            let wanted = framed.wanted.clone();
            Ok((framed.tensors.clone(), framed.into_json()?, wanted))
        })
        .map_err(|e| e.to_string());
    assert_eq!(read, as_json, "{header}");
    let tree = read_tree(&body, length)
        .and_then(|(header, wanted, tensors)| {
            let framed = Framed {
                body: body.clone(),
                header,
                header_length: Some(length),
                tensors: tensors.clone(),
                wanted: wanted.clone(),
            };
            Ok((tensors, framed.into_json()?, wanted))
        })
        .map_err(|e| e.to_string());
    assert_eq!(read, tree, "{header}");
    (read.map(|(_, json, wanted)| (json, wanted)), fast)
}

#[test]
fn a_header_that_is_not_utf8_is_refused_by_every_reading() {
    // A Latin-1 byte in the input's name: JSON text must be UTF-8.
    let header = b"{\"inputs\":[{\"name\":\"x\xe9\",\"shape\":[1],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":4}}]}";
    assert!(Header::read(header).is_none());
    let mut body = header.to_vec();
    body.extend_from_slice(&1.5f32.to_le_bytes());
    let length = header.len().to_string();
    let tree = read_tree(&body, header.len())
        .map(|_| ())
        .map_err(|e| e.to_string());
    assert!(tree.is_err());
    for reader in [Reader::BinaryTensors, Reader::Json] {
        let read = read_request_for(body.clone(), Some(&length), reader)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(read, tree);
    }
}

#[test]
fn a_header_read_into_fields_reads_as_the_tree_reads_it() {
    let four = 1.5f32.to_le_bytes();
    let eight: Vec<u8> = [1.5f32, 2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
    let input = |rest: &str| {
        format!(r#"{{"inputs":[{{"name":"x","shape":[1,2],"datatype":"FP32"{rest}}}]}}"#)
    };
    let sized = r#","parameters":{"binary_data_size":8}"#;
    // Headers in the protocol's types: read into fields.
    for (header, tail) in [
        (input(sized), &eight[..]),
        (
            r#"{"id":"a\"b","inputs":[{"name":"x\u00e9","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8,"other":[1]}}],"parameters":{"binary_data_output":true},"outputs":[{"name":"y","parameters":{"binary_data":false}},{"name":"z"}]}"#.to_string(),
            &eight[..],
        ),
        (
            r#"{"inputs":[{"name":"j","shape":[1],"datatype":"FP32","data":[1]},{"name":"b","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}],"parameters":null}"#.to_string(),
            &four[..],
        ),
        (r#"{"inputs":[{"shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#.to_string(), &four[..]),
        (r#"{"inputs":[{"name":"x","parameters":{"binary_data_size":4}}]}"#.to_string(), &four[..]),
        (r#"{"inputs":[{"name":"x","datatype":"FP32","parameters":{"binary_data_size":4}}]}"#.to_string(), &four[..]),
        (input(r#","parameters":{"binary_data_size":4}"#), &four[..]),
        (input(r#","parameters":{"binary_data_size":9}"#), &eight[..]),
        (input(sized), &[0u8; 9][..]),
        (input(r#","parameters":{"binary_data_size":8}"#).replace("FP32", "FP99"), &eight[..]),
        (input(sized).replace("[1,2]", "[18446744073709551615,2]"), &eight[..]),
        (input(sized).replace("[1,2]", "null"), &eight[..]),
        (r#"{"inputs":[]}"#.to_string(), &[][..]),
        ("{}".to_string(), &[][..]),
        (" {} ".to_string(), &[1u8][..]),
    ] {
        let (_, fast) = both_readings(&header, tail);
        assert!(fast, "{header}");
    }
    // Anything else: read as a tree, with its errors.
    for (header, tail) in [
        (
            input(r#","parameters":{"binary_data_size":null}"#),
            &eight[..],
        ),
        (
            input(r#","parameters":{"binary_data_size":-8}"#),
            &eight[..],
        ),
        (
            input(r#","parameters":{"binary_data_size":8.0}"#),
            &eight[..],
        ),
        (input(sized).replace("[1,2]", "[1,-2]"), &eight[..]),
        (
            input(sized).replace(r#""name":"x""#, r#""name":7"#),
            &eight[..],
        ),
        (
            input(sized).replace(r#""name":"x""#, r#""name":"x","name":"y""#),
            &eight[..],
        ),
        (
            input(sized).replace(r#""datatype":"FP32""#, r#""datatype":32"#),
            &eight[..],
        ),
        (
            format!(
                r#"{{"inputs":[7,{}]}}"#,
                &input(sized)[11..input(sized).len() - 2]
            ),
            &eight[..],
        ),
        (r#"{"inputs":null}"#.to_string(), &[][..]),
        (r#"{"inputs":[],"inputs":[]}"#.to_string(), &[][..]),
        (
            r#"{"parameters":{"binary_data_output":null}}"#.to_string(),
            &[][..],
        ),
        (
            r#"{"parameters":{"binary_data_output":"yes"}}"#.to_string(),
            &[][..],
        ),
        (r#"{"parameters":[]}"#.to_string(), &[][..]),
        (
            r#"{"outputs":[{"name":"y","parameters":{"binary_data":1}}]}"#.to_string(),
            &[][..],
        ),
        (
            r#"{"outputs":[{"name":3,"parameters":{"binary_data":true}}]}"#.to_string(),
            &[][..],
        ),
        (r#"{"outputs":[7]}"#.to_string(), &[][..]),
        ("[]".to_string(), &[][..]),
        ("[[]]".to_string(), &[][..]),
        ("{".to_string(), &[][..]),
        (r#"{"parameters":[true]}"#.to_string(), &[][..]),
        (
            r#"{"inputs":[["x",[1],"FP32",{"binary_data_size":4}]]}"#.to_string(),
            &four[..],
        ),
        (input(r#","parameters":[8]"#), &eight[..]),
        (
            r#"{"outputs":[["y",{"binary_data":true}]]}"#.to_string(),
            &[][..],
        ),
    ] {
        let (_, fast) = both_readings(&header, tail);
        assert!(!fast, "{header}");
    }
}
