//! Any body with any `Inference-Header-Content-Length`, read as Triton's
//! binary tensor extension, and any body decompressed: a clear error, or
//! JSON that a model can read; the answer's encoding never panics either.
//! The first byte picks the header length and the encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    // No header, the length of the body's first JSON object, a number, or text.
    let length = match pick % 4 {
        0 => None,
        1 => Some(
            body.iter()
                .position(|&b| b == b'}')
                .map_or(0, |at| at + 1)
                .to_string(),
        ),
        2 => Some((usize::from(pick) * 7).to_string()),
        _ => Some(String::from_utf8_lossy(&body[..body.len().min(6)]).into_owned()),
    };
    if let Ok((json, wanted)) = mme_oip::decode_request(body.to_vec(), length.as_deref()) {
        if length.is_some() {
            let request: serde_json::Value =
                serde_json::from_slice(&json).expect("a decoded request is JSON");
            // The decoded inputs, answered back as outputs, all as binary.
            if let Some(inputs) = request.get("inputs") {
                let mut answer = serde_json::Map::new();
                answer.insert("outputs".into(), inputs.clone());
                let all: serde_json::Value =
                    serde_json::json!({"parameters": {"binary_data_output": true}});
                let Ok((_, everything)) =
                    mme_oip::decode_request(all.to_string().into_bytes(), None)
                else {
                    panic!("binary_data_output is read");
                };
                let _ = mme_oip::encode_response(&mut answer, &everything);
            }
        }
        let _ = wanted.any();
    }
    let encoding = if pick % 2 == 0 { "gzip" } else { "deflate" };
    if let Ok(plain) = mme_oip::decompress(body.to_vec(), encoding, 1 << 16) {
        assert!(plain.len() <= 1 << 16);
    }
});
