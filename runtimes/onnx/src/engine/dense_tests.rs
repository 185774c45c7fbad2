//! The fused chain against tract's plan of the same graph, and the graphs
//! it must leave to tract.

use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;

use super::super::graph::Graph;
use super::*;

fn constant(name: &str, dims: &[usize], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attributes: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute: attributes,
        ..Default::default()
    }
}

fn float_attribute(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        f,
        r#type: 1,
        ..Default::default()
    }
}

fn int_attribute(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        i,
        r#type: 2,
        ..Default::default()
    }
}

fn value(name: &str, elem_type: DataType, dims: &[Option<usize>]) -> pb::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(d) => Dim::DimValue(*d as i64),
                None => Dim::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem_type as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Values in [-1, 1), the same for the same seed.
fn values(count: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn model(
    input: pb::ValueInfoProto,
    nodes: Vec<pb::NodeProto>,
    constants: Vec<pb::TensorProto>,
    output: &str,
) -> Vec<u8> {
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "dense".into(),
            node: nodes,
            initializer: constants,
            input: vec![input],
            output: vec![value(output, DataType::Float, &[None, None])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// Every layer kind: MatMul + Add + Relu, a Gemm with a transposed B,
/// alpha and beta, then Sigmoid; layers whose widths are not whole
/// blocks (70, 9, 3); a Gemm with one bias for all, Tanh; a last Reshape.
fn every_layer_kind() -> Vec<u8> {
    let nodes = vec![
        node(
            "Cast",
            &["x"],
            "x32",
            vec![int_attribute("to", DataType::Float as i64)],
        ),
        node("MatMul", &["x32", "w1"], "m1", vec![]),
        node("Add", &["b1", "m1"], "a1", vec![]),
        node("Relu", &["a1"], "r1", vec![]),
        node(
            "Gemm",
            &["r1", "w2", "b2"],
            "g2",
            vec![
                int_attribute("transB", 1),
                float_attribute("alpha", 0.5),
                float_attribute("beta", 2.0),
            ],
        ),
        node("Sigmoid", &["g2"], "s2", vec![]),
        node("Identity", &["s2"], "i2", vec![]),
        node("Gemm", &["i2", "w3", "b3"], "g3", vec![]),
        node("Tanh", &["g3"], "t3", vec![]),
        node("Reshape", &["t3", "shape"], "y", vec![]),
    ];
    let mut shape = constant("shape", &[2], &[]);
    shape.data_type = DataType::Int64 as i32;
    shape.raw_data = [-1i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let constants = vec![
        constant("w1", &[5, 70], &values(5 * 70, 1)),
        constant("b1", &[1, 70], &values(70, 2)),
        constant("w2", &[9, 70], &values(9 * 70, 3)),
        constant("b2", &[9], &values(9, 4)),
        constant("w3", &[9, 3], &values(9 * 3, 5)),
        constant("b3", &[1], &values(1, 6)),
        shape,
    ];
    model(
        value("x", DataType::Double, &[None, Some(5)]),
        nodes,
        constants,
        "y",
    )
}

/// Asserts that the fused answer is tract's, within float rounding.
fn assert_close(fused: &Tensor, planned: &Tensor, rows: usize) {
    let floats = |t: &Tensor| -> Vec<f32> {
        t.try_as_plain_ram()
            .expect("plain")
            .as_slice::<f32>()
            .expect("f32")
            .to_vec()
    };
    for (f, p) in floats(fused).iter().zip(floats(planned)) {
        assert!(
            (f - p).abs() <= 1e-5 * p.abs().max(1.0),
            "{rows} rows: {f} against {p}"
        );
    }
}

#[test]
fn a_fused_chain_answers_as_tract_does_at_every_batch_size() {
    let graph = Graph::load(&every_layer_kind()).expect("graph");
    assert!(graph.is_fused());
    for rows in [0, 1, 3, 4, 5, 64, 67] {
        let x: Vec<f64> = values(rows * 5, rows as u32 + 7)
            .into_iter()
            .map(f64::from)
            .collect();
        let input = Tensor::from_shape(&[rows, 5], &x).expect("input");
        let fused = graph.run(tvec!(input.clone().into())).expect("fused");
        let planned = graph.run_on_tract(tvec!(input.into())).expect("tract");
        assert_eq!(fused[0].shape(), planned[0].shape(), "{rows} rows");
        assert_close(&fused[0], &planned[0], rows);
    }
}

#[test]
fn an_input_of_another_width_is_left_to_tract() {
    let graph = Graph::load(&every_layer_kind()).expect("graph");
    let input = Tensor::from_shape(&[2, 4], &[0f64; 8]).expect("input");
    assert!(graph.run(tvec!(input.into())).is_err());
}

#[test]
fn graphs_that_are_not_only_dense_layers_are_not_fused() {
    let relu_twice = vec![
        node("MatMul", &["x", "w"], "m", vec![]),
        node("Relu", &["m"], "r", vec![]),
        node("Relu", &["r"], "y", vec![]),
    ];
    let bias_after_activation = vec![
        node("MatMul", &["x", "w"], "m", vec![]),
        node("Relu", &["m"], "r", vec![]),
        node("Add", &["r", "b"], "y", vec![]),
    ];
    let input_as_weights = vec![node("MatMul", &["w", "x"], "y", vec![])];
    let other_op = vec![
        node("MatMul", &["x", "w"], "m", vec![]),
        node("Softmax", &["m"], "y", vec![]),
    ];
    let branch = vec![
        node("MatMul", &["x", "w"], "m", vec![]),
        node("Add", &["m", "x"], "y", vec![]),
    ];
    for (name, nodes) in [
        ("relu twice", relu_twice),
        ("bias after activation", bias_after_activation),
        ("input as weights", input_as_weights),
        ("another operator", other_op),
        ("a branch", branch),
    ] {
        let constants = vec![
            constant("w", &[4, 4], &values(16, 1)),
            constant("b", &[4], &values(4, 2)),
        ];
        let bytes = model(
            value("x", DataType::Float, &[None, Some(4)]),
            nodes,
            constants,
            "y",
        );
        let proto = pb::ModelProto::decode(bytes.as_slice()).expect("proto");
        let graph = proto.graph.expect("graph");
        assert!(DenseChain::recognise(&graph).is_none(), "{name}");
    }
}

#[test]
fn weights_whose_size_disagrees_with_their_shape_are_not_fused() {
    let mut short = constant("w", &[4, 4], &values(15, 1));
    let nodes = vec![node("MatMul", &["x", "w"], "y", vec![])];
    let graph_with = |w: pb::TensorProto| pb::GraphProto {
        node: nodes.clone(),
        initializer: vec![w],
        input: vec![value("x", DataType::Float, &[None, Some(4)])],
        output: vec![value("y", DataType::Float, &[None, None])],
        ..Default::default()
    };
    assert!(DenseChain::recognise(&graph_with(short.clone())).is_none());
    short.raw_data.push(0);
    assert!(DenseChain::recognise(&graph_with(short)).is_none());
    assert!(DenseChain::recognise(&graph_with(constant("w", &[4, 4], &values(16, 1)))).is_some());
}

#[test]
fn a_layer_of_no_outputs_is_not_fused() {
    let layers = |widths: &[usize]| {
        let mut nodes = Vec::new();
        let mut constants = Vec::new();
        let mut current = "x".to_string();
        for (index, pair) in widths.windows(2).enumerate() {
            let (w, out) = (format!("w{index}"), format!("m{index}"));
            nodes.push(node(
                "MatMul",
                &[current.as_str(), w.as_str()],
                &out,
                vec![],
            ));
            constants.push(constant(
                &w,
                &[pair[0], pair[1]],
                &values(pair[0] * pair[1], 1),
            ));
            current = out;
        }
        let graph = pb::GraphProto {
            node: nodes,
            initializer: constants,
            input: vec![value("x", DataType::Float, &[None, Some(widths[0])])],
            output: vec![value(&current, DataType::Float, &[None, None])],
            ..Default::default()
        };
        DenseChain::recognise(&graph)
    };
    assert!(layers(&[4, 0]).is_none());
    assert!(layers(&[4, 0, 3]).is_none());
    assert!(layers(&[4, 2, 3]).is_some());
}

fn ml_attribute(name: &str, build: impl FnOnce(&mut pb::AttributeProto)) -> pb::AttributeProto {
    let mut attribute = pb::AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    build(&mut attribute);
    attribute
}

/// skl2onnx's LinearRegression of 3 features and 2 targets: one
/// `LinearRegressor` node, with `post_transform`.
fn linear_regressor(post_transform: &str) -> Vec<u8> {
    let mut regressor = node(
        "LinearRegressor",
        &["x"],
        "y",
        vec![
            ml_attribute("coefficients", |a| {
                a.floats = values(6, 11);
                a.r#type = 6;
            }),
            ml_attribute("intercepts", |a| {
                a.floats = vec![0.25, -3.0];
                a.r#type = 6;
            }),
            ml_attribute("targets", |a| {
                a.i = 2;
                a.r#type = 2;
            }),
            ml_attribute("post_transform", |a| {
                a.s = post_transform.as_bytes().to_vec();
                a.r#type = 3;
            }),
        ],
    );
    regressor.domain = "ai.onnx.ml".into();
    let mut model = pb::ModelProto::decode(
        model(
            value("x", DataType::Float, &[None, Some(3)]),
            vec![regressor],
            vec![],
            "y",
        )
        .as_slice(),
    )
    .expect("model");
    model.opset_import.push(pb::OperatorSetIdProto {
        domain: "ai.onnx.ml".into(),
        version: 1,
    });
    model.encode_to_vec()
}

#[test]
fn a_linear_regressor_is_one_fused_layer_that_answers_as_tract_does() {
    let graph = Graph::load(&linear_regressor("NONE")).expect("graph");
    assert!(graph.is_fused());
    for rows in [1, 5, 64] {
        let input = Tensor::from_shape(&[rows, 3], &values(rows * 3, 3)).expect("input");
        let fused = graph.run(tvec!(input.clone().into())).expect("fused");
        let planned = graph.run_on_tract(tvec!(input.into())).expect("tract");
        assert_eq!(fused[0].shape(), planned[0].shape(), "{rows} rows");
        assert_close(&fused[0], &planned[0], rows);
    }
    let transformed = Graph::load(&linear_regressor("SOFTMAX")).expect("graph");
    assert!(!transformed.is_fused());
}

/// A layer of one output, as regressors end: 7 inputs to 5, then 5 to 1
/// with `Relu` (a whole group of four inputs and one more), and 9 inputs
/// straight to 1 with no activation.
fn single_outputs(inputs: usize) -> Vec<u8> {
    let (nodes, constants) = if inputs == 7 {
        (
            vec![
                node("MatMul", &["x", "w1"], "m1", vec![]),
                node("Add", &["m1", "b1"], "a1", vec![]),
                node("Relu", &["a1"], "r1", vec![]),
                node("MatMul", &["r1", "w2"], "m2", vec![]),
                node("Add", &["m2", "b2"], "a2", vec![]),
                node("Relu", &["a2"], "y", vec![]),
            ],
            vec![
                constant("w1", &[7, 5], &values(7 * 5, 11)),
                constant("b1", &[1, 5], &values(5, 12)),
                constant("w2", &[5, 1], &values(5, 13)),
                constant("b2", &[1, 1], &[-0.4]),
            ],
        )
    } else {
        (
            vec![
                node("MatMul", &["x", "w"], "m", vec![]),
                node("Add", &["m", "b"], "y", vec![]),
            ],
            vec![
                constant("w", &[inputs, 1], &values(inputs, 15)),
                constant("b", &[1], &values(1, 16)),
            ],
        )
    };
    model(
        value("x", DataType::Float, &[None, Some(inputs)]),
        nodes,
        constants,
        "y",
    )
}

#[test]
fn a_layer_of_one_output_answers_as_tract_does() {
    for inputs in [7, 9] {
        let graph = Graph::load(&single_outputs(inputs)).expect("graph");
        assert!(graph.is_fused());
        let (mut negatives, mut zeros, mut positives) = (0, 0, 0);
        for rows in [1, 4, 6, 64] {
            let input =
                Tensor::from_shape(&[rows, inputs], &values(rows * inputs, 17)).expect("input");
            let fused = graph.run(tvec!(input.clone().into())).expect("fused");
            let planned = graph.run_on_tract(tvec!(input.into())).expect("tract");
            assert_eq!(fused[0].shape(), planned[0].shape(), "{rows} rows");
            assert_close(&fused[0], &planned[0], rows);
            let plain = planned[0].try_as_plain_ram().expect("plain");
            let sums = plain.as_slice::<f32>().expect("f32");
            negatives += sums.iter().filter(|&&s| s < 0.0).count();
            zeros += sums.iter().filter(|&&s| s == 0.0).count();
            positives += sums.iter().filter(|&&s| s > 0.0).count();
        }
        // Some sums are below zero: Relu clamps them, the plain layer keeps them.
        if inputs == 7 {
            assert!(
                negatives == 0 && zeros > 0 && positives > 0,
                "{negatives} negative, {zeros} zero, {positives} positive"
            );
        } else {
            assert!(negatives > 0, "no negative sums");
        }
    }
}
