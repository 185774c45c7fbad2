//! A tree ensemble's tables and their evaluation, as onnxruntime evaluates
//! them. The tables are checked when they are built (see `tree.rs`): every
//! child is in range and no tree has a cycle, so a walk from a root always
//! ends at a leaf.

use tract_onnx::tract_hir::internal::*;

use super::features;

/// Rows that walk a tree side by side.
const BLOCK: usize = 8;

/// How the trees' votes for one column combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Aggregate {
    /// Added up (gradient boosting; random forests pre-divide their weights).
    Sum,
    /// Added up, then divided by the number of trees.
    Average,
    /// The smallest vote.
    Min,
    /// The largest vote.
    Max,
}

/// A branch's test of a feature against its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Test {
    /// `x <= t`
    Leq,
    /// `x < t`
    Lt,
    /// `x >= t`
    Gte,
    /// `x > t`
    Gt,
    /// `x == t`
    Eq,
    /// `x != t`
    Neq,
}

impl Test {
    fn holds(self, x: f32, threshold: f32) -> bool {
        match self {
            Test::Leq => x <= threshold,
            Test::Lt => x < threshold,
            Test::Gte => x >= threshold,
            Test::Gt => x > threshold,
            Test::Eq => x == threshold,
            Test::Neq => x != threshold,
        }
    }
}

/// One node of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    /// Goes to `next[0]` when the test holds (or the feature is NaN and
    /// `nan_yes`), to `next[1]` otherwise: an index, not a jump, so that
    /// the walk does not mispredict a branch at every level.
    Branch {
        feature: u32,
        /// The threshold's bits, so that the table can be `Eq`.
        threshold: u32,
        test: Test,
        nan_yes: bool,
        next: [u32; 2],
    },
    /// Votes `votes[start..end]`.
    Leaf { start: u32, end: u32 },
}

/// One node as the walk reads it, 16 bytes: the feature (its top bit set
/// when a missing value takes the true branch), the threshold's bits, and
/// the next node for a true and a false test. A leaf points to itself both
/// ways, so that a walk of a tree's depth needs no test for having arrived,
/// and rows walking side by side take no branch that depends on their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    feature: u32,
    threshold: u32,
    next: [u32; 2],
}

/// The bit of [`Step::feature`] that sends a missing value to the true branch.
const NAN_YES: u32 = 1 << 31;

/// The trees of an ensemble, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Forest {
    steps: Vec<Step>,
    /// Each node's test; only read when the branches do not all test alike.
    tests: Vec<Test>,
    /// The test of every branch, when they all test alike (the converters'
    /// usual case), so that the walk is compiled for it.
    uniform: Option<Test>,
    /// `votes[start..end]` of each leaf; `(0, 0)` for a branch.
    leaf_votes: Vec<(u32, u32)>,
    /// Each tree's root and depth (the edges of its longest path).
    trees: Vec<(u32, u32)>,
    /// `(column, weight bits)` of every leaf, leaf after leaf.
    votes: Vec<(u32, u32)>,
    pub columns: usize,
    aggregate: Aggregate,
    /// The largest feature index a branch reads.
    max_feature: usize,
    /// The score columns that some leaf adds to.
    pub columns_used: Vec<usize>,
    /// No leaf weight is negative.
    pub weights_all_positive: bool,
}

/// What [`Forest::new`] is made from: tables whose children are in range
/// and whose trees have no cycle (`tree.rs` checks both).
pub(super) struct Tables {
    pub nodes: Vec<Node>,
    pub roots: Vec<u32>,
    pub votes: Vec<(u32, u32)>,
    pub columns: usize,
    pub aggregate: Aggregate,
    pub max_feature: usize,
    pub columns_used: Vec<usize>,
    pub weights_all_positive: bool,
}

