//! `LinearClassifier`: logistic regression and linear SVMs, with integer or
//! string labels. A binary model has one row of coefficients, for the
//! positive class.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{
    Floats, Kernel, Labels, MlNode, OutputSpec, PostTransform, argmax, features, post_transform,
    sigmoid, transform_row,
};

pub(super) fn register(register: &mut OnnxOpRegister) {
    register.insert("LinearClassifier", linear_classifier);
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LinearClassifier {
    labels: Labels,
    /// `[models, features]`, row-major.
    coefficients: Floats,
    intercepts: Floats,
    models: usize,
    post: PostTransform,
    binary: bool,
}

fn linear_classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_ints")?;
    let coefficients: Vec<f32> = node.get_attr_vec("coefficients")?;
    node.expect_attr(
        "coefficients",
        !coefficients.is_empty(),
        "at least one coefficient",
    )?;
    let intercepts = node
        .get_attr_opt_vec::<f32>("intercepts")?
        .unwrap_or_default();
    let multi_class = node.get_attr_opt::<i64>("multi_class")?.unwrap_or(0);
    let models = if intercepts.is_empty() {
        if labels.len() == 2 && multi_class == 0 {
            1
        } else {
            labels.len()
        }
    } else {
        intercepts.len()
    };
    node.expect_attr(
        "coefficients",
        coefficients.len().is_multiple_of(models),
        || format!("a multiple of {models} values (one row per class)"),
    )?;
    let binary = labels.len() == 2 && models == 1 && multi_class == 0;
    node.expect_attr(
        "intercepts",
        binary || models == labels.len(),
        "one intercept per class",
    )?;
    let kernel = LinearClassifier {
        labels,
        coefficients: Floats(coefficients),
        intercepts: Floats(intercepts),
        models,
        post: post_transform(node)?,
        binary,
    };
    Ok((expand(MlNode(kernel)), vec![]))
}

impl Kernel for LinearClassifier {
    fn name(&self) -> &'static str {
        "LinearClassifier"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        self.labels.classifier_outputs()
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, columns, x) = features(input)?;
        let width = self.coefficients.0.len() / self.models;
        ensure!(
            columns == width,
            "LinearClassifier: the input has {columns} features, the model {width}"
        );
        let classes = self.labels.len();
        let mut scores = Vec::with_capacity(rows * classes);
        let mut winners = Vec::with_capacity(rows);
        for row in x.chunks_exact(width.max(1)) {
            let mut raw: Vec<f32> = self
                .coefficients
                .0
                .chunks_exact(width.max(1))
                .enumerate()
                .map(|(m, w)| {
                    w.iter().zip(row).map(|(a, b)| a * b).sum::<f32>()
                        + self.intercepts.0.get(m).copied().unwrap_or(0.0)
                })
                .collect();
            if self.binary {
                let s = raw[0];
                winners.push(usize::from(s > 0.0));
                raw = match self.post {
                    PostTransform::Logistic => vec![1.0 - sigmoid(s), sigmoid(s)],
                    PostTransform::None => vec![-s, s],
                    other => {
                        let mut pair = vec![-s, s];
                        transform_row(&mut pair, other);
                        pair
                    }
                };
            } else {
                let best = argmax(&raw);
                winners.push(best);
                transform_row(&mut raw, self.post);
            }
            scores.extend(raw);
        }
        let probabilities = tensor1(&scores).into_shape(&[rows, classes])?;
        Ok(tvec!(self.labels.pick(&winners), probabilities))
    }
}
