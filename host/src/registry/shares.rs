//! Shares: models grouped (by tenant), with a cap on what a group's loaded
//! models may hold and a weight on the compute threads. A group over its
//! memory share gives way by evicting its own least recently used idle
//! models, never another group's; its weight goes with each of its models
//! to the scheduler ([`crate::wlm::CpuGroup`]).
//!
//! A load admitted into a group is charged to it at once: until its model
//! is listed, the memory it will hold is not on any listed model, and two
//! loads in a row would each see room that only one of them may take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{LoadError, Registry, budget};
use crate::runtime::{Charge, MemoryMeter};

/// A model's group, that group's memory cap and its weight on the cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The group, such as a tenant's name.
    pub group: Arc<str>,
    /// What the group's models may hold at once, in bytes: their packages,
    /// metadata and instances (shared native code is the server's). `None`:
    /// only the server's budget.
    pub limit: Option<u64>,
    /// The group's share of the compute threads against other groups.
    pub cpu_weight: u32,
}

/// The function behind [`Shares`].
type ShareOf = dyn Fn(&str) -> Option<Share> + Send + Sync;

/// Which share, if any, a model name falls under; asked at every load, so
/// it may change while the server runs.
#[derive(Clone)]
pub struct Shares(Arc<ShareOf>);

impl Shares {
    /// Shares as `share_of` assigns them.
    pub fn new(share_of: impl Fn(&str) -> Option<Share> + Send + Sync + 'static) -> Self {
        Shares(Arc::new(share_of))
    }

    /// The share of model `name`.
    pub fn of(&self, name: &str) -> Option<Share> {
        // Every version of a model shares its name's share.
        (self.0)(crate::store::split_key(name).0)
    }
}

/// What the loads admitted into each group will hold, from admission until
/// their models are listed (or fail).
#[derive(Debug, Default)]
pub(super) struct Admitting(Mutex<HashMap<Arc<str>, MemoryMeter>>);

impl Admitting {
    /// The meter of `group`. Groups whose admitted loads have all ended are
    /// forgotten first: shares may change while the server runs, and a
    /// meter kept for every group ever named would only grow.
    fn meter(&self, group: &Arc<str>) -> MemoryMeter {
        let mut meters = self.0.lock().unwrap_or_else(|p| p.into_inner());
        meters.retain(|name, meter| name == group || meter.bytes() > 0);
        meters.entry(group.clone()).or_default().clone()
    }

    /// Bytes admitted into `group` and not yet listed.
    fn bytes(&self, group: &str) -> u64 {
        let meters = self.0.lock().unwrap_or_else(|p| p.into_inner());
        meters.get(group).map_or(0, MemoryMeter::bytes)
    }
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shares(…)")
    }
}

impl Registry {
    /// The share of model `name`, if the server has shares and it has one.
    pub(super) fn share_of(&self, name: &str) -> Option<Share> {
        self.config.shares.as_ref()?.of(name)
    }

    /// What the loaded models of `group` hold now, and what its admitted
    /// loads will, in bytes. A model just listed may still be counted
    /// twice, for the moment before its admission's charge ends: too much
    /// is safe, too little lets the group past its share.
    fn group_use(&self, group: &str) -> u64 {
        let listed: u64 = self
            .list()
            .iter()
            .filter(|model| {
                self.share_of(&model.name)
                    .is_some_and(|s| *s.group == *group)
            })
            .map(|model| {
                let memory = model.memory();
                memory.held + memory.instances
            })
            .sum();
        listed + self.admitting.bytes(group)
    }

    /// Makes room within model `name`'s share for `needed` more bytes,
    /// evicting the group's own idle models where the server may, and
    /// charges them to the group. The charge must live until the model is
    /// listed; `None` when the model's group has no memory share.
    /// Called under the admission lock.
    pub(super) async fn admit_share(
        &self,
        name: &str,
        needed: u64,
    ) -> Result<Option<Charge>, LoadError> {
        let Some(share) = self.share_of(name) else {
            return Ok(None);
        };
        let Some(limit) = share.limit else {
            return Ok(None);
        };
        loop {
            let used = self.group_use(&share.group);
            if used.saturating_add(needed) <= limit {
                return Ok(Some(self.admitting.meter(&share.group).charge(needed)));
            }
            let refused = |advice, retry| LoadError::NoMemory {
                model: name.to_string(),
                needed: budget::mib(needed),
                used: format!("{} of {:?}'s", budget::mib(used), share.group),
                limit: budget::mib(limit),
                advice,
                retry,
            };
            if needed > limit {
                return Err(refused(
                    "the model is larger than the whole share: raise its memory in the tenants file",
                    false,
                ));
            }
            if !self.config.evict {
                return Err(refused("unload one of the group's models first", false));
            }
            if self.evict_one(name, Some(&share.group)).await.is_none() {
                return Err(refused(
                    "every other model of the group has requests in flight; retry shortly",
                    true,
                ));
            }
        }
    }

    /// Evicts idle models of each group over its share, least recently
    /// used first, until the group fits (bursts can take it over).
    pub(super) async fn enforce_shares(&self) -> usize {
        if self.config.shares.is_none() || !self.config.evict {
            return 0;
        }
        // One pass over the models finds the groups over their shares; only
        // those are measured again while their models are evicted.
        let mut groups: std::collections::HashMap<Arc<str>, (u64, u64)> = Default::default();
        for model in self.list() {
            if let Some(share) = self.share_of(&model.name)
                && let Some(limit) = share.limit
            {
                let memory = model.memory();
                let (used, _) = groups.entry(share.group).or_insert((0, limit));
                *used += memory.held + memory.instances;
            }
        }
        let over: Vec<(Arc<str>, u64)> = groups
            .into_iter()
            .filter(|(_, (used, limit))| used > limit)
            .map(|(group, (_, limit))| (group, limit))
            .collect();
        let mut evicted = 0;
        for (group, limit) in over {
            while self.group_use(&group) > limit {
                if self.evict_one("", Some(&group)).await.is_none() {
                    break;
                }
                evicted += 1;
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_metered_while_its_loads_are_admitted_and_forgotten_after() {
        let admitting = Admitting::default();
        let held: Arc<str> = Arc::from("held");
        let charge = admitting.meter(&held).charge(100);
        for k in 0..1_000 {
            let group: Arc<str> = Arc::from(format!("group-{k}"));
            let passing = admitting.meter(&group).charge(7);
            assert_eq!(admitting.bytes(&group), 7);
            drop(passing);
            assert_eq!(admitting.bytes(&group), 0);
        }
        // The group with a load still admitted is kept, and counts it.
        assert_eq!(admitting.bytes("held"), 100);
        let meters = admitting.0.lock().unwrap_or_else(|p| p.into_inner()).len();
        assert!(meters <= 2, "{meters} meters kept");
        drop(charge);
        assert_eq!(admitting.bytes("held"), 0);
    }
}
