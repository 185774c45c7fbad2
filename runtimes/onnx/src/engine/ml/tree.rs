//! `TreeEnsembleClassifier` and `TreeEnsembleRegressor`: every tree model of
//! scikit-learn, XGBoost and LightGBM, as their converters write it.
//!
//! tract's own ensemble code trusts its tables and walks its leaf table
//! from the start for every vote (milliseconds a row for a 100-tree forest),
//! so the trees are evaluated by [`Forest`]. This parser makes its tables
//! safe to trust: every child is a node of the same tree, no node is
//! reached twice (so no cycle), and every leaf adds to a column that
//! exists. Binary classifiers follow
//! onnxruntime: converters write one score column for the positive class,
//! with one `base_values` entry.

use std::collections::{BTreeMap, HashMap, HashSet};

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::forest::{Aggregate, Forest, Node, Tables, Test};
use super::{
    Floats, Kernel, Labels, MlNode, OutputShape, OutputSpec, PostTransform, argmax, post_transform,
    sigmoid, transform_row,
};

pub(super) fn register(register: &mut OnnxOpRegister) {
    register.insert("TreeEnsembleClassifier", classifier);
    register.insert("TreeEnsembleRegressor", regressor);
}

fn ints(node: &NodeProto, name: &str, len: Option<usize>) -> TractResult<Vec<i64>> {
    let values = node.get_attr_slice::<i64>(name)?.to_vec();
    if let Some(len) = len {
        node.expect_attr(name, values.len() == len, || {
            format!("{len} entries (one per node), got {}", values.len())
        })?;
    }
    Ok(values)
}

fn index(node: &NodeProto, name: &str, value: i64) -> TractResult<usize> {
    usize::try_from(value)
        .map_err(|_| format_err!("{}: {name} holds {value}, which is negative", node.name))
}

