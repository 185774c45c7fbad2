//! `LabelEncoder` and `OneHotEncoder`: categories to numbers, as
//! scikit-learn pipelines export them.

use std::collections::HashMap;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{Kernel, MlNode, OutputShape, OutputSpec};

pub(super) fn register(register: &mut OnnxOpRegister) {
    register.insert("LabelEncoder", label_encoder);
    register.insert("OneHotEncoder", one_hot_encoder);
}

/// A category: a string, or an integer (floats are keyed by their bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Text(String),
    Int(i64),
    Float(u32),
}

/// Reads `{prefix}_strings`, `{prefix}_int64s` or `{prefix}_floats`.
fn keys(node: &NodeProto, prefix: &str) -> TractResult<Option<Vec<Key>>> {
    if let Some(strings) = node.get_attr_opt_tvec::<&str>(&format!("{prefix}_strings"))? {
        return Ok(Some(
            strings.iter().map(|s| Key::Text(s.to_string())).collect(),
        ));
    }
    if let Some(ints) = node.get_attr_opt_slice::<i64>(&format!("{prefix}_int64s"))? {
        return Ok(Some(ints.iter().map(|&i| Key::Int(i)).collect()));
    }
    if let Some(floats) = node.get_attr_opt_vec::<f32>(&format!("{prefix}_floats"))? {
        return Ok(Some(
            floats.iter().map(|f| Key::Float(f.to_bits())).collect(),
        ));
    }
    Ok(None)
}

/// The keys of `input`, in order, as the encoder looks them up.
fn input_keys(input: &Tensor, like: &Key) -> TractResult<Vec<Key>> {
    Ok(match like {
        Key::Text(_) => {
            let strings = input.cast_to::<String>()?;
            strings
                .try_as_plain_ram()?
                .as_slice::<String>()?
                .iter()
                .cloned()
                .map(Key::Text)
                .collect()
        }
        Key::Int(_) => {
            let ints = input.cast_to::<i64>()?;
            ints.try_as_plain_ram()?
                .as_slice::<i64>()?
                .iter()
                .map(|&i| Key::Int(i))
                .collect()
        }
        Key::Float(_) => {
            let floats = input.cast_to::<f32>()?;
            floats
                .try_as_plain_ram()?
                .as_slice::<f32>()?
                .iter()
                .map(|f| Key::Float(f.to_bits()))
                .collect()
        }
    })
}

/// Maps each key to a value; unknown keys get the default.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelEncoder {
    table: Vec<(Key, Key)>,
    default: Key,
}

fn label_encoder(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let from = keys(node, "keys")?.ok_or_else(|| {
        format_err!("LabelEncoder needs keys_strings, keys_int64s or keys_floats")
    })?;
    let to = keys(node, "values")?.ok_or_else(|| {
        format_err!("LabelEncoder needs values_strings, values_int64s or values_floats")
    })?;
    node.expect_attr(
        "values",
        from.len() == to.len() && !from.is_empty(),
        "as many values as keys, at least one",
    )?;
    let default = match &to[0] {
        Key::Text(_) => Key::Text(
            node.get_attr_opt::<&str>("default_string")?
                .unwrap_or("_Unused")
                .to_string(),
        ),
        Key::Int(_) => Key::Int(node.get_attr_opt::<i64>("default_int64")?.unwrap_or(-1)),
        Key::Float(_) => Key::Float(
            node.get_attr_opt::<f32>("default_float")?
                .unwrap_or(-0.0)
                .to_bits(),
        ),
    };
    Ok((
        expand(MlNode(LabelEncoder {
            table: from.into_iter().zip(to).collect(),
            default,
        })),
        vec![],
    ))
}

impl LabelEncoder {
    fn output_type(&self) -> DatumType {
        match self.default {
            Key::Text(_) => String::datum_type(),
            Key::Int(_) => i64::datum_type(),
            Key::Float(_) => f32::datum_type(),
        }
    }
}

impl Kernel for LabelEncoder {
    fn name(&self) -> &'static str {
        "LabelEncoder"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            datum: Some(self.output_type()),
            shape: OutputShape::LikeInput,
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let table: HashMap<&Key, &Key> = self.table.iter().map(|(k, v)| (k, v)).collect();
        let found: Vec<&Key> = input_keys(input, &self.table[0].0)?
            .iter()
            .map(|key| *table.get(key).unwrap_or(&&self.default))
            .collect();
        let shape = input.shape();
        let tensor = match self.default {
            Key::Text(_) => {
                let values: Vec<String> = found
                    .iter()
                    .map(|k| match k {
                        Key::Text(s) => s.clone(),
                        _ => String::new(),
                    })
                    .collect();
                tensor1(&values)
            }
            Key::Int(_) => tensor1(
                &found
                    .iter()
                    .map(|k| match k {
                        Key::Int(i) => *i,
                        _ => 0,
                    })
                    .collect::<Vec<_>>(),
            ),
            Key::Float(_) => tensor1(
                &found
                    .iter()
                    .map(|k| match k {
                        Key::Float(f) => f32::from_bits(*f),
                        _ => 0.0,
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        Ok(tvec!(tensor.into_shape(shape)?))
    }
}

/// One column per category: 1.0 where the value is that category.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OneHotEncoder {
    categories: Vec<Key>,
    zeros: bool,
}

fn one_hot_encoder(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let categories = keys(node, "cats")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| format_err!("OneHotEncoder needs cats_strings or cats_int64s"))?;
    let zeros = node.get_attr_opt::<i64>("zeros")?.unwrap_or(1) != 0;
    Ok((expand(MlNode(OneHotEncoder { categories, zeros })), vec![]))
}

impl Kernel for OneHotEncoder {
    fn name(&self) -> &'static str {
        "OneHotEncoder"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            datum: Some(f32::datum_type()),
            shape: OutputShape::LikeInputBy(self.categories.len()),
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let index: HashMap<&Key, usize> = self
            .categories
            .iter()
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        let width = self.categories.len();
        let keys = input_keys(input, &self.categories[0])?;
        let mut out = vec![0f32; keys.len() * width];
        for (i, key) in keys.iter().enumerate() {
            match index.get(key) {
                Some(&column) => out[i * width + column] = 1.0,
                None if self.zeros => {}
                None => bail!("OneHotEncoder: a value is not one of the categories (and zeros=0)"),
            }
        }
        let mut shape: TVec<usize> = input.shape().into();
        shape.push(width);
        Ok(tvec!(tensor1(&out).into_shape(&shape)?))
    }
}
