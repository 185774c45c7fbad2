//! Any body, under each content type a model sees, decoded the way the
//! guest SDK decodes requests: an `invalid-input` error, or a well-formed
//! matrix. The first byte picks the content type.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mme_guest::Request;

const CONTENT_TYPES: [&str; 5] = [
    "application/json",
    "text/csv",
    "application/vnd.oip.v2+json",
    "text/csv; charset=utf-8",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let request = Request {
        content_type: CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()].to_string(),
        accept: String::new(),
        body: body.to_vec(),
        attributes: String::new(),
    };
    let _ = request.json::<serde_json::Value>();
    let _ = request.is_open_inference();
    if let Ok(matrix) = request.matrix() {
        assert_eq!(matrix.data.len(), matrix.rows * matrix.cols, "{matrix:?}");
        assert_eq!(
            matrix.rows().count(),
            if matrix.cols == 0 { 0 } else { matrix.rows }
        );
    }
});