impl Forest {
    /// Lays the checked tables out for the walk.
    pub fn new(tables: Tables) -> TractResult<Self> {
        let Tables {
            nodes,
            roots,
            votes,
            columns,
            aggregate,
            max_feature,
            columns_used,
            weights_all_positive,
        } = tables;
        ensure!(
            max_feature < NAN_YES as usize,
            "feature index {max_feature} is too large"
        );
        let mut steps = Vec::with_capacity(nodes.len());
        let mut tests = Vec::with_capacity(nodes.len());
        let mut leaf_votes = Vec::with_capacity(nodes.len());
        let mut uniform = None;
        let mut mixed = false;
        for (at, node) in nodes.iter().enumerate() {
            let at = u32::try_from(at).map_err(|_| format_err!("too many nodes"))?;
            match *node {
                Node::Branch {
                    feature,
                    threshold,
                    test,
                    nan_yes,
                    next,
                } => {
                    mixed |= uniform.is_some_and(|u| u != test);
                    uniform = Some(test);
                    let nan = if nan_yes { NAN_YES } else { 0 };
                    steps.push(Step {
                        feature: feature | nan,
                        threshold,
                        next,
                    });
                    tests.push(test);
                    leaf_votes.push((0, 0));
                }
                Node::Leaf { start, end } => {
                    steps.push(Step {
                        feature: 0,
                        threshold: 0,
                        next: [at, at],
                    });
                    tests.push(Test::Leq);
                    leaf_votes.push((start, end));
                }
            }
        }
        let trees = roots
            .iter()
            .map(|&root| (root, depth(&nodes, root)))
            .collect();
        Ok(Forest {
            steps,
            tests,
            uniform: if mixed { None } else { uniform },
            leaf_votes,
            trees,
            votes,
            columns,
            aggregate,
            max_feature,
            columns_used,
            weights_all_positive,
        })
    }

    /// The combined votes, `[rows, columns]` row-major, and whether any
    /// tree voted for each of them (onnxruntime answers 0 where none did).
    pub fn scores(&self, input: &Tensor) -> TractResult<(usize, Vec<f32>, Vec<bool>)> {
        let (rows, width, x) = features(input)?;
        ensure!(
            width > self.max_feature,
            "the input has {width} features, but the trees read feature {}",
            self.max_feature
        );
        // One walk compiled per test, so that the loop holds no match.
        match self.uniform {
            Some(Test::Leq) => Ok(self.scores_with(rows, width, &x, |_, x, t| x <= t)),
            Some(Test::Lt) => Ok(self.scores_with(rows, width, &x, |_, x, t| x < t)),
            Some(Test::Gte) => Ok(self.scores_with(rows, width, &x, |_, x, t| x >= t)),
            Some(Test::Gt) => Ok(self.scores_with(rows, width, &x, |_, x, t| x > t)),
            Some(Test::Eq) => Ok(self.scores_with(rows, width, &x, |_, x, t| x == t)),
            Some(Test::Neq) => Ok(self.scores_with(rows, width, &x, |_, x, t| x != t)),
            None => {
                Ok(self.scores_with(rows, width, &x, |node, x, t| self.tests[node].holds(x, t)))
            }
        }
    }

    fn scores_with(
        &self,
        rows: usize,
        width: usize,
        x: &[f32],
        holds: impl Fn(usize, f32, f32) -> bool + Copy,
    ) -> (usize, Vec<f32>, Vec<bool>) {
        let mut out = vec![0f32; rows * self.columns];
        let mut all_voted = vec![false; rows * self.columns];
        // Tree after tree, each over every row: one tree's nodes stay in the
        // cache while the batch goes through it, a block of rows at a time
        // so that their walks overlap.
        for &(root, depth) in &self.trees {
            for (block, rows_x) in x.chunks(width * BLOCK).enumerate() {
                let count = rows_x.len() / width;
                let at = if count == BLOCK {
                    self.walk_block(root, depth, rows_x, width, holds)
                } else {
                    let mut at = [root; BLOCK];
                    self.walk(depth, rows_x, width, &mut at[..count], holds);
                    at
                };
                for (k, &leaf) in at[..count].iter().enumerate() {
                    let (start, end) = self.leaf_votes[leaf as usize];
                    let row = (block * BLOCK + k) * self.columns;
                    let scores = &mut out[row..row + self.columns];
                    let voted = &mut all_voted[row..row + self.columns];
                    for &(column, weight) in &self.votes[start as usize..end as usize] {
                        let (column, weight) = (column as usize, f32::from_bits(weight));
                        let score = &mut scores[column];
                        *score = match self.aggregate {
                            Aggregate::Sum | Aggregate::Average => *score + weight,
                            Aggregate::Min if voted[column] => score.min(weight),
                            Aggregate::Max if voted[column] => score.max(weight),
                            Aggregate::Min | Aggregate::Max => weight,
                        };
                        voted[column] = true;
                    }
                }
            }
        }
        if self.aggregate == Aggregate::Average && !self.trees.is_empty() {
            let trees = self.trees.len() as f32;
            out.iter_mut().for_each(|s| *s /= trees);
        }
        (rows, out, all_voted)
    }

