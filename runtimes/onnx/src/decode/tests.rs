use serde_json::{Value, json};

use super::*;

fn from_json(value: &Value) -> Result<Sent, String> {
    Sent::from_json(value.to_string().as_bytes()).map_err(|e| e.to_string())
}

fn wanted<'a>(element: Element, shape: &'a [Option<usize>]) -> Wanted<'a> {
    Wanted {
        name: "x",
        element,
        shape,
    }
}

#[test]
fn json_arrays_take_their_shape_from_their_nesting() {
    let sent = from_json(&json!([[1, 2], [3, 4], [5, 6]])).unwrap();
    assert_eq!(sent.shape, vec![3, 2]);
    let tensor = sent.fit(&wanted(Element::F32, &[None, Some(2)])).unwrap();
    assert_eq!(tensor.shape, vec![3, 2]);
    assert_eq!(tensor.data, Data::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let one_row = from_json(&json!([1, 2])).unwrap();
    let tensor = one_row
        .fit(&wanted(Element::F64, &[None, Some(2)]))
        .unwrap();
    assert_eq!(tensor.shape, vec![1, 2]);
}

#[test]
fn bad_bodies_are_refused_with_what_is_wrong() {
    for (body, words) in [
        (json!([[1, 2], [3]]), "ragged"),
        (json!([[1], 2]), "ragged"),
        (json!([[[1]]]), "dimensions"),
        (json!([[1, 2, 3]]), "axis 1"),
        (json!([["a", "b"]]), "numbers"),
    ] {
        let err = from_json(&body)
            .and_then(|s| s.fit(&wanted(Element::F32, &[None, Some(2)])))
            .unwrap_err();
        assert!(err.contains(words), "{body}: {err}");
    }
    let err = from_json(&json!([[1.5]]))
        .unwrap()
        .fit(&wanted(Element::Int, &[None, Some(1)]))
        .unwrap_err();
    assert!(err.contains("integers"), "{err}");
}

#[test]
fn csv_rows_become_a_matrix() {
    let sent = Sent::from_csv(b"1,2\n3,4\n\n").unwrap();
    assert_eq!(sent.shape, vec![2, 2]);
    assert!(Sent::from_csv(b"1,2\n3\n").unwrap_err().contains("line 2"));
    assert!(
        Sent::from_csv(b"1,x\n")
            .unwrap_err()
            .contains("not a number")
    );
}

/// A v2 tensor, read as a request body is read (its data kept as text).
fn v2(tensor: Value) -> InferTensor {
    serde_json::from_str(&tensor.to_string()).unwrap()
}

#[test]
fn v2_tensors_check_their_shape_against_their_data() {
    let tensor =
        v2(json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}));
    let sent = tensor.sent().unwrap();
    assert_eq!(sent.shape, vec![2, 2]);
    assert_eq!(sent.values, Values::Numbers(vec![1.0, 2.0, 3.0, 4.0]));
    let lying = v2(
        json!({"name": "x", "shape": [1000000, 1000000, 1000000], "datatype": "FP32", "data": [1]}),
    );
    let err = lying
        .sent()
        .unwrap()
        .fit(&wanted(Element::F32, &[None, None, None]))
        .unwrap_err();
    assert!(err.contains("1 values"), "{err}");
    let negative = v2(json!({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}));
    assert!(negative.sent().unwrap_err().contains("negative"));
}

#[test]
fn v2_data_of_any_nesting_is_read_flat_and_checked_against_its_datatype() {
    let sent = |datatype: &str, data: Value| {
        v2(json!({"name": "x", "shape": [3], "datatype": datatype, "data": data})).sent()
    };
    // Nesting only groups: a ragged grouping is still three values.
    let ragged = sent("FP32", json!([[1], [2, 3]])).unwrap();
    assert_eq!(ragged.values.len(), 3);
    let labels = sent("BYTES", json!(["a", "b", "c"])).unwrap();
    assert_eq!(labels.values.len(), 3);
    for (datatype, data, words) in [
        ("BYTES", json!([1, 2, 3]), "non-strings"),
        ("FP32", json!([1, "b", 3]), "non-numbers"),
        ("FP8", json!([1, 2, 3]), "unknown datatype FP8"),
        ("FP8", json!([1, null, 3]), "unknown datatype FP8"),
        ("FP32", json!([1, {"a": 2}, 3]), "not an object"),
    ] {
        let err = sent(datatype, data.clone()).unwrap_err();
        assert!(err.contains(words), "{datatype} {data}: {err}");
    }
}

