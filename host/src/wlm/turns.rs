//! Turns between groups of models (tenants) on the compute threads: each
//! group gets the cores in proportion to its weight when groups compete,
//! however many models it has.
//!
//! Within a group, work runs in arrival order, as it always has. Between
//! groups, the one that has used the least compute time for its weight goes
//! next (stride scheduling, with a virtual time per group). A batch is
//! charged an estimate (the group's last batch) when it is taken, so that
//! two threads taking work at once do not both pick the same group, and the
//! difference once it has run. A group that had nothing waiting starts from
//! the virtual time of the work being served: idle time is not saved up
//! for a later burst.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// A group of models that shares the compute threads by weight with the
/// other groups: a tenant's models, with its `cpu_weight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuGroup {
    /// The group's name, such as the tenant's.
    pub name: Arc<str>,
    /// Its share against the other groups' weights (at least 1).
    pub weight: u32,
}

/// A group's place in [`Turns`]; [`GroupId::NONE`] is the work of no group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GroupId(usize);

impl GroupId {
    /// Models of no group, and tasks that are not a model's batch.
    pub(super) const NONE: GroupId = GroupId(0);
}

/// What a batch is charged before it has run, when its group has run none.
const FIRST_ESTIMATE: Duration = Duration::from_micros(100);

struct Group<R> {
    waiting: VecDeque<R>,
    /// Compute time used, in nanoseconds divided by the weight.
    pass: u64,
    weight: u64,
    /// The last batch's compute time: the estimate charged up front.
    last_cost: Duration,
}

impl<R> Group<R> {
    fn new(weight: u32) -> Self {
        Group {
            waiting: VecDeque::new(),
            pass: 0,
            weight: u64::from(weight.max(1)),
            last_cost: FIRST_ESTIMATE,
        }
    }

    fn stride(&self, cost: Duration) -> u64 {
        u64::try_from(cost.as_nanos()).unwrap_or(u64::MAX) / self.weight
    }
}

/// The runnable work, by group.
pub(super) struct Turns<R> {
    groups: Vec<Group<R>>,
    by_name: HashMap<Arc<str>, GroupId>,
    /// The groups with work waiting.
    active: Vec<GroupId>,
    /// The virtual time of the work taken last.
    now: u64,
}

impl<R> Turns<R> {
    pub(super) fn new() -> Self {
        Turns {
            groups: vec![Group::new(1)],
            by_name: HashMap::new(),
            active: Vec::new(),
            now: 0,
        }
    }

    /// The place of `group` (created on first use; a new weight replaces
    /// the old one, as after the tenants file is read again).
    pub(super) fn group(&mut self, group: Option<&CpuGroup>) -> GroupId {
        let Some(group) = group else {
            return GroupId::NONE;
        };
        let id = *self.by_name.entry(group.name.clone()).or_insert_with(|| {
            self.groups.push(Group::new(group.weight));
            GroupId(self.groups.len() - 1)
        });
        self.groups[id.0].weight = u64::from(group.weight.max(1));
        id
    }

    /// True when no work waits.
    pub(super) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Queues `runnable` behind its group's work.
    pub(super) fn push(&mut self, group: GroupId, runnable: R) {
        let entry = &mut self.groups[group.0];
        if entry.waiting.is_empty() {
            entry.pass = entry.pass.max(self.now);
            self.active.push(group);
        }
        entry.waiting.push_back(runnable);
    }

    /// The next work: the oldest of the group with the least virtual time,
    /// with the estimate charged that [`Turns::charge`] settles; no estimate
    /// while there are no groups, when nothing needs timing.
    pub(super) fn pop(&mut self) -> Option<(GroupId, Option<Duration>, R)> {
        let position = match self.active.len() {
            0 => return None,
            1 => 0,
            _ => (0..self.active.len()).min_by_key(|&i| self.groups[self.active[i].0].pass)?,
        };
        let weighed = self.groups.len() > 1;
        let id = self.active[position];
        let group = &mut self.groups[id.0];
        let runnable = group.waiting.pop_front()?;
        if group.waiting.is_empty() {
            self.active.swap_remove(position);
        }
        if !weighed {
            return Some((id, None, runnable));
        }
        self.now = group.pass;
        let estimate = group.last_cost;
        group.pass = group.pass.saturating_add(group.stride(estimate));
        Some((id, Some(estimate), runnable))
    }

    /// Settles what work of `group` charged `estimate` really cost.
    pub(super) fn charge(&mut self, group: GroupId, estimate: Duration, cost: Duration) {
        let group = &mut self.groups[group.0];
        group.pass = group
            .pass
            .saturating_sub(group.stride(estimate))
            .saturating_add(group.stride(cost));
        group.last_cost = cost;
    }

