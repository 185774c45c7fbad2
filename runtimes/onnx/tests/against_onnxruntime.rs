//! The engine against onnxruntime, model by model: every model that
//! `tests/onnx/make_models.py` exports with the real converters is run here
//! on the same rows, and each output must match onnxruntime's (labels
//! identical, numbers within 1e-4 relative).
//!
//! The models are made by `cargo xtask test`, which sets `MME_ONNX_MODELS`.

#![allow(clippy::unwrap_used)] // A test that cannot set up should stop loudly.

use std::path::PathBuf;

use mme_guest::{Model, OIP_JSON, Request};
use mme_onnx::OnnxModel;
use serde_json::{Value, json};

fn models_dir() -> PathBuf {
    PathBuf::from(std::env::var("MME_ONNX_MODELS").expect(
        "MME_ONNX_MODELS names the folder of tests/onnx/make_models.py; run `cargo xtask test`",
    ))
}

/// Whether `got` matches `want`: equal labels, numbers within 1e-4 relative.
fn close(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(_), Value::Number(_)) if is_label(want) => is_label(got) && got == want,
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (
                g.as_f64().unwrap_or(f64::NAN),
                w.as_f64().unwrap_or(f64::NAN),
            );
            (g - w).abs() <= 1e-4 * w.abs().max(1.0)
        }
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(g, w)| close(g, w))
        }
        (Value::Object(g), Value::Object(w)) => {
            g.len() == w.len() && w.iter().all(|(k, w)| g.get(k).is_some_and(|g| close(g, w)))
        }
        // Labels: the same type and value (1 is not 1.0, "1" is not 1).
        _ => got == want,
    }
}

/// Whether `value` is a label: an integer or a string, not a float.
fn is_label(value: &Value) -> bool {
    value.is_string() || value.is_i64() || value.is_u64()
}

fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

/// What the engine answers on v2 for a ZipMap output: its values, in class order.
fn zipmap_values(rows: &Value) -> Value {
    let mut out = Vec::new();
    for row in rows.as_array().into_iter().flatten() {
        if let Value::Object(map) = row {
            out.extend(map.values().cloned());
        }
    }
    Value::Array(out)
}

/// A v2 request's JSON header and binary data for one tensor of `data`.
fn binary_request(shape: &[usize], datatype: &str, data: &[Value]) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = Vec::new();
    for value in data {
        match datatype {
            "BYTES" => {
                let text = value.as_str().unwrap_or_default();
                bytes.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
                bytes.extend_from_slice(text.as_bytes());
            }
            "INT64" => bytes.extend_from_slice(&value.as_i64().unwrap().to_le_bytes()),
            // JSON's null, a missing value, is NaN in binary.
            _ => {
                bytes.extend_from_slice(&(value.as_f64().unwrap_or(f64::NAN) as f32).to_le_bytes())
            }
        }
    }
    let header = json!({"id": "t", "inputs": [{"name": "ignored", "shape": shape, "datatype": datatype,
        "parameters": {"binary_data_size": bytes.len()}}], "parameters": {"binary_data_output": true}});
    (header.to_string().into_bytes(), bytes)
}

