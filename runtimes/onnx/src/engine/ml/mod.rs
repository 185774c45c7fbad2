//! The ONNX-ML operators that the converters emit and tract does not read
//! (or reads wrongly), registered into tract's ONNX parser.
//!
//! Each operator is a [`Kernel`]: its attributes, checked when the graph is
//! parsed, and an `eval` in plain Rust over one input tensor. [`MlNode`]
//! gives every kernel tract's shape inference and its typed form, so an
//! operator is only its own arithmetic.

mod elementwise;
mod encoders;
mod forest;
mod linear;
mod tree;

use std::fmt::Debug;

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// Adds this crate's operators to `register`, replacing tract's own
/// `TreeEnsembleClassifier` (it misreads binary classifiers) and
/// `LinearClassifier` (it cannot answer string labels).
pub fn register(register: &mut OnnxOpRegister) {
    tree::register(register);
    linear::register(register);
    elementwise::register(register);
    encoders::register(register);
}

/// The shape of one output of a kernel, in terms of its input's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputShape {
    /// The input's shape.
    LikeInput,
    /// One value per row: `[N]`.
    Rows,
    /// `[N, columns]`.
    RowsBy(usize),
    /// The input's shape with one more axis of this length.
    LikeInputBy(usize),
}

/// What a kernel's output is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutputSpec {
    /// Its type; `None` for the input's.
    pub datum: Option<DatumType>,
    pub shape: OutputShape,
}

/// One ONNX-ML operator over a single input.
pub(crate) trait Kernel: Clone + Debug + PartialEq + Eq + Send + Sync + 'static {
    /// The ONNX operator's name, for messages and dumps.
    fn name(&self) -> &'static str;
    /// Its outputs, in order.
    fn outputs(&self) -> Vec<OutputSpec>;
    /// Computes every output from `input`.
    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>>;
}

/// A kernel as a node of tract's inference graph: shape rules, then itself
/// wired into the typed graph.
#[derive(Debug, Clone)]
pub(crate) struct MlNode<K: Kernel>(pub K);

impl<K: Kernel> Expansion for MlNode<K> {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.0.outputs().len())
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let specs = self.0.outputs();
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, specs.len())?;
        for (output, spec) in outputs.iter().zip(specs) {
            match spec.datum {
                Some(datum) => s.equals(&output.datum_type, datum)?,
                None => s.equals(&output.datum_type, &inputs[0].datum_type)?,
            }
            match spec.shape {
                OutputShape::LikeInput => s.equals(&output.shape, &inputs[0].shape)?,
                OutputShape::Rows => {
                    s.equals(&output.rank, 1)?;
                    s.equals(&output.shape[0], &inputs[0].shape[0])?;
                }
                OutputShape::RowsBy(columns) => {
                    s.equals(&output.rank, 2)?;
                    s.equals(&output.shape[0], &inputs[0].shape[0])?;
                    s.equals(&output.shape[1], columns.to_dim())?;
                }
                OutputShape::LikeInputBy(width) => {
                    s.given(&inputs[0].shape, move |s, shape| {
                        let mut shape = shape.clone();
                        shape.push(width.to_dim());
                        s.equals(&outputs[0].shape, shape)
                    })?;
                }
            }
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, MlOp(self.0.clone()), inputs)
    }
}

/// A kernel in tract's typed graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MlOp<K: Kernel>(pub K);

impl<K: Kernel> Op for MlOp<K> {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    op_as_typed_op!();
}

impl<K: Kernel> EvalOp for MlOp<K> {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        Ok(self
            .0
            .eval(&input)?
            .into_iter()
            .map(IntoTValue::into_tvalue)
            .collect())
    }
}

impl<K: Kernel> TypedOp for MlOp<K> {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input = inputs[0];
        self.0
            .outputs()
            .into_iter()
            .map(|spec| {
                let datum = spec.datum.unwrap_or(input.datum_type);
                let rows = || {
                    input.shape.iter().next().cloned().ok_or_else(|| {
                        format_err!("{} needs a [rows, features] input", self.0.name())
                    })
                };
                Ok(match spec.shape {
                    OutputShape::LikeInput => TypedFact::dt_shape(datum, input.shape.clone()),
                    OutputShape::Rows => TypedFact::dt_shape(datum, [rows()?]),
                    OutputShape::RowsBy(columns) => {
                        TypedFact::dt_shape(datum, [rows()?, columns.to_dim()])
                    }
                    OutputShape::LikeInputBy(width) => {
                        let mut shape: TVec<TDim> = input.shape.iter().cloned().collect();
                        shape.push(width.to_dim());
                        TypedFact::dt_shape(datum, shape)
                    }
                })
            })
            .collect()
    }

    as_op!();
}