    /// Work waiting, in all groups.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.iter().map(|g| g.waiting.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, weight: u32) -> CpuGroup {
        CpuGroup {
            name: Arc::from(name),
            weight,
        }
    }

    /// Runs `rounds` pieces of work, each costing `cost` of its group, with
    /// every group always backlogged; the work each group got.
    fn share(weights: &[(u32, Duration)], rounds: usize) -> Vec<Duration> {
        let mut turns = Turns::new();
        let ids: Vec<GroupId> = weights
            .iter()
            .enumerate()
            .map(|(i, (w, _))| turns.group(Some(&group(&format!("g{i}"), *w))))
            .collect();
        let mut used = vec![Duration::ZERO; weights.len()];
        for (index, id) in ids.iter().enumerate() {
            for _ in 0..3 {
                turns.push(*id, index);
            }
        }
        for _ in 0..rounds {
            let (id, estimate, index) = turns.pop().unwrap();
            let cost = weights[index].1;
            turns.charge(id, estimate.unwrap(), cost);
            used[index] += cost;
            turns.push(id, index);
        }
        used
    }

    #[test]
    fn groups_get_compute_time_in_proportion_to_their_weights() {
        let ms = Duration::from_millis(1);
        let used = share(&[(3, ms), (1, ms)], 4000);
        let ratio = used[0].as_secs_f64() / used[1].as_secs_f64();
        assert!((2.9..3.1).contains(&ratio), "{used:?}");
        // Time, not turns: a group whose batches cost four times as much
        // gets a quarter of the turns for the same weight.
        let used = share(&[(1, ms), (1, 4 * ms)], 4000);
        let ratio = used[0].as_secs_f64() / used[1].as_secs_f64();
        assert!((0.95..1.05).contains(&ratio), "{used:?}");
    }

    #[test]
    fn a_group_with_many_models_gets_no_more_than_its_weight() {
        // One group with 100 runnables (a tenant with 100 models), one with
        // one: they alternate, where arrival order gave the one a 1/101 share.
        let mut turns = Turns::new();
        let many = turns.group(Some(&group("many", 1)));
        let one = turns.group(Some(&group("one", 1)));
        for _ in 0..100 {
            turns.push(many, "many");
        }
        turns.push(one, "one");
        let mut ones = 0;
        for _ in 0..20 {
            let (id, estimate, what) = turns.pop().unwrap();
            turns.charge(id, estimate.unwrap(), Duration::from_millis(1));
            if what == "one" {
                ones += 1;
            }
            turns.push(id, what);
        }
        assert_eq!(ones, 10);
        assert_eq!(turns.len(), 101);
    }

    #[test]
    fn idle_time_is_not_saved_up_and_work_of_no_group_keeps_its_order() {
        let mut turns = Turns::new();
        let busy = turns.group(Some(&group("busy", 1)));
        let idle = turns.group(Some(&group("idle", 1)));
        for _ in 0..50 {
            turns.push(busy, "busy");
            let (id, estimate, what) = turns.pop().unwrap();
            turns.charge(id, estimate.unwrap(), Duration::from_millis(1));
            assert_eq!(what, "busy");
        }
        // The idle group arrives: it does not get 50 turns in a row.
        for _ in 0..10 {
            turns.push(idle, "idle");
            turns.push(busy, "busy");
        }
        let order: Vec<&str> = (0..6)
            .map(|_| {
                let (id, estimate, what) = turns.pop().unwrap();
                turns.charge(id, estimate.unwrap(), Duration::from_millis(1));
                what
            })
            .collect();
        assert!(
            order.iter().filter(|w| **w == "busy").count() >= 2,
            "{order:?}"
        );

        let mut plain = Turns::new();
        for index in 0..5 {
            plain.push(GroupId::NONE, index);
        }
        let order: Vec<(Option<Duration>, i32)> =
            std::iter::from_fn(|| plain.pop().map(|(_, estimate, i)| (estimate, i))).collect();
        // Without groups nothing is timed or charged.
        assert_eq!(order, [0, 1, 2, 3, 4].map(|i| (None, i)));
    }

    #[test]
    fn a_new_weight_replaces_the_old_one() {
        let mut turns: Turns<()> = Turns::new();
        let first = turns.group(Some(&group("t", 1)));
        let again = turns.group(Some(&group("t", 5)));
        assert_eq!(first, again);
        assert_eq!(turns.groups[first.0].weight, 5);
        assert_eq!(turns.group(None), GroupId::NONE);
    }
}
