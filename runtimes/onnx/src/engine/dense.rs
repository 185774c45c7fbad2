//! A graph that is only a chain of dense layers (a matrix product, a bias,
//! an activation, and again), run by one fused loop instead of tract.
//!
//! This is what scikit-learn's MLPs and the plain feed-forward networks of
//! PyTorch export to. tract runs such a graph op by op: it packs the
//! activations of each layer into panels for its matrix kernel on every
//! run, then adds the bias and applies the activation in passes of their
//! own. At batch 64 that is most of the graph's time. Here the weights are
//! laid out once, at load, in the order the loop reads them, and each block
//! of rows goes through a layer in registers: product, bias and activation
//! in one pass.
//!
//! The chain is recognised on the ONNX graph itself, before tract reads it;
//! tract still parses, checks and plans the whole graph (the ports, the
//! errors and every other graph come from it), so a graph that this module
//! does not recognise runs exactly as before.

use tract_onnx::pb;
use tract_onnx::prelude::*;

#[path = "dense_kernels.rs"]
mod kernels;

use kernels::{block_product, dot_products};

/// Rows that go through a layer together; their accumulators stay in registers.
const ROWS: usize = 4;
/// Columns of a block: two 128-bit vectors of `f32`.
const COLS: usize = 8;

/// What follows a layer's product and bias.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    Identity,
    Relu,
    Sigmoid,
    Tanh,
}

impl Activation {
    /// `Relu` of one value, the activation done before a value is stored:
    /// a comparison, not `f32::max`, which would turn NaN into 0 where ONNX
    /// keeps NaN.
    fn in_register(self, x: f32) -> f32 {
        if self == Activation::Relu && x < 0.0 {
            0.0
        } else {
            x
        }
    }

    /// Applies the activations that are not done in registers to every
    /// value: one loop per kind, so that each is a plain pass.
    fn apply_after(self, values: &mut [f32]) {
        match self {
            Activation::Identity | Activation::Relu => {}
            Activation::Sigmoid => values
                .iter_mut()
                .for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            Activation::Tanh => values.iter_mut().for_each(|x| *x = x.tanh()),
        }
    }
}

/// One layer: `activation(x · weights + bias)`.
#[derive(Debug, Clone)]
struct Layer {
    inputs: usize,
    outputs: usize,
    /// The weights by blocks of [`COLS`] output columns: for each block,
    /// `inputs` rows of `COLS` values (the last block padded with zeros).
    blocks: Vec<[f32; COLS]>,
    /// The bias by the same blocks of columns, padded with zeros.
    bias: Vec<[f32; COLS]>,
    /// A layer of one output (a regressor's last) has its weights as one
    /// column too: its rows are dot products along the inputs, which wastes
    /// no lanes on the seven padding columns of a block.
    column: Option<Vec<f32>>,
    activation: Activation,
}

impl Layer {
    fn new(weights: &[f32], inputs: usize, outputs: usize) -> Layer {
        let block_count = outputs.div_ceil(COLS);
        let mut blocks = vec![[0.0; COLS]; block_count * inputs];
        for k in 0..inputs {
            for j in 0..outputs {
                blocks[(j / COLS) * inputs + k][j % COLS] = weights[k * outputs + j];
            }
        }
        Layer {
            inputs,
            outputs,
            blocks,
            bias: vec![[0.0; COLS]; block_count],
            column: (outputs == 1).then(|| weights[..inputs].to_vec()),
            activation: Activation::Identity,
        }
    }

    /// How many values a row of this layer's output takes: its outputs
    /// rounded up to whole blocks, so that every block is stored whole.
    fn stride(&self) -> usize {
        self.bias.len() * COLS
    }