/// Reads the `nodes_*` and `{leaf}_*` attributes into a [`Forest`],
/// refusing anything its evaluation could not survive.
fn parse_forest(
    node: &NodeProto,
    leaf: &str,
    columns: usize,
    aggregate: Aggregate,
) -> TractResult<Forest> {
    let tree_ids = ints(node, "nodes_treeids", None)?;
    let count = tree_ids.len();
    node.expect_attr(
        "nodes_treeids",
        count > 0 && count < u32::MAX as usize,
        "at least one node, and fewer than 2^32",
    )?;
    let node_ids = ints(node, "nodes_nodeids", Some(count))?;
    let feature_ids = ints(node, "nodes_featureids", Some(count))?;
    let true_ids = ints(node, "nodes_truenodeids", Some(count))?;
    let false_ids = ints(node, "nodes_falsenodeids", Some(count))?;
    let values: Vec<f32> = node.get_attr_vec("nodes_values")?;
    node.expect_attr("nodes_values", values.len() == count, "one value per node")?;
    let modes: Vec<&str> = node.get_attr_vec("nodes_modes")?;
    node.expect_attr("nodes_modes", modes.len() == count, "one mode per node")?;
    let missing_true = node
        .get_attr_opt_slice::<i64>("nodes_missing_value_tracks_true")?
        .map(<[i64]>::to_vec)
        .unwrap_or_else(|| vec![0; count]);
    node.expect_attr(
        "nodes_missing_value_tracks_true",
        missing_true.len() == count,
        "one entry per node",
    )?;

    let name = |suffix: &str| format!("{leaf}_{suffix}");
    let leaf_trees = ints(node, &name("treeids"), None)?;
    let leaf_count = leaf_trees.len();
    let leaf_nodes = ints(node, &name("nodeids"), Some(leaf_count))?;
    let leaf_columns = ints(node, &name("ids"), Some(leaf_count))?;
    let leaf_weights: Vec<f32> = node.get_attr_vec(&name("weights"))?;
    node.expect_attr(
        &name("weights"),
        leaf_weights.len() == leaf_count,
        "one weight per leaf entry",
    )?;

    // Rows: tree after tree, each tree's nodes in the order of their ids.
    let mut by_tree: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &tree) in tree_ids.iter().enumerate() {
        by_tree.entry(tree).or_default().push(i);
    }
    let mut order = Vec::with_capacity(count);
    let mut row_of: HashMap<(i64, i64), usize> = HashMap::with_capacity(count);
    let mut roots = Vec::with_capacity(by_tree.len());
    for (&tree, members) in &mut by_tree {
        members.sort_by_key(|&i| node_ids[i]);
        roots.push(order.len());
        for &i in members.iter() {
            if row_of.insert((tree, node_ids[i]), order.len()).is_some() {
                bail!("tree {tree} has node {} twice", node_ids[i]);
            }
            order.push(i);
        }
    }
    let mut votes: HashMap<usize, Vec<(u32, f32)>> = HashMap::new();
    let mut columns_used = HashSet::new();
    for j in 0..leaf_count {
        let row = *row_of.get(&(leaf_trees[j], leaf_nodes[j])).ok_or_else(|| {
            format_err!(
                "a leaf weight names node {} of tree {}, which does not exist",
                leaf_nodes[j],
                leaf_trees[j]
            )
        })?;
        let column = index(node, &name("ids"), leaf_columns[j])?;
        if column >= columns {
            bail!("a leaf adds to column {column}, but there are only {columns}");
        }
        columns_used.insert(column);
        votes
            .entry(row)
            .or_default()
            .push((column as u32, leaf_weights[j]));
    }

    let mut nodes: Vec<Node> = Vec::with_capacity(count);
    let mut leaves: Vec<(u32, u32)> = Vec::with_capacity(leaf_count);
    let mut children: Vec<Option<(usize, usize)>> = Vec::with_capacity(count);
    let mut max_feature = 0;
    for (row, &i) in order.iter().enumerate() {
        let tree = tree_ids[i];
        let test = match modes[i] {
            "LEAF" => None,
            "BRANCH_LEQ" => Some(Test::Leq),
            "BRANCH_LT" => Some(Test::Lt),
            "BRANCH_GTE" => Some(Test::Gte),
            "BRANCH_GT" => Some(Test::Gt),
            "BRANCH_EQ" => Some(Test::Eq),
            "BRANCH_NEQ" => Some(Test::Neq),
            other => bail!(
                "node mode {other} is not one of LEAF, BRANCH_LEQ, BRANCH_LT, BRANCH_GTE, BRANCH_GT, BRANCH_EQ, BRANCH_NEQ"
            ),
        };
        match test {
            Some(test) => {
                if votes.contains_key(&row) {
                    bail!(
                        "node {} of tree {tree} is a branch but has leaf weights",
                        node_ids[i]
                    );
                }
                let child = |id: i64| {
                    row_of.get(&(tree, id)).copied().ok_or_else(|| {
                        format_err!(
                            "node {} of tree {tree} points to node {id}, which is not in that tree",
                            node_ids[i]
                        )
                    })
                };
                let (yes, no) = (child(true_ids[i])?, child(false_ids[i])?);
                let feature = index(node, "nodes_featureids", feature_ids[i])?;
                max_feature = max_feature.max(feature);
                let feature = u32::try_from(feature)
                    .map_err(|_| format_err!("feature index {feature} is too large"))?;
                nodes.push(Node::Branch {
                    feature,
                    threshold: values[i].to_bits(),
                    test,
                    nan_yes: missing_true[i] != 0,
                    next: [yes as u32, no as u32],
                });
                children.push(Some((yes, no)));
            }
            None => {
                let start = leaves.len() as u32;
                for (column, weight) in votes.remove(&row).unwrap_or_default() {
                    leaves.push((column, weight.to_bits()));
                }
                nodes.push(Node::Leaf {
                    start,
                    end: leaves.len() as u32,
                });
                children.push(None);
            }
        }
    }
    check_acyclic(&roots, &children)?;
    let mut columns_used: Vec<usize> = columns_used.into_iter().collect();
    columns_used.sort_unstable();
    Forest::new(Tables {
        nodes,
        roots: roots.iter().map(|&r| r as u32).collect(),
        votes: leaves,
        columns,
        aggregate,
        max_feature,
        columns_used,
        weights_all_positive: leaf_weights.iter().all(|w| *w >= 0.0),
    })
}

/// Walks every tree from its root: a node reached twice means a cycle (or
/// a shared node), and an evaluation that would never end.
fn check_acyclic(roots: &[usize], children: &[Option<(usize, usize)>]) -> TractResult<()> {
    let mut seen = vec![false; children.len()];
    for &root in roots {
        let mut stack = vec![root];
        while let Some(row) = stack.pop() {
            if std::mem::replace(&mut seen[row], true) {
                bail!("a tree reaches one of its nodes twice: it has a cycle or shares a node");
            }
            if let Some((yes, no)) = children[row] {
                stack.extend([yes, no]);
            }
        }
    }
    Ok(())
}

