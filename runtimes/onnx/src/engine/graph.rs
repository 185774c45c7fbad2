//! An ONNX file, parsed, checked and optimised inside the sandbox, with what
//! its callers need to know: the inputs it takes and the outputs it gives.
//!
//! Two rewrites come before tract reads the graph. A `ZipMap` (a sequence of
//! maps, which tract has no type for) becomes an `Identity`, and its labels
//! are kept so that the answer can be zipped again. A dimension with neither
//! a size nor a name (skl2onnx writes the batch so) gets a name, so that it
//! takes any size.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

use super::dense::DenseChain;
use super::ml;

/// Why a graph cannot be served.
#[derive(Debug)]
pub struct GraphError(pub String);

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One input or output of the graph, as callers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// Its name in the graph.
    pub name: String,
    /// Its element type.
    pub datum: DatumType,
    /// Its dimensions; `None` where any size goes.
    pub shape: Vec<Option<usize>>,
    /// For an output that was a `ZipMap`: the class labels of its columns.
    pub zipmap: Option<Vec<serde_json::Value>>,
}

/// A graph ready to run.
#[derive(Debug)]
pub struct Graph {
    plan: Arc<TypedSimplePlan>,
    /// The plan's run state, kept between runs: making one allocates a
    /// slot for every node's value and state, which for a small graph at
    /// batch 64 costs a share of the whole run. A run ends by clearing its
    /// values and symbols; a run that fails drops the state instead, and a
    /// graph whose operators keep state of their own never keeps one.
    state: RefCell<Option<TypedSimpleState>>,
    /// The same graph as one fused loop, when it is only dense layers.
    dense: Option<DenseChain>,
    /// What it takes, in order.
    pub inputs: Vec<Port>,
    /// What it gives, in order.
    pub outputs: Vec<Port>,
}

impl Graph {
    /// Parses and optimises `bytes`, an ONNX model.
    pub fn load(bytes: &[u8]) -> Result<Graph, GraphError> {
        let onnx = engine();
        let mut proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| GraphError(format!("the file is not an ONNX model: {e}")))?;
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| GraphError("the ONNX model has no graph".into()))?;
        let zipmaps = unzip_maps(graph)?;
        name_free_dimensions(graph);
        let dense = DenseChain::recognise(graph);
        let model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| GraphError(format!("cannot read the graph: {}", chain(&e))))?;
        let typed = model
            .into_optimized()
            .map_err(|e| GraphError(format!("cannot prepare the graph: {}", chain(&e))))?;
        let inputs = ports(&typed, &typed.inputs, &HashMap::new())?;
        let outputs = ports(&typed, &typed.outputs, &zipmaps)?;
        let plan = typed
            .into_runnable()
            .map_err(|e| GraphError(format!("cannot plan the graph: {}", chain(&e))))?;
        Ok(Graph {
            plan,
            state: RefCell::new(None),
            dense,
            inputs,
            outputs,
        })
    }

    /// Runs the graph on one tensor per input, in order. Integers that
    /// tract keeps as symbolic dimensions come back as `i64`, as ONNX has them.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<Tensor>, String> {
        if let (Some(dense), [input]) = (&self.dense, inputs.as_slice())
            && let Some(output) = dense.run(input)
        {
            return Ok(tvec!(output));
        }
        self.run_planned(inputs)
    }

    /// Runs the graph on tract's plan.
    fn run_planned(&self, inputs: TVec<TValue>) -> Result<TVec<Tensor>, String> {
        let mut kept = self.state.borrow_mut();
        let mut state = match kept.take() {
            Some(state) => state,
            None => self.plan.spawn().map_err(|e| chain(&e))?,
        };
        let outputs = state.run(inputs).map_err(|e| chain(&e))?;
        // An operator with a state of its own (a recurrence, say) starts
        // each run afresh, as tract's own `run` does.
        if state.op_states.iter().all(Option::is_none) {
            *kept = Some(state);
        }
        drop(kept);
        outputs
            .into_iter()
            .map(|value| {
                let tensor = value.into_tensor();
                if tensor.datum_type() == TDim::datum_type() {
                    tensor
                        .cast_to::<i64>()
                        .map(|t| t.into_owned())
                        .map_err(|e| chain(&e))
                } else {
                    Ok(tensor)
                }
            })
            .collect()
    }
}

