//! Any body, decoded the way the ONNX engine decodes requests (a JSON
//! array, CSV rows, or an Open Inference Protocol tensor, its data as JSON
//! or as Triton's binary data) and fitted to an input: an error, or values
//! that fill exactly the input's shape. The first byte picks the input's
//! element type and shape. A body that the fast path for numbers reads is
//! read the same by serde_json.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mme_onnx::decode::{Data, Element, InferRequest, Sent, Values, Wanted};
use serde_json::Value;

const ELEMENTS: [Element; 5] = [
    Element::F32,
    Element::F64,
    Element::Int,
    Element::Bool,
    Element::String,
];

const SHAPES: [&[Option<usize>]; 4] = [
    &[None, Some(4)],
    &[None, None],
    &[None, Some(1), Some(2), Some(2)],
    &[Some(3)],
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let pick = usize::from(pick);
    let wanted = Wanted {
        name: "x",
        element: ELEMENTS[pick % ELEMENTS.len()],
        shape: SHAPES[(pick / ELEMENTS.len()) % SHAPES.len()],
    };
    let json = Sent::from_json(body).map_err(|e| e.to_string());
    if let Ok(Sent {
        shape,
        values: Values::Numbers(numbers),
    }) = &json
    {
        let value: Value = serde_json::from_slice(body).expect("the fast path read JSON");
        let mut flat = Vec::new();
        flatten(&value, &mut flat);
        assert_eq!(numbers.len(), flat.len());
        for (fast, slow) in numbers.iter().zip(&flat) {
            assert!(
                (fast - slow).abs() <= 1e-15 * fast.abs().max(slow.abs()),
                "{fast} {slow}"
            );
        }
        assert_eq!(*shape, first_path(&value));
    }
    let mut decoded = vec![Sent::from_csv(body), json];
    if let Ok(request) = serde_json::from_slice::<InferRequest>(body) {
        decoded.extend(request.inputs.iter().map(|tensor| tensor.sent()));
        // The same bytes as each tensor's binary data: whatever they hold,
        // an error or values of the declared shape.
        decoded.extend(request.inputs.iter().map(|tensor| tensor.sent_binary(body)));
    }
    for sent in decoded.into_iter().flatten() {
        let Ok(typed) = sent.fit(&wanted) else {
            continue;
        };
        assert_eq!(typed.shape.len(), wanted.shape.len(), "{typed:?}");
        for (got, want) in typed.shape.iter().zip(wanted.shape) {
            if let Some(want) = want {
                assert_eq!(got, want, "{typed:?}");
            }
        }
        assert_eq!(typed.data.len(), typed.shape.iter().product::<usize>());
        let kind_matches = matches!(
            (&typed.data, wanted.element),
            (Data::F32(_), Element::F32)
                | (Data::F64(_), Element::F64)
                | (Data::Int(_), Element::Int)
                | (Data::Bool(_), Element::Bool)
                | (Data::String(_), Element::String)
        );
        assert!(kind_matches, "{typed:?} for {:?}", wanted.element);
    }
});

/// Every number of `value`, in order.
fn flatten(value: &Value, out: &mut Vec<f64>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        Value::Number(n) => out.push(n.as_f64().expect("a finite number")),
        other => panic!("the fast path read {other}"),
    }
}

/// The lengths of the first array at each depth.
fn first_path(mut value: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    while let Value::Array(items) = value {
        shape.push(items.len());
        match items.first() {
            Some(first) => value = first,
            None => break,
        }
    }
    shape
}
