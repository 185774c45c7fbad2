//! Nested JSON arrays read straight into a shape and flat values, with no
//! tree of `serde_json::Value`s in between: a batch of 64 rows of floats
//! costs one vector, not a vector per row and an enum per number.

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

use super::MAX_VALUES;

/// One value of a request, as JSON wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A number (JSON does not tell integers from floats).
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`: a missing value (what an Imputer fills in).
    Null,
    /// A string.
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Number(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Null => f.write_str("null"),
            Scalar::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// What the walk found so far.
#[derive(Debug, Default)]
pub(super) struct Walk {
    /// The length of the arrays at each depth, once one has ended.
    lengths: Vec<Option<usize>>,
    /// The depth of the first value: every value must be that deep.
    leaf_depth: Option<usize>,
    /// The values, in order.
    pub(super) values: Vec<Scalar>,
    /// Whether the nesting is the shape (a plain body) or only grouping
    /// (an Open Inference Protocol tensor, whose shape is declared).
    nesting_is_shape: bool,
}

const RAGGED: &str = "the array is ragged: every row needs the same length";

impl Walk {
    /// Reads one JSON value whose nesting is its shape.
    pub(super) fn shaped<'de, D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<(Vec<usize>, Vec<Scalar>), D::Error> {
        let mut walk = Walk {
            nesting_is_shape: true,
            ..Walk::default()
        };
        Level {
            walk: &mut walk,
            depth: 0,
        }
        .deserialize(deserializer)?;
        // Every depth above the values held arrays, each of which ended.
        let shape = walk.lengths.iter().map(|len| len.unwrap_or(0)).collect();
        Ok((shape, walk.values))
    }

    /// Reads one JSON value of any nesting, flat.
    pub(super) fn flat<'de, D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Scalar>, D::Error> {
        let mut walk = Walk::default();
        Level {
            walk: &mut walk,
            depth: 0,
        }
        .deserialize(deserializer)?;
        Ok(walk.values)
    }

    fn value<E: de::Error>(&mut self, depth: usize, value: Scalar) -> Result<(), E> {
        // A value must be as deep as the first, and no array may have
        // ended at its depth: `[[[]], [1]]` is ragged too.
        if self.nesting_is_shape
            && (*self.leaf_depth.get_or_insert(depth) != depth || self.lengths.len() > depth)
        {
            return Err(E::custom(RAGGED));
        }
        if self.values.len() >= MAX_VALUES {
            return Err(E::custom(format!(
                "more than {MAX_VALUES} values in one request"
            )));
        }
        self.values.push(value);
        Ok(())
    }

    fn array_ended<E: de::Error>(&mut self, depth: usize, length: usize) -> Result<(), E> {
        if !self.nesting_is_shape {
            return Ok(());
        }
        if self.lengths.len() <= depth {
            self.lengths.resize(depth + 1, None);
        }
        match &mut self.lengths[depth] {
            slot @ None => *slot = Some(length),
            Some(known) if *known == length => {}
            Some(_) => return Err(E::custom(RAGGED)),
        }
        Ok(())
    }
}

/// The walk at one depth of the nesting.
struct Level<'w> {
    walk: &'w mut Walk,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("numbers, strings, booleans or null, in arrays")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let Level { walk, depth } = self;
        if walk.nesting_is_shape && walk.leaf_depth.is_some_and(|leaf| depth >= leaf) {
            return Err(de::Error::custom(RAGGED));
        }
        let mut length = 0;
        while items
            .next_element_seed(Level {
                walk: &mut *walk,
                depth: depth + 1,
            })?
            .is_some()
        {
            length += 1;
        }
        walk.array_ended(depth, length)
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        self.walk.value(self.depth, Scalar::Number(x))
    }

    fn visit_i64<E: de::Error>(self, x: i64) -> Result<(), E> {
        self.visit_f64(x as f64)
    }

    fn visit_u64<E: de::Error>(self, x: u64) -> Result<(), E> {
        self.visit_f64(x as f64)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.walk.value(self.depth, Scalar::Bool(b))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.walk.value(self.depth, Scalar::Null)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.walk.value(self.depth, Scalar::Text(s.to_string()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<(), E> {
        self.walk.value(self.depth, Scalar::Text(s))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(de::Error::custom(
            match (self.walk.nesting_is_shape, self.depth) {
                (true, 0) => {
                    "the body is a JSON object, not an array of rows such as [[0.5, 1.0]]; \
                 Open Inference Protocol requests go to /v2/models/{model}/infer"
                }
                (true, _) => "the rows must hold numbers or strings, not objects",
                (false, _) => "tensor data must be numbers or strings, not an object",
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaped(text: &str) -> Result<(Vec<usize>, Vec<Scalar>), String> {
        Walk::shaped(&mut serde_json::Deserializer::from_str(text)).map_err(|e| e.to_string())
    }

    #[test]
    fn the_nesting_is_the_shape() {
        let (shape, values) = shaped("[[1, 2.5], [true, null], [\"a\", -3]]").unwrap();
        assert_eq!(shape, vec![3, 2]);
        assert_eq!(
            values,
            vec![
                Scalar::Number(1.0),
                Scalar::Number(2.5),
                Scalar::Bool(true),
                Scalar::Null,
                Scalar::Text("a".into()),
                Scalar::Number(-3.0)
            ]
        );
        assert_eq!(shaped("7").unwrap().0, Vec::<usize>::new());
        assert_eq!(shaped("[]").unwrap().0, vec![0]);
        assert_eq!(shaped("[[], []]").unwrap().0, vec![2, 0]);
        assert_eq!(shaped("[[[1]], [[2]]]").unwrap().0, vec![2, 1, 1]);
    }

    #[test]
    fn ragged_arrays_and_objects_are_refused() {
        for ragged in [
            "[[1, 2], [3]]",
            "[[1], 2]",
            "[1, [2]]",
            "[[], [1]]",
            "[[1], []]",
            "[[[1]], [2]]",
            "[[1, 2], [[3], [4]]]",
            "[[[]], [1]]",
        ] {
            let error = shaped(ragged).unwrap_err();
            assert!(error.contains("ragged"), "{ragged}: {error}");
        }
        let error = shaped("[{\"a\": 1}]").unwrap_err();
        assert!(error.contains("not objects"), "{error}");
        let error = shaped("{\"inputs\": []}").unwrap_err();
        assert!(error.contains("not an array of rows"), "{error}");
    }

    #[test]
    fn flat_reads_any_nesting() {
        let values =
            Walk::flat(&mut serde_json::Deserializer::from_str("[[1], [2, 3], 4]")).unwrap();
        assert_eq!(values.len(), 4);
    }
}
