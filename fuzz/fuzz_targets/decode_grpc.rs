//! Any bytes as a gRPC `ModelInferRequest`, converted to the binary tensor
//! extension's frame and read back as the HTTP path reads it; and any bytes
//! as a model's framed answer, converted to a `ModelInferResponse`. Each is
//! a clear error or a well-formed result, never a panic. The first byte
//! picks the answer's header length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mme_oip::grpc::proto::ModelInferRequest;
use mme_oip::grpc::{framed_request, infer_response};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ModelInferRequest::decode(data)
        && let Ok((body, length)) = framed_request(request)
    {
        assert!(length <= body.len());
        // What a client could have sent over HTTP: the same checks apply.
        if let Ok(framed) = mme_oip::read_request(body, Some(&length.to_string())) {
            let _ = framed.into_json();
        }
    }
    let Some((&pick, answer)) = data.split_first() else {
        return;
    };
    let length = match pick % 3 {
        0 => None,
        1 => answer.iter().position(|&b| b == b'}').map(|at| at + 1),
        _ => Some(usize::from(pick) * 5),
    };
    if let Ok(response) = infer_response(answer, length) {
        assert_eq!(response.outputs.len(), response.raw_output_contents.len());
    }
});