    /// Runs the rows of `input` (row-major, `stride` values a row of which
    /// the first `inputs` count, and a whole number of [`ROWS`]) into
    /// `output`, [`Layer::stride`] values a row.
    fn run(&self, input: &[f32], stride: usize, output: &mut Vec<f32>) {
        let rows = input.len() / stride;
        let width = self.stride();
        output.clear();
        output.resize(rows * width, 0.0);
        let groups = input
            .chunks_exact(stride * ROWS)
            .zip(output.chunks_exact_mut(width * ROWS));
        for (group, out) in groups {
            let row = |r: usize| &group[r * stride..][..self.inputs];
            let rows: [&[f32]; ROWS] = std::array::from_fn(row);
            if let Some(column) = &self.column {
                let sums = dot_products(rows, column, self.bias[0][0], self.activation);
                for (r, sum) in sums.into_iter().enumerate() {
                    out[r * width] = sum;
                }
                continue;
            }
            let blocks = self.blocks.chunks_exact(self.inputs).zip(&self.bias);
            for (block, (weights, bias)) in blocks.enumerate() {
                let sums = block_product(rows, weights, bias, self.activation);
                for (r, row_sums) in sums.iter().enumerate() {
                    out[r * width + block * COLS..][..COLS].copy_from_slice(row_sums);
                }
            }
        }
        self.activation.apply_after(output);
    }
}

/// A recognised chain of dense layers.
#[derive(Debug, Clone)]
pub struct DenseChain {
    layers: Vec<Layer>,
}

impl DenseChain {
    /// The chain `graph` is, if it is one: one `float` (or cast to `float`)
    /// input of rank 2, then only `MatMul` or `Gemm` by constant weights (or
    /// ONNX-ML's `LinearRegressor`),
    /// `Add` of a constant bias, `Relu`, `Sigmoid`, `Tanh`, `Identity`, and a
    /// last `Reshape` that keeps the shape, ending in the one output.
    pub fn recognise(graph: &pb::GraphProto) -> Option<DenseChain> {
        let constants: std::collections::HashMap<&str, &pb::TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let [input] = graph
            .input
            .iter()
            .filter(|i| !constants.contains_key(i.name.as_str()))
            .collect::<Vec<_>>()[..]
        else {
            return None;
        };
        let [output] = graph.output.as_slice() else {
            return None;
        };
        let (float, width) = rank_two(input)?;
        let mut current = input.name.as_str();
        let mut width = width?;
        let mut layers: Vec<Layer> = Vec::new();
        // Whether the last layer may still take a bias or an activation.
        let mut open = false;
        for (index, node) in graph.node.iter().enumerate() {
            let [first, rest @ ..] = node.input.as_slice() else {
                return None;
            };
            let [out] = node.output.as_slice() else {
                return None;
            };
            let constant = |i: usize| constants.get(rest.get(i)?.as_str()).copied();
            // Of ONNX-ML, only a linear regressor is a dense layer.
            let ml = node.domain == "ai.onnx.ml";
            if !node.domain.is_empty() && node.domain != "ai.onnx" && !ml
                || ml && node.op_type != "LinearRegressor"
            {
                return None;
            }
            match node.op_type.as_str() {
                "Cast" if index == 0 && first == current && rest.is_empty() => {
                    if attribute(node, "to").map(|a| a.i)
                        != Some(pb::tensor_proto::DataType::Float as i64)
                    {
                        return None;
                    }
                }
                _ if !float && index == 0 => return None,
                "Identity" if first == current && rest.is_empty() => {}
                "MatMul" if first == current && rest.len() == 1 => {
                    let (dims, weights) = floats(constant(0)?)?;
                    let [k, n] = dims[..] else { return None };
                    if k != width || !node.attribute.is_empty() {
                        return None;
                    }
                    layers.push(Layer::new(&weights, k, n));
                    width = n;
                    open = true;
                }
                "LinearRegressor" if ml && first == current && rest.is_empty() => {
                    let layer = linear_regressor(node, width)?;
                    width = layer.outputs;
                    layers.push(layer);
                    open = true;
                }
                "Gemm" if first == current && (1..=2).contains(&rest.len()) => {
                    let layer = gemm(node, constant(0)?, constant(1), width)?;
                    width = layer.outputs;
                    layers.push(layer);
                    open = true;
                }
                "Add" if open && rest.len() == 1 && (first == current || rest[0] == current) => {
                    let other = if first == current { &rest[0] } else { first };
                    let (dims, bias) = floats(constants.get(other.as_str())?)?;
                    let layer = layers.last_mut()?;
                    if layer.activation != Activation::Identity
                        || bias.len() != width
                        || dims.len() > 2
                        || dims.iter().rev().skip(1).any(|&d| d != 1)
                    {
                        return None;
                    }
                    for (j, x) in bias.iter().enumerate() {
                        layer.bias[j / COLS][j % COLS] += x;
                    }
                }
                "Relu" | "Sigmoid" | "Tanh" if open && first == current && rest.is_empty() => {
                    let layer = layers.last_mut()?;
                    if layer.activation != Activation::Identity {
                        return None;
                    }
                    layer.activation = match node.op_type.as_str() {
                        "Relu" => Activation::Relu,
                        "Sigmoid" => Activation::Sigmoid,
                        _ => Activation::Tanh,
                    };
                    open = false;
                }
                "Reshape"
                    if index + 1 == graph.node.len() && first == current && rest.len() == 1 =>
                {
                    let shape = ints(constant(0)?)?;
                    let keeps_rows = matches!(shape.first(), Some(-1 | 0));
                    let keeps_width =
                        matches!(shape.get(1), Some(&w) if w == -1 || w == width as i64);
                    if shape.len() != 2 || !keeps_rows || !keeps_width {
                        return None;
                    }
                }
                _ => return None,
            }
            current = out;
        }
        // A layer of no outputs (weights of shape [k, 0]) is left to tract,
        // which says what it makes of it: the loop takes whole rows.
        let whole = !layers.is_empty() && layers.iter().all(|layer| layer.outputs > 0);
        (current == output.name && whole).then_some(DenseChain { layers })
    }