#[test]
fn binary_tensors_of_every_datatype_are_read_little_endian() {
    let tensor = |datatype: &str, shape: Value| {
        v2(json!({"name": "x", "shape": shape, "datatype": datatype,
                  "parameters": {"binary_data_size": 0}}))
    };
    let floats: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let sent = tensor("FP32", json!([1, 2])).sent_binary(&floats).unwrap();
    assert_eq!(sent.values, Values::F32(vec![1.5, -2.0]));
    let f32_input = sent
        .clone()
        .fit(&wanted(Element::F32, &[None, Some(2)]))
        .unwrap();
    assert_eq!(f32_input.data, Data::F32(vec![1.5, -2.0]));
    let f64_input = sent.fit(&wanted(Element::F64, &[None, Some(2)])).unwrap();
    assert_eq!(f64_input.data, Data::F64(vec![1.5, -2.0]));
    for (datatype, bytes, expected) in [
        ("INT8", vec![0xff], -1.0),
        ("UINT8", vec![0xff], 255.0),
        ("INT16", (-300i16).to_le_bytes().to_vec(), -300.0),
        ("UINT16", 60000u16.to_le_bytes().to_vec(), 60000.0),
        ("INT32", (-70000i32).to_le_bytes().to_vec(), -70000.0),
        ("UINT32", 4_000_000_000u32.to_le_bytes().to_vec(), 4.0e9),
        ("INT64", (-5i64).to_le_bytes().to_vec(), -5.0),
        ("UINT64", 7u64.to_le_bytes().to_vec(), 7.0),
        ("FP64", 0.25f64.to_le_bytes().to_vec(), 0.25),
        ("BOOL", vec![1], 1.0),
    ] {
        let sent = tensor(datatype, json!([1])).sent_binary(&bytes).unwrap();
        assert_eq!(sent.values, Values::Numbers(vec![expected]), "{datatype}");
    }
    for (datatype, bytes) in [
        ("FP16", half::f16::from_f32(-1.5).to_le_bytes()),
        ("BF16", half::bf16::from_f32(-1.5).to_le_bytes()),
    ] {
        let sent = tensor(datatype, json!([1])).sent_binary(&bytes).unwrap();
        assert_eq!(sent.values, Values::F32(vec![-1.5]), "{datatype}");
    }
    let mut labels = Vec::new();
    for text in ["setosa", ""] {
        labels.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
        labels.extend_from_slice(text.as_bytes());
    }
    let sent = tensor("BYTES", json!([2])).sent_binary(&labels).unwrap();
    let strings = sent.fit(&wanted(Element::String, &[None])).unwrap().data;
    assert_eq!(strings, Data::String(vec!["setosa".into(), String::new()]));
}

#[test]
fn binary_tensors_that_disagree_with_their_shape_or_type_are_refused() {
    let tensor = |datatype: &str, shape: Value| {
        v2(json!({"name": "x", "shape": shape, "datatype": datatype}))
    };
    for (datatype, shape, bytes, words) in [
        ("FP32", json!([2]), vec![0u8; 7], "2 FP32 elements"),
        (
            "FP32",
            json!([4_000_000_000u64, 4_000_000_000u64, 4_000_000_000u64]),
            vec![],
            "too many",
        ),
        ("FP32", json!([-1]), vec![], "negative"),
        ("FP16", json!([2]), vec![0, 0], "2 FP16 elements"),
        ("FP8", json!([1]), vec![0], "unknown datatype"),
        (
            "BYTES",
            json!([1]),
            vec![9, 0, 0, 0, b'a'],
            "claims 9 bytes",
        ),
        ("BYTES", json!([2]), vec![1, 0, 0, 0, b'a'], "shape says 2"),
        ("BYTES", json!([1]), vec![1, 0, 0, 0, 0xff], "UTF-8"),
    ] {
        let err = tensor(datatype, shape.clone())
            .sent_binary(&bytes)
            .unwrap_err();
        assert!(err.contains(words), "{datatype} {shape}: {err}");
        assert!(err.contains("\"x\""), "names the input: {err}");
    }
    let no_data = tensor("FP32", json!([1])).sent().unwrap_err();
    assert!(no_data.contains("binary_data_size"), "{no_data}");
}

#[test]
fn an_input_sent_twice_is_named() {
    let tensor = |name: &str| json!({"name": name, "shape": [1], "datatype": "FP32", "data": [1]});
    let request = |inputs: Vec<Value>| -> InferRequest {
        serde_json::from_str(&json!({ "inputs": inputs }).to_string()).unwrap()
    };
    assert_eq!(
        request(vec![tensor("a"), tensor("b"), tensor("a")]).duplicate_input(),
        Some("a")
    );
    assert_eq!(
        request(vec![tensor("a"), tensor("b")]).duplicate_input(),
        None
    );
}