/// tract's ONNX parser with this crate's operators.
fn engine() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx().with_ignore_output_shapes(true);
    ml::register(&mut onnx.op_register);
    onnx
}

/// An error with its causes, on one line: tract's context says which node failed.
fn chain(error: &TractError) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Turns every `ZipMap` into an `Identity` and returns its labels by output name.
fn unzip_maps(
    graph: &mut pb::GraphProto,
) -> Result<HashMap<String, Vec<serde_json::Value>>, GraphError> {
    let mut labels = HashMap::new();
    for node in &mut graph.node {
        if node.op_type != "ZipMap" {
            continue;
        }
        let mut found = None;
        for attribute in &node.attribute {
            match attribute.name.as_str() {
                "classlabels_int64s" => {
                    found = Some(
                        attribute
                            .ints
                            .iter()
                            .map(|&i| serde_json::Value::from(i))
                            .collect(),
                    )
                }
                "classlabels_strings" => {
                    found = Some(
                        attribute
                            .strings
                            .iter()
                            .map(|s| {
                                serde_json::Value::from(String::from_utf8_lossy(s).into_owned())
                            })
                            .collect(),
                    )
                }
                _ => {}
            }
        }
        let found: Vec<serde_json::Value> = found.ok_or_else(|| {
            GraphError(format!("ZipMap node {:?} has no class labels", node.name))
        })?;
        let output = node
            .output
            .first()
            .ok_or_else(|| GraphError(format!("ZipMap node {:?} has no output", node.name)))?;
        labels.insert(output.clone(), found);
        node.op_type = "Identity".into();
        node.domain = String::new();
        node.attribute.clear();
    }
    Ok(labels)
}

/// Gives a name to every input dimension that has neither a size nor a name.
fn name_free_dimensions(graph: &mut pb::GraphProto) {
    let initialized: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    for input in graph
        .input
        .iter_mut()
        .filter(|i| !initialized.contains(&i.name))
    {
        let Some(pb::type_proto::Value::TensorType(tensor)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        let Some(shape) = tensor.shape.as_mut() else {
            continue;
        };
        for (axis, dim) in shape.dim.iter_mut().enumerate() {
            let free = match &dim.value {
                None => true,
                Some(Dim::DimValue(v)) => *v < 0,
                Some(Dim::DimParam(p)) => p.is_empty() || p == "?" || p.starts_with("unk__"),
            };
            if free {
                let name = if axis == 0 {
                    "N".to_string()
                } else {
                    format!("D{axis}")
                };
                dim.value = Some(Dim::DimParam(name));
            }
        }
    }
}

fn ports(
    model: &TypedModel,
    outlets: &[OutletId],
    zipmaps: &HashMap<String, Vec<serde_json::Value>>,
) -> Result<Vec<Port>, GraphError> {
    outlets
        .iter()
        .map(|&outlet| {
            let fact = model
                .outlet_fact(outlet)
                .map_err(|e| GraphError(chain(&e)))?;
            let name = model
                .outlet_label(outlet)
                .map(str::to_string)
                .unwrap_or_else(|| model.node(outlet.node).name.clone());
            Ok(Port {
                zipmap: zipmaps.get(&name).cloned(),
                name,
                datum: if fact.datum_type == TDim::datum_type() {
                    i64::datum_type()
                } else {
                    fact.datum_type
                },
                shape: fact.shape.iter().map(|d| d.to_usize().ok()).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
impl Graph {
    /// Whether the graph runs as a fused chain of dense layers.
    pub(super) fn is_fused(&self) -> bool {
        self.dense.is_some()
    }

    /// Runs the graph on tract's plan, fused or not.
    pub(super) fn run_on_tract(&self, inputs: TVec<TValue>) -> Result<TVec<Tensor>, String> {
        self.run_planned(inputs)
    }
}
