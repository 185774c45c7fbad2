//! A framed request's JSON header read into borrowed fields: what the host
//! needs of it on every binary call (the binary output choices, and where
//! each binary input's bytes are), without a tree of maps and strings.
//!
//! It reads only headers whose fields have the types the protocol gives
//! them. Anything else (a `null` flag, a name that is not text, an input
//! that is not an object, a field given twice) is `None`, and the caller
//! reads the header as a tree: that reading is the one that says what is
//! wrong, so both accept the same requests and give the same errors.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::BinaryOutputs;
use crate::tensor::checked_shape;

/// The fields of a v2 request's header that the host reads.
#[derive(Deserialize)]
pub(crate) struct Header<'a> {
    #[serde(default, borrow)]
    inputs: Vec<Object<Input<'a>>>,
    #[serde(default)]
    parameters: Option<Object<RequestParameters>>,
    #[serde(default, borrow)]
    outputs: Vec<Object<Output<'a>>>,
}

#[derive(Deserialize)]
struct Input<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    datatype: Option<Cow<'a, str>>,
    #[serde(default)]
    shape: Option<Vec<u64>>,
    #[serde(default)]
    parameters: Option<Object<InputParameters>>,
}

#[derive(Deserialize)]
struct InputParameters {
    #[serde(default, deserialize_with = "present")]
    binary_data_size: Option<u64>,
}

#[derive(Deserialize)]
struct RequestParameters {
    #[serde(default, deserialize_with = "present")]
    binary_data_output: Option<bool>,
}

#[derive(Deserialize)]
struct Output<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    parameters: Option<Object<OutputParameters>>,
}

#[derive(Deserialize)]
struct OutputParameters {
    #[serde(default, deserialize_with = "present")]
    binary_data: Option<bool>,
}

/// A struct read from a JSON object only: serde also reads a struct from
/// an array, by position, which the tree's reading does not.
pub(crate) struct Object<T>(pub(crate) T);

impl<'a, T: Deserialize<'a>> Object<T> {
    /// The fields of the JSON object `json`, when it has them in their
    /// types. `json` is checked as UTF-8 once, whole, and read as text:
    /// read as bytes, each of its strings (a dozen keys and values in a
    /// tritonclient header) would be checked again on its own. JSON that is
    /// not UTF-8 is not read here either way.
    pub(crate) fn read(json: &'a [u8]) -> Option<T> {
        let json = std::str::from_utf8(json).ok()?;
        serde_json::from_str::<Self>(json)
            .ok()
            .map(|Object(fields)| fields)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Fields(PhantomData))
            .map(Object)
    }
}

/// A field that, when present, holds a `T` (`null` is not one: the tree's
/// reading refuses it with a message).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// An input that says its bytes follow the header, as either reading of the
/// header finds it.
pub(crate) struct Claim<'a> {
    /// Its place in `inputs`.
    pub index: usize,
    /// Its name, for messages (`?` without one).
    pub name: &'a str,
    /// Its `binary_data_size`; `None` when that is not a count of bytes.
    pub size: Option<usize>,
    /// Its datatype and element count, or what is wrong with them.
    pub shape: Result<(&'a str, usize), String>,
}

impl<'a> Header<'a> {
    /// The header's fields, when it has them in the protocol's types.
    pub(crate) fn read(json: &'a [u8]) -> Option<Self> {
        Object::read(json)
    }

    /// The outputs the client wants as binary data.
    pub(crate) fn wanted(&self) -> BinaryOutputs {
        let mut wanted = BinaryOutputs::default();
        if let Some(all) = self
            .parameters
            .as_ref()
            .and_then(|p| p.0.binary_data_output)
        {
            wanted.all = all;
        }
        for Object(output) in &self.outputs {
            if let Some(binary) = output.parameters.as_ref().and_then(|p| p.0.binary_data) {
                let name = output.name.as_deref().unwrap_or_default();
                wanted.named.insert(name.to_string(), binary);
            }
        }
        wanted
    }

    /// The inputs whose bytes follow the header, in order.
    pub(crate) fn claims(&self) -> impl Iterator<Item = Claim<'_>> {
        self.inputs
            .iter()
            .enumerate()
            .filter_map(|(index, Object(input))| {
                let size = input.parameters.as_ref()?.0.binary_data_size?;
                Some(Claim {
                    index,
                    name: input.name.as_deref().unwrap_or("?"),
                    size: usize::try_from(size).ok(),
                    shape: checked_shape(
                        input.datatype.as_deref(),
                        input
                            .shape
                            .as_ref()
                            .map(|dims| dims.iter().copied().map(Some)),
                    ),
                })
            })
    }
}
