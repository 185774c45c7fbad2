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

/// The trees of an ensemble, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Forest {
    pub nodes: Vec<Node>,
    pub roots: Vec<u32>,
    /// `(column, weight bits)` of every leaf, leaf after leaf.
    pub votes: Vec<(u32, u32)>,
    pub columns: usize,
    pub aggregate: Aggregate,
    /// The largest feature index a branch reads.
    pub max_feature: usize,
    /// The score columns that some leaf adds to.
    pub columns_used: Vec<usize>,
    /// No leaf weight is negative.
    pub weights_all_positive: bool,
}

impl Forest {
    /// The combined votes, `[rows, columns]` row-major, and whether any
    /// tree voted for each of them (onnxruntime answers 0 where none did).
    pub fn scores(&self, input: &Tensor) -> TractResult<(usize, Vec<f32>, Vec<bool>)> {
        let (rows, width, x) = features(input)?;
        ensure!(
            width > self.max_feature,
            "the input has {width} features, but the trees read feature {}",
            self.max_feature
        );
        let mut out = vec![0f32; rows * self.columns];
        let mut all_voted = vec![false; rows * self.columns];
        // Tree after tree, each over every row: one tree's nodes stay in the
        // cache while the batch goes through it, a block of rows at a time
        // so that their walks overlap.
        let mut leaves = [(0usize, 0usize); BLOCK];
        for &root in &self.roots {
            for (block, rows_x) in x.chunks(width * BLOCK).enumerate() {
                let count = rows_x.len() / width;
                self.leaves_of(root, rows_x, width, &mut leaves[..count]);
                for (k, &(start, end)) in leaves[..count].iter().enumerate() {
                    let row = (block * BLOCK + k) * self.columns;
                    let scores = &mut out[row..row + self.columns];
                    let voted = &mut all_voted[row..row + self.columns];
                    for &(column, weight) in &self.votes[start..end] {
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
        if self.aggregate == Aggregate::Average && !self.roots.is_empty() {
            let trees = self.roots.len() as f32;
            out.iter_mut().for_each(|s| *s /= trees);
        }
        Ok((rows, out, all_voted))
    }

    /// The leaves that the rows of `block` (`width` features each) reach
    /// from `root`: their ranges of votes. The rows walk side by side, one
    /// level each per round, so that their loads overlap.
    fn leaves_of(&self, root: u32, block: &[f32], width: usize, leaves: &mut [(usize, usize)]) {
        let mut at = [root as usize; BLOCK];
        let mut done = [false; BLOCK];
        let mut pending = leaves.len();
        while pending > 0 {
            for (k, leaf) in leaves.iter_mut().enumerate() {
                if done[k] {
                    continue;
                }
                match self.nodes[at[k]] {
                    Node::Branch {
                        feature,
                        threshold,
                        test,
                        nan_yes,
                        next,
                    } => {
                        let x = block[k * width + feature as usize];
                        let nan = x.is_nan();
                        let go =
                            (nan & nan_yes) | (!nan & test.holds(x, f32::from_bits(threshold)));
                        at[k] = next[usize::from(!go)] as usize;
                    }
                    Node::Leaf { start, end } => {
                        *leaf = (start as usize, end as usize);
                        done[k] = true;
                        pending -= 1;
                    }
                }
            }
        }
    }
}