    /// Runs the chain on `input`, a `[rows, width]` tensor; `None` when the
    /// input is not one (tract then runs the graph and says what is wrong).
    pub fn run(&self, input: &Tensor) -> Option<Tensor> {
        let first = self.layers.first()?;
        let [rows, width] = *input.shape() else {
            return None;
        };
        if width != first.inputs {
            return None;
        }
        let cast;
        let input = if input.datum_type() == f32::datum_type() {
            input
        } else {
            cast = input.cast_to::<f32>().ok()?;
            &*cast
        };
        let values = input.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?;
        // The rows are padded to whole groups of [`ROWS`] with zeros, and
        // each layer's rows to whole blocks of columns: the loop never
        // meets a short group or block, and the padding is cut at the end.
        let padded = rows.next_multiple_of(ROWS);
        let mut values = values.to_vec();
        values.resize(padded * width, 0.0);
        let mut stride = width;
        let mut next = Vec::new();
        for layer in &self.layers {
            layer.run(&values, stride, &mut next);
            std::mem::swap(&mut values, &mut next);
            stride = layer.stride();
        }
        let width = self.layers.last()?.outputs;
        let answer: Vec<f32> = if width == stride {
            values.truncate(rows * width);
            values
        } else {
            values
                .chunks_exact(stride)
                .take(rows)
                .flat_map(|row| &row[..width])
                .copied()
                .collect()
        };
        Tensor::from_shape(&[rows, width], &answer).ok()
    }
}

/// Whether `input` is `float` (else something a first `Cast` may turn into
/// it), and its width, when it is a matrix.
fn rank_two(input: &pb::ValueInfoProto) -> Option<(bool, Option<usize>)> {
    let Some(pb::type_proto::Value::TensorType(tensor)) = input.r#type.as_ref()?.value.as_ref()
    else {
        return None;
    };
    let dims = &tensor.shape.as_ref()?.dim;
    let [_, width] = dims.as_slice() else {
        return None;
    };
    let width = match width.value {
        Some(pb::tensor_shape_proto::dimension::Value::DimValue(w)) if w > 0 => {
            usize::try_from(w).ok()
        }
        _ => None,
    };
    Some((
        tensor.elem_type == pb::tensor_proto::DataType::Float as i32,
        width,
    ))
}