/// A v2 answer with binary outputs as JSON alone: each output's bytes
/// after the header read back as `data`.
fn unframe(body: &[u8], header_length: usize) -> Value {
    let mut answer: Value = serde_json::from_slice(&body[..header_length]).unwrap();
    let mut binary = &body[header_length..];
    for output in answer["outputs"].as_array_mut().unwrap() {
        let Some(size) = output.pointer("/parameters/binary_data_size") else {
            continue;
        };
        let (bytes, rest) = binary.split_at(usize::try_from(size.as_u64().unwrap()).unwrap());
        binary = rest;
        let datatype = output["datatype"].as_str().unwrap().to_string();
        let data: Vec<Value> = match datatype.as_str() {
            "FP32" => bytes
                .chunks_exact(4)
                .map(|c| json!(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            "FP64" => bytes
                .chunks_exact(8)
                .map(|c| json!(f64::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            "INT64" => bytes
                .chunks_exact(8)
                .map(|c| json!(i64::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            "INT32" => bytes
                .chunks_exact(4)
                .map(|c| json!(i32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            "BOOL" => bytes.iter().map(|&b| json!(b != 0)).collect(),
            "BYTES" => strings_of(bytes),
            other => panic!("no reader for {other}"),
        };
        output["data"] = Value::Array(data);
    }
    assert!(
        binary.is_empty(),
        "{} bytes after the last output",
        binary.len()
    );
    answer
}

/// BYTES elements, each a 4-byte length and its text.
fn strings_of(mut bytes: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some((length, rest)) = bytes.split_first_chunk::<4>() {
        let (text, rest) = rest.split_at(u32::from_le_bytes(*length) as usize);
        out.push(json!(std::str::from_utf8(text).unwrap()));
        bytes = rest;
    }
    out
}

/// Checks a v2 answer: every output a tensor; a ZipMap is its FP32 values.
fn check_v2(
    name: &str,
    answer: Result<mme_guest::Response, mme_guest::Error>,
    ort: &serde_json::Map<String, Value>,
    (binary, failures): (bool, &mut Vec<String>),
) {
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return failures.push(format!("{name}: v2: {e:?}")),
    };
    let framed = mme_oip::framed_header_length(&answer.content_type);
    if framed.is_some() != binary {
        failures.push(format!(
            "{name}: answered as {}, asked for binary outputs: {binary}",
            answer.content_type
        ));
    }
    let got = match framed {
        Some(length) => unframe(&answer.body, length),
        None => serde_json::from_slice(&answer.body).unwrap(),
    };
    for (output, want) in ort {
        let tensor = got["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| &t["name"] == output);
        let Some(tensor) = tensor else {
            failures.push(format!("{name}: v2 has no output {output}: {got}"));
            continue;
        };
        let mut want_flat = Vec::new();
        if want
            .as_array()
            .and_then(|a| a.first())
            .is_some_and(Value::is_object)
        {
            flatten(&zipmap_values(want), &mut want_flat);
        } else {
            flatten(want, &mut want_flat);
        }
        if !close(&tensor["data"], &Value::Array(want_flat.clone())) {
            failures.push(format!(
                "{name}: v2 output {output} {}\n  onnxruntime {want_flat:?}",
                tensor["data"]
            ));
        }
    }
}

#[test]
fn every_converted_model_matches_onnxruntime() {
    let dir = models_dir();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("models folder")
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let model =
            match OnnxModel::from_bytes(&std::fs::read(path.with_extension("onnx")).unwrap()) {
                Ok(model) => model,
                Err(e) => {
                    failures.push(format!("{name}: load: {e:?}"));
                    continue;
                }
            };
        let rows = &record["rows"];
        let ort = record["ort"].as_object().unwrap();

        // The plain route: one output as nested lists, several as an object by name.
        let plain = model.predict(Request::json_body(rows.to_string()));
        match plain {
            Ok(answer) => {
                let got: Value = serde_json::from_slice(&answer.body).unwrap();
                let want = if ort.len() == 1 {
                    ort.values().next().unwrap().clone()
                } else {
                    Value::Object(ort.clone())
                };
                if !close(&got, &want) {
                    failures.push(format!("{name}: plain answer {got}\n  onnxruntime {want}"));
                }
            }
            Err(e) => failures.push(format!("{name}: plain: {e:?}")),
        }

        // v2, as JSON.
        let mut shape = Vec::new();
        let mut at = rows;
        while let Value::Array(items) = at {
            shape.push(items.len());
            at = &items[0];
        }
        let mut data = Vec::new();
        flatten(rows, &mut data);
        let datatype = if data.iter().all(Value::is_string) {
            "BYTES"
        } else if data.iter().all(Value::is_i64) {
            "INT64"
        } else {
            "FP32"
        };
        let request = json!({"id": "t", "inputs": [{"name": "ignored", "shape": shape, "datatype": datatype, "data": data}]});
        let json_request = Request {
            content_type: OIP_JSON.into(),
            accept: String::new(),
            body: request.to_string().into_bytes(),
            attributes: String::new(),
        };
        check_v2(
            &name,
            model.predict(json_request),
            ort,
            (false, &mut failures),
        );

        // The same tensor as Triton's binary data, as tritonclient sends it
        // by default and the host passes it to the engine.
        let (header, binary) = binary_request(&shape, datatype, &data);
        let binary_request = Request {
            content_type: mme_oip::framed_content_type(header.len()),
            accept: String::new(),
            body: [header, binary].concat(),
            attributes: String::new(),
        };
        check_v2(
            &format!("{name} (binary)"),
            model.predict(binary_request),
            ort,
            (true, &mut failures),
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} models in {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {checked} models differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
