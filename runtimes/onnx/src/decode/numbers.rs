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
                let (x, used) = match short_number(&body[at..]) {
                    Some(read) => read,
                    None => {
                        lexical_core::parse_partial_with_options::<f64, JSON>(&body[at..], &OPTIONS)
                            .ok()?
                    }
                };
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

/// The powers of ten that an `f64` holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = {
    let mut powers = [1.0; 23];
    let mut k = 1;
    while k < powers.len() {
        powers[k] = powers[k - 1] * 10.0;
        k += 1;
    }
    powers
};

/// The number at the start of `text` and the bytes it takes, when its
/// digits make an integer below 10^19 and its power of ten is one an `f64`
/// holds exactly: what a float printed by Python, numpy or JavaScript
/// looks like.
///
/// It is computed as serde_json computes it (the digits as an integer, then
/// one product or quotient by a power of ten), so that a body read here and
/// by the general walk gives the same values. `None` leaves the number to
/// `lexical-core`, which reads any JSON number and refuses what is not one.
/// This is the hot path of a JSON batch; in wasm every turn of a loop also
/// checks the epoch deadline, so the digits go eight at a time.
fn short_number(text: &[u8]) -> Option<(f64, usize)> {
    let negative = text.first() == Some(&b'-');
    let mut at = usize::from(negative);
    let mut significand: u64 = 0;
    let mut exponent: i32 = 0;
    match text.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at = digit_run(text, at, &mut significand)?.0,
        _ => return None,
    }
    if text.get(at) == Some(&b'.') {
        let (end, count) = digit_run(text, at + 1, &mut significand)?;
        if count == 0 {
            return None;
        }
        exponent = -i32::try_from(count).ok()?;
        at = end;
    }
    if let Some(b'e' | b'E') = text.get(at) {
        at += 1;
        let negative_power = text.get(at) == Some(&b'-');
        if let Some(b'-' | b'+') = text.get(at) {
            at += 1;
        }
        let mut power: u64 = 0;
        let (end, count) = digit_run(text, at, &mut power)?;
        if count == 0 || power > 1000 {
            return None;
        }
        let power = i32::try_from(power).ok()?;
        exponent = exponent.saturating_add(if negative_power { -power } else { power });
        at = end;
    }
    let scale = *EXACT_POWERS_OF_TEN.get(exponent.unsigned_abs() as usize)?;
    let magnitude = if exponent >= 0 {
        significand as f64 * scale
    } else {
        significand as f64 / scale
    };
    Some((if negative { -magnitude } else { magnitude }, at))
}

/// Reads the decimal digits from `at` into `value` (`value * 10^count +
/// digits`): where they end and how many there were. `None` when `value`
/// would reach 10^19, the most a `u64` takes for every further digit.
fn digit_run(text: &[u8], mut at: usize, value: &mut u64) -> Option<(usize, usize)> {
    const LIMIT: u64 = 10_000_000_000_000_000_000;
    let first = at;
    while let Some(eight) = eight_digits(text, at) {
        if *value >= LIMIT / 100_000_000 {
            return None;
        }
        *value = *value * 100_000_000 + eight;
        at += 8;
    }
    while let Some(&digit @ b'0'..=b'9') = text.get(at) {
        if *value >= LIMIT / 10 {
            return None;
        }
        *value = *value * 10 + u64::from(digit - b'0');
        at += 1;
    }
    Some((at, at - first))
}

/// The value of the eight bytes at `at` when all are decimal digits, found
/// with a few operations on them as one `u64` (the method of simdjson and
/// of the standard library's float parser).
fn eight_digits(text: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = text.get(at..at.checked_add(8)?)?.try_into().ok()?;
    let word = u64::from_le_bytes(bytes);
    // Every byte is 0x30..=0x39: its high nibble is 3, and adding 6 does
    // not carry into it.
    let high = 0xF0F0_F0F0_F0F0_F0F0;
    if (word & high) | ((word.wrapping_add(0x0606_0606_0606_0606) & high) >> 4)
        != 0x3333_3333_3333_3333
    {
        return None;
    }
    // Pairs of digits, then quads, then all eight; the first digit is the
    // lowest byte.
    let digits = word - 0x3030_3030_3030_3030;
    let pairs = digits * 10 + (digits >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    let low = (pairs & mask).wrapping_mul(100 + (1_000_000 << 32));
    let high = ((pairs >> 16) & mask).wrapping_mul(1 + (10_000 << 32));
    Some(low.wrapping_add(high) >> 32)
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

    /// Every way a float is commonly printed, from spread-out bit patterns.
    fn printed_floats() -> Vec<String> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut texts = Vec::new();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let wide = f64::from_bits(state);
            let narrow = f32::from_bits(state as u32);
            let scaled = (state >> 11) as f64 / (1u64 << 53) as f64 * 200.0 - 100.0;
            for x in [wide, f64::from(narrow), scaled, f64::from(scaled as f32)] {
                if x.is_finite() {
                    texts.push(format!("{x}"));
                    texts.push(format!("{x:e}"));
                    texts.push(format!("{x:E}"));
                    texts.push(format!("{x:.6}"));
                }
            }
        }
        texts
    }

    #[test]
    fn short_numbers_are_the_numbers_serde_json_reads() {
        let mut short = 0;
        for text in printed_floats() {
            let Some((x, used)) = short_number(text.as_bytes()) else {
                continue;
            };
            short += 1;
            assert_eq!(used, text.len(), "{text}");
            let expected: f64 = serde_json::from_str(&text).expect("a JSON number");
            assert_eq!(x.to_bits(), expected.to_bits(), "{text}");
        }
        // Most printed floats of a sensible size take the short path.
        assert!(short > 20_000, "{short}");
        for (text, value, used) in [
            ("0", 0.0, 1),
            ("-0.5,", -0.5, 4),
            ("1e3]", 1000.0, 3),
            ("2.5E-2 ", 0.025, 6),
            ("1e+22", 1e22, 5),
            ("9999999999999999999", 9999999999999999999.0, 19),
            // Bytes just outside the digits end a run of eight.
            ("1234567:", 1234567.0, 7),
            ("1234/6789", 1234.0, 4),
            ("12345678.87654321", 12345678.87654321, 17),
            ("0.00000000000000001234", 1.234e-17, 22),
        ] {
            assert_eq!(short_number(text.as_bytes()), Some((value, used)), "{text}");
        }
        // Long, huge, tiny, or not numbers: left to lexical-core.
        for text in [
            "12345678901234567890",
            "0.12345678901234567890",
            "1e23",
            "1e-23",
            "4.9e-324",
            "1e99999999999",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "x",
            "",
        ] {
            assert_eq!(short_number(text.as_bytes()), None, "{text}");
        }
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