fn floats(node: &NodeProto, name: &str) -> TractResult<Vec<f32>> {
    Ok(node.get_attr_opt_vec::<f32>(name)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TreeClassifier {
    forest: Forest,
    labels: Labels,
    base: Floats,
    post: PostTransform,
}

fn classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_int64s")?;
    let forest = parse_forest(node, "class", labels.len(), Aggregate::Sum)?;
    let base = floats(node, "base_values")?;
    let binary = labels.len() == 2 && forest.columns_used.len() == 1;
    node.expect_attr(
        "base_values",
        base.is_empty() || base.len() == labels.len() || (binary && base.len() == 1),
        "one value per class (or one for a binary classifier)",
    )?;
    let kernel = TreeClassifier {
        forest,
        labels,
        base: Floats(base),
        post: post_transform(node)?,
    };
    Ok((expand(MlNode(kernel)), vec![]))
}

impl TreeClassifier {
    /// One score column for two classes: the positive class's score, as
    /// onnxruntime reads it (a probability when no weight is negative, a
    /// margin otherwise).
    fn binary_column(&self) -> Option<usize> {
        (self.labels.len() == 2 && self.forest.columns_used.len() == 1)
            .then(|| self.forest.columns_used[0])
    }
}

impl Kernel for TreeClassifier {
    fn name(&self) -> &'static str {
        "TreeEnsembleClassifier"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        self.labels.classifier_outputs()
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let classes = self.labels.len();
        let (rows, mut scores, _) = self.forest.scores(input)?;
        let mut winners = Vec::with_capacity(rows);
        if let Some(column) = self.binary_column() {
            let base = self.base.0.first().copied().unwrap_or(0.0);
            for row in scores.chunks_exact_mut(classes) {
                let s = row[column] + base;
                let (positive, pair) = if self.forest.weights_all_positive {
                    (s > 0.5, [1.0 - s, s])
                } else if self.post == PostTransform::Logistic {
                    (s > 0.0, [sigmoid(-s), sigmoid(s)])
                } else {
                    (s > 0.0, [-s, s])
                };
                winners.push(usize::from(positive));
                row.copy_from_slice(&pair);
            }
        } else {
            for row in scores.chunks_exact_mut(classes) {
                for (v, b) in row.iter_mut().zip(&self.base.0) {
                    *v += b;
                }
                let best = argmax(row);
                winners.push(best);
                transform_row(row, self.post);
            }
        }
        let probabilities = tensor1(&scores).into_shape(&[rows, classes])?;
        Ok(tvec!(self.labels.pick(&winners), probabilities))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TreeRegressor {
    forest: Forest,
    targets: usize,
    base: Floats,
    post: PostTransform,
}

fn regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let targets = node.get_attr_opt::<i64>("n_targets")?.unwrap_or(1);
    let targets = usize::try_from(targets)
        .ok()
        .filter(|t| (1..=1 << 16).contains(t))
        .ok_or_else(|| format_err!("n_targets is {targets}; it must be between 1 and 65536"))?;
    let aggregate = match node
        .get_attr_opt::<&str>("aggregate_function")?
        .unwrap_or("SUM")
    {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => bail!("aggregate_function {other} is not one of SUM, AVERAGE, MIN, MAX"),
    };
    let forest = parse_forest(node, "target", targets, aggregate)?;
    let base = floats(node, "base_values")?;
    node.expect_attr(
        "base_values",
        base.is_empty() || base.len() == targets,
        "one value per target",
    )?;
    let kernel = TreeRegressor {
        forest,
        targets,
        base: Floats(base),
        post: post_transform(node)?,
    };
    Ok((expand(MlNode(kernel)), vec![]))
}

impl Kernel for TreeRegressor {
    fn name(&self) -> &'static str {
        "TreeEnsembleRegressor"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            datum: Some(f32::datum_type()),
            shape: OutputShape::RowsBy(self.targets),
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        let (rows, mut scores, voted) = self.forest.scores(input)?;
        for (row, voted) in scores
            .chunks_exact_mut(self.targets)
            .zip(voted.chunks_exact(self.targets))
        {
            // As onnxruntime: a target no tree voted for is 0, without its base.
            for ((v, b), voted) in row.iter_mut().zip(&self.base.0).zip(voted) {
                if *voted {
                    *v += b;
                }
            }
            transform_row(row, self.post);
        }
        Ok(tvec!(tensor1(&scores).into_shape(&[rows, self.targets])?))
    }
}
