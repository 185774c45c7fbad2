//! The common body, nothing but numbers in nested arrays (`[[0.5, 1.0]]`),
//! read in one pass. A batch of 64 rows of 17-digit floats spent most of its
//! decoding in serde_json's digit loop and its visitor per value; here each
//! number is one call to a parser that reads eight digits at a time, and
//! lands in a flat `f64` vector.
//!
//! Anything else (a string, `true`, `null`, an empty array, a syntax error,
//! a ragged array) answers `None`, and the general walk of `array.rs` reads
//! the body again: it is the one that says what is wrong, so both paths
//! accept exactly the same bodies and give the same errors.

use super::MAX_VALUES;

/// The deepest nesting serde_json reads (its limit is 128 levels, the
/// outermost included), so that a body too deep for the general walk is
/// not read here either.
const MAX_DEPTH: usize = 127;

/// The number grammar of JSON (no `+`, no leading zeros, no `.5` or `1.`,
/// no `NaN`), which `lexical-core` checks as it parses.
const JSON: u128 = lexical_core::format::JSON;
const OPTIONS: lexical_core::ParseFloatOptions = lexical_core::ParseFloatOptions::new();

/// The shape (from the nesting) and the values of `body`, when it holds
/// only finite numbers in non-empty arrays of one shape.
pub(super) fn numbers_only(body: &[u8]) -> Option<(Vec<usize>, Vec<f64>)> {
    // The element counts of the arrays still open, outermost first.
    let mut open: Vec<usize> = Vec::new();
    // The length of the arrays at each depth, once one has ended.
    let mut lengths: Vec<Option<usize>> = Vec::new();
    let mut leaf_depth = None;
    let mut values = Vec::with_capacity(body.len() / 8);
    let mut at = skip_space(body, 0);
    if body.get(at) != Some(&b'[') {
        return None;
    }
    loop {
        // A value starts at `at`.
        match *body.get(at)? {
            b'[' => {
                if open.len() == MAX_DEPTH {
                    return None;
                }
                open.push(0);
                at = skip_space(body, at + 1);
                if body.get(at) == Some(&b']') {
                    return None;
                }
                continue;
            }
            b'-' | b'0'..=b'9' => {
                if *leaf_depth.get_or_insert(open.len()) != open.len() {
                    return None;
                }
                let (x, used) =
                    lexical_core::parse_partial_with_options::<f64, JSON>(&body[at..], &OPTIONS)
                        .ok()?;
                if !x.is_finite() || values.len() >= MAX_VALUES {
                    return None;
                }
                values.push(x);
                at = skip_space(body, at + used);
            }
            _ => return None,
        }
        // A value ended: the arrays it ends with close, then a comma
        // starts the next value.
        loop {
            *open.last_mut()? += 1;
            match *body.get(at)? {
                b',' => {
                    at = skip_space(body, at + 1);
                    break;
                }
                b']' => {
                    let length = open.pop()?;
                    let depth = open.len();
                    if lengths.len() <= depth {
                        lengths.resize(depth + 1, None);
                    }
                    match &mut lengths[depth] {
                        slot @ None => *slot = Some(length),
                        Some(known) if *known == length => {}
                        Some(_) => return None,
                    }
                    at = skip_space(body, at + 1);
                    if open.is_empty() {
                        if at != body.len() {
                            return None;
                        }
                        let shape = lengths.into_iter().collect::<Option<Vec<usize>>>()?;
                        return Some((shape, values));
                    }
                }
                _ => return None,
            }
        }
    }
}

/// The first byte at or after `at` that is not JSON whitespace.
fn skip_space(body: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = body.get(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::array::{Scalar, Walk};

    /// What the general walk reads, when it reads only numbers.
    fn general(body: &str) -> Option<(Vec<usize>, Vec<f64>)> {
        let mut json = serde_json::Deserializer::from_str(body);
        let (shape, values) = Walk::shaped(&mut json).ok()?;
        json.end().ok()?;
        let numbers = values
            .into_iter()
            .map(|v| match v {
                Scalar::Number(x) => Some(x),
                _ => None,
            })
            .collect::<Option<Vec<f64>>>()?;
        Some((shape, numbers))
    }

    #[test]
    fn numbers_in_arrays_read_as_the_general_walk_reads_them() {
        for body in [
            "[[0.3872804641723633, -0.20690368115901947], [1e-7, 2E+3]]",
            " [ 1 , 2 , 3 ] \n",
            "[[[1], [2]], [[3], [4]]]",
            "[-0, 0.0, 123456789012345678901234567890, 4.9e-324]",
            "[[1.7976931348623157e308]]",
        ] {
            let fast = numbers_only(body.as_bytes());
            assert!(fast.is_some(), "{body}");
            assert_eq!(fast, general(body), "{body}");
        }
        assert_eq!(
            numbers_only(b"[[1, 2], [3, 4], [5, 6]]"),
            Some((vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
        );
    }

    #[test]
    fn everything_else_is_left_to_the_general_walk() {
        for body in [
            // Not numbers, or not only numbers.
            "[\"a\"]",
            "[true]",
            "[null]",
            "[{\"a\": 1}]",
            "{\"inputs\": []}",
            "7",
            // Empty arrays and ragged ones.
            "[]",
            "[[], []]",
            "[[1, 2], [3]]",
            "[[1], 2]",
            "[1, [2]]",
            "[[[1]], [[2], [3]], [4]]",
            // Not JSON numbers, or not JSON.
            "[01]",
            "[+1]",
            "[.5]",
            "[1.]",
            "[1e]",
            "[-]",
            "[NaN]",
            "[Infinity]",
            "[1e400]",
            "[0x10]",
            "[1 2]",
            "[1,]",
            "[,1]",
            "[1]]",
            "[[1]",
            "[1] x",
            "",
            "[",
        ] {
            assert_eq!(numbers_only(body.as_bytes()), None, "{body}");
        }
        // As deep as the general walk reads, and no deeper.
        for depth in MAX_DEPTH - 1..=MAX_DEPTH + 2 {
            let body = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(numbers_only(body.as_bytes()), general(&body), "{depth}");
        }
        let deepest = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(numbers_only(deepest.as_bytes()).is_some());
    }
}