    /// Walks the rows of `block` (`width` features each) `depth` steps down
    /// the tree from `root`, side by side, one step each per round: each
    /// ends at its leaf, in `at`.
    fn walk(
        &self,
        depth: u32,
        block: &[f32],
        width: usize,
        at: &mut [u32],
        holds: impl Fn(usize, f32, f32) -> bool + Copy,
    ) {
        for _ in 0..depth {
            for (k, node) in at.iter_mut().enumerate() {
                *node = self.step(*node, &block[k * width..], holds);
            }
        }
    }

    /// [`Forest::walk`] of a full block: its length known, the loop over
    /// the rows unrolls and their nodes stay in registers.
    fn walk_block(
        &self,
        root: u32,
        depth: u32,
        block: &[f32],
        width: usize,
        holds: impl Fn(usize, f32, f32) -> bool + Copy,
    ) -> [u32; BLOCK] {
        let mut at = [root; BLOCK];
        for _ in 0..depth {
            for (k, node) in at.iter_mut().enumerate() {
                *node = self.step(*node, &block[k * width..], holds);
            }
        }
        at
    }

    /// The node after `node` for the row `x`.
    #[inline(always)]
    fn step(&self, node: u32, x: &[f32], holds: impl Fn(usize, f32, f32) -> bool) -> u32 {
        let step = self.steps[node as usize];
        let x = x[(step.feature & !NAN_YES) as usize];
        let nan = x.is_nan();
        let go = (nan & (step.feature & NAN_YES != 0))
            | (!nan & holds(node as usize, x, f32::from_bits(step.threshold)));
        step.next[usize::from(!go)]
    }
}

/// The edges of the longest path from `root` to a leaf. The tree has no
/// cycle, so the walk ends.
fn depth(nodes: &[Node], root: u32) -> u32 {
    let mut deepest = 0;
    let mut stack = vec![(root, 0u32)];
    while let Some((at, level)) = stack.pop() {
        match nodes[at as usize] {
            Node::Branch { next, .. } => {
                stack.extend(next.map(|child| (child, level + 1)));
            }
            Node::Leaf { .. } => deepest = deepest.max(level),
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two trees over two features: `x0 <= 0.5 ? (x1 < 2 ? 1 : 2) : 3`,
    /// missing values of x0 to the true branch; and `x1 <= 0 ? 10 : 20`.
    fn forest() -> Forest {
        let branch = |feature, threshold: f32, next, nan_yes| Node::Branch {
            feature,
            threshold: threshold.to_bits(),
            test: Test::Leq,
            nan_yes,
            next,
        };
        let leaf = |vote: u32| Node::Leaf {
            start: vote,
            end: vote + 1,
        };
        let nodes = vec![
            branch(0, 0.5, [1, 4], true),
            Node::Branch {
                feature: 1,
                threshold: 2f32.to_bits(),
                test: Test::Lt,
                nan_yes: false,
                next: [2, 3],
            },
            leaf(0),
            leaf(1),
            leaf(2),
            branch(1, 0.0, [6, 7], false),
            leaf(3),
            leaf(4),
        ];
        let votes = [1f32, 2., 3., 10., 20.]
            .iter()
            .map(|w| (0, w.to_bits()))
            .collect();
        Forest::new(Tables {
            nodes,
            roots: vec![0, 5],
            votes,
            columns: 1,
            aggregate: Aggregate::Sum,
            max_feature: 1,
            columns_used: vec![0],
            weights_all_positive: true,
        })
        .unwrap()
    }

    fn expected(x0: f32, x1: f32) -> f32 {
        let first = if x0.is_nan() || x0 <= 0.5 {
            if x1 < 2.0 { 1.0 } else { 2.0 }
        } else {
            3.0
        };
        first + if x1 <= 0.0 { 10.0 } else { 20.0 }
    }

    #[test]
    fn full_blocks_and_the_rest_walk_alike() {
        let forest = forest();
        assert_eq!(forest.uniform, None, "two tests: the mixed walk");
        assert_eq!(forest.trees, vec![(0, 2), (5, 1)]);
        // One block and three more rows.
        let rows: Vec<[f32; 2]> = (0..BLOCK + 3)
            .map(|i| match i % 4 {
                0 => [0.0, 1.0],
                1 => [f32::NAN, 3.0],
                2 => [1.0, -1.0],
                _ => [0.5, 2.0],
            })
            .collect();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let input = Tensor::from_shape(&[rows.len(), 2], &flat).unwrap();
        let (count, scores, voted) = forest.scores(&input).unwrap();
        assert_eq!(count, rows.len());
        let want: Vec<f32> = rows.iter().map(|[a, b]| expected(*a, *b)).collect();
        assert_eq!(scores, want);
        assert!(voted.iter().all(|v| *v));
    }
}