fn attribute<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// A `Gemm` node as a layer: `alpha · x · B + beta · C`, `B` transposed or not.
fn gemm(
    node: &pb::NodeProto,
    b: &pb::TensorProto,
    c: Option<&pb::TensorProto>,
    width: usize,
) -> Option<Layer> {
    let mut alpha = 1.0;
    let mut beta = 1.0;
    let mut transposed = false;
    for a in &node.attribute {
        match a.name.as_str() {
            "alpha" => alpha = a.f,
            "beta" => beta = a.f,
            "transA" if a.i == 0 => {}
            "transB" => transposed = a.i != 0,
            _ => return None,
        }
    }
    let (dims, b) = floats(b)?;
    let [rows, cols] = dims[..] else { return None };
    let (k, n) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    if k != width {
        return None;
    }
    let weights: Vec<f32> = (0..k * n)
        .map(|i| {
            let (row, col) = (i / n, i % n);
            alpha * if transposed { b[col * k + row] } else { b[i] }
        })
        .collect();
    let mut layer = Layer::new(&weights, k, n);
    if let Some(c) = c {
        let (dims, c) = floats(c)?;
        let per_column = c.len() == n && dims.iter().rev().skip(1).all(|&d| d == 1);
        let one = c.len() == 1;
        if !per_column && !one {
            return None;
        }
        for j in 0..n {
            layer.bias[j / COLS][j % COLS] = beta * if one { c[0] } else { c[j] };
        }
    }
    Some(layer)
}

/// A `LinearRegressor` (ONNX-ML, what skl2onnx writes for LinearRegression
/// and Ridge) as a layer: `x · coefficientsᵀ + intercepts`, one column per
/// target; only with no post-transform.
fn linear_regressor(node: &pb::NodeProto, width: usize) -> Option<Layer> {
    let mut coefficients: &[f32] = &[];
    let mut intercepts: &[f32] = &[];
    let mut targets = 1;
    for a in &node.attribute {
        match a.name.as_str() {
            "coefficients" => coefficients = &a.floats,
            "intercepts" => intercepts = &a.floats,
            "targets" => targets = usize::try_from(a.i).ok()?,
            "post_transform" if a.s == b"NONE" => {}
            _ => return None,
        }
    }
    if targets == 0 || Some(coefficients.len()) != width.checked_mul(targets) {
        return None;
    }
    // Coefficients come a target's row at a time; a layer's weights, an
    // input's row at a time.
    let weights: Vec<f32> = (0..width * targets)
        .map(|i| coefficients[(i % targets) * width + i / targets])
        .collect();
    let mut layer = Layer::new(&weights, width, targets);
    match intercepts.len() {
        0 => {}
        n if n == targets => {
            for (j, b) in intercepts.iter().enumerate() {
                layer.bias[j / COLS][j % COLS] = *b;
            }
        }
        _ => return None,
    }
    Some(layer)
}

/// A constant of `float`s held in the file itself: its dimensions and values.
fn floats(t: &pb::TensorProto) -> Option<(Vec<usize>, Vec<f32>)> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 || t.data_location == Some(1) {
        return None;
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()?;
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    let values: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else if !t.raw_data.len().is_multiple_of(4) {
        return None;
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    (values.len() == count).then_some((dims, values))
}

/// A constant of `int64`s held in the file itself.
fn ints(t: &pb::TensorProto) -> Option<Vec<i64>> {
    if t.data_type != pb::tensor_proto::DataType::Int64 as i32 || t.data_location == Some(1) {
        return None;
    }
    if t.raw_data.is_empty() {
        Some(t.int64_data.clone())
    } else {
        t.raw_data.len().is_multiple_of(8).then(|| {
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect()
        })
    }
}

#[cfg(test)]
#[path = "dense_tests.rs"]
mod tests;
