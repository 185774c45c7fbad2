//! `Scaler`, `Imputer` and `Binarizer`: the preprocessing steps of a
//! scikit-learn pipeline, one value at a time.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{Floats, Kernel, MlNode, OutputShape, OutputSpec};

pub(super) fn register(register: &mut OnnxOpRegister) {
    register.insert("Scaler", scaler);
    register.insert("Imputer", imputer);
    register.insert("Binarizer", binarizer);
}

/// `(x - offset) * scale`, per column (or one value for every column): what
/// `StandardScaler` and `MinMaxScaler` export as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scaler {
    offset: Floats,
    scale: Floats,
}

fn scaler(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset = node.get_attr_opt_vec::<f32>("offset")?.unwrap_or_default();
    let scale = node.get_attr_opt_vec::<f32>("scale")?.unwrap_or_default();
    Ok((
        expand(MlNode(Scaler {
            offset: Floats(offset),
            scale: Floats(scale),
        })),
        vec![],
    ))
}

/// The value of a per-column attribute at `column`: one value serves every
/// column, none means `default`.
fn per_column(values: &[f32], column: usize, default: f32, name: &str) -> TractResult<f32> {
    match values {
        [] => Ok(default),
        [one] => Ok(*one),
        many => many.get(column).copied().ok_or_else(|| {
            format_err!(
                "{name} has {} values but the input has more columns",
                many.len()
            )
        }),
    }
}

/// `f(column, value)` on every value of `input`, worked out in `f64` and
/// given back in the input's own type.
fn map_values(
    input: &Tensor,
    mut f: impl FnMut(usize, f64) -> TractResult<f64>,
) -> TractResult<Tensor> {
    let width = columns(input.shape());
    let mut values = input.cast_to::<f64>()?.into_owned();
    for (i, v) in values
        .try_as_plain_ram_mut()?
        .as_slice_mut::<f64>()?
        .iter_mut()
        .enumerate()
    {
        *v = f(i % width, *v)?;
    }
    Ok(values.cast_to_dt(input.datum_type())?.into_owned())
}

/// The columns of an input of `shape`: the last axis.
fn columns(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1).max(1)
}

impl Kernel for Scaler {
    fn name(&self) -> &'static str {
        "Scaler"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            datum: Some(f32::datum_type()),
            shape: OutputShape::LikeInput,
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let width = columns(input.shape());
        let values = input.cast_to::<f32>()?;
        let mut out = values.into_owned();
        for (i, v) in out
            .try_as_plain_ram_mut()?
            .as_slice_mut::<f32>()?
            .iter_mut()
            .enumerate()
        {
            let column = i % width;
            *v = (*v - per_column(&self.offset.0, column, 0.0, "offset")?)
                * per_column(&self.scale.0, column, 1.0, "scale")?;
        }
        Ok(tvec!(out))
    }
}

/// Replaces missing values (NaN, or `replaced_value_*`) with a per-column value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Imputer {
    imputed: Floats,
    replaced: Floats,
}

fn imputer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let imputed = match node.get_attr_opt_vec::<f32>("imputed_value_floats")? {
        Some(floats) if !floats.is_empty() => floats,
        _ => node
            .get_attr_opt_slice::<i64>("imputed_value_int64s")?
            .map(|ints| ints.iter().map(|&i| i as f32).collect())
            .unwrap_or_default(),
    };
    node.expect_attr(
        "imputed_value_floats",
        !imputed.is_empty(),
        "imputed values (floats or int64s)",
    )?;
    let replaced = match node.get_attr_opt::<f32>("replaced_value_float")? {
        Some(value) => value,
        None => node
            .get_attr_opt::<i64>("replaced_value_int64")?
            .map_or(f32::NAN, |i| i as f32),
    };
    Ok((
        expand(MlNode(Imputer {
            imputed: Floats(imputed),
            replaced: Floats(vec![replaced]),
        })),
        vec![],
    ))
}

impl Kernel for Imputer {
    fn name(&self) -> &'static str {
        "Imputer"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            datum: None,
            shape: OutputShape::LikeInput,
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let replaced = self.replaced.0[0];
        let imputed = map_values(input, |column, v| {
            let missing = if replaced.is_nan() {
                v.is_nan()
            } else {
                v == f64::from(replaced)
            };
            if missing {
                let value = per_column(&self.imputed.0, column, 0.0, "imputed_value_floats")?;
                Ok(f64::from(value))
            } else {
                Ok(v)
            }
        })?;
        Ok(tvec!(imputed))
    }
}

/// 1 where the value is above `threshold`, 0 elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binarizer {
    threshold: Floats,
}

fn binarizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let threshold = node.get_attr_opt::<f32>("threshold")?.unwrap_or(0.0);
    Ok((
        expand(MlNode(Binarizer {
            threshold: Floats(vec![threshold]),
        })),
        vec![],
    ))
}

impl Kernel for Binarizer {
    fn name(&self) -> &'static str {
        "Binarizer"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            datum: None,
            shape: OutputShape::LikeInput,
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let threshold = f64::from(self.threshold.0[0]);
        let binary = map_values(input, |_, v| Ok(if v > threshold { 1.0 } else { 0.0 }))?;
        Ok(tvec!(binary))
    }
}