/// The input as a `[rows, features]` matrix of `f32` (a vector is one row),
/// as the ONNX-ML operators read their features.
pub(crate) fn features(input: &Tensor) -> TractResult<(usize, usize, Vec<f32>)> {
    let values = input.cast_to::<f32>()?;
    let values = values.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let (rows, columns) = match *input.shape() {
        [columns] => (1, columns),
        [rows, columns] => (rows, columns),
        ref other => bail!("expects a [rows, features] input, got shape {other:?}"),
    };
    Ok((rows, columns, values))
}

/// Floats compared by their bits, so that kernels can be `Eq` as tract asks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Floats(pub Vec<f32>);

impl PartialEq for Floats {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for Floats {}

/// What is done to the summed scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
}

pub(crate) fn post_transform(node: &NodeProto) -> TractResult<PostTransform> {
    Ok(
        match node
            .get_attr_opt::<&str>("post_transform")?
            .unwrap_or("NONE")
        {
            "NONE" => PostTransform::None,
            "SOFTMAX" => PostTransform::Softmax,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            other => bail!(
                "post_transform {other} is not supported (NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO are)"
            ),
        },
    )
}

/// Class labels, as the classifier answers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    /// Reads `classlabels_strings`, or the integer labels named `ints`.
    pub(crate) fn parse(node: &NodeProto, ints: &str) -> TractResult<Labels> {
        let ints = node.get_attr_opt_slice::<i64>(ints)?;
        let strings = node.get_attr_opt_tvec::<&str>("classlabels_strings")?;
        match (ints, strings) {
            (Some(ints), None) if !ints.is_empty() => Ok(Labels::Ints(ints.to_vec())),
            (None, Some(strings)) if !strings.is_empty() => Ok(Labels::Strings(
                strings.iter().map(|s| s.to_string()).collect(),
            )),
            _ => {
                bail!("needs exactly one of classlabels_int64s and classlabels_strings, not empty")
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Labels::Ints(ints) => ints.len(),
            Labels::Strings(strings) => strings.len(),
        }
    }

    pub(crate) fn datum_type(&self) -> DatumType {
        match self {
            Labels::Ints(_) => i64::datum_type(),
            Labels::Strings(_) => String::datum_type(),
        }
    }

    /// A classifier's two outputs: the label of each row, `[N]`, and the
    /// score of each class, `[N, classes]`.
    pub(crate) fn classifier_outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec {
                datum: Some(self.datum_type()),
                shape: OutputShape::Rows,
            },
            OutputSpec {
                datum: Some(f32::datum_type()),
                shape: OutputShape::RowsBy(self.len()),
            },
        ]
    }

    /// The labels of the classes at `indices`, as a `[N]` tensor.
    pub(crate) fn pick(&self, indices: &[usize]) -> Tensor {
        match self {
            Labels::Ints(ints) => tensor1(&indices.iter().map(|&i| ints[i]).collect::<Vec<_>>()),
            Labels::Strings(strings) => tensor1(
                &indices
                    .iter()
                    .map(|&i| strings[i].clone())
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

/// The index of the first largest value (0 for an empty row).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub(crate) fn transform_row(row: &mut [f32], post: PostTransform) {
    match post {
        PostTransform::None => {}
        PostTransform::Logistic => row.iter_mut().for_each(|v| *v = sigmoid(*v)),
        PostTransform::Softmax | PostTransform::SoftmaxZero => {
            let zero = post == PostTransform::SoftmaxZero;
            let max = row
                .iter()
                .filter(|v| !zero || **v != 0.0)
                .fold(f32::NEG_INFINITY, |a, b| a.max(*b));
            let mut sum = 0.0;
            for v in row.iter_mut() {
                if !(zero && *v == 0.0) {
                    *v = (*v - max).exp();
                    sum += *v;
                }
            }
            if sum > 0.0 {
                row.iter_mut().for_each(|v| *v /= sum);
            }
        }
    }
}
