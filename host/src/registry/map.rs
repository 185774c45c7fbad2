//! The registry's map of model keys to slots.
//!
//! Every request looks its model up by key, and with thousands of models a
//! walk down an ordered tree (a dozen string comparisons, each node elsewhere
//! in memory) cost more than the rest of the lookup: the exact lookups are
//! hashed. The versions of a name are found as a range of keys
//! (`name/1`, `name/2`, …), so the keys are also kept in order.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeBounds;

use super::Slot;

/// Model keys (`name`, or `name/N` for a version) to their slots.
#[derive(Default)]
pub(super) struct ModelMap {
    hashed: HashMap<String, Slot>,
    ordered: BTreeMap<String, Slot>,
}

impl ModelMap {
    /// The slot of `key`.
    pub(super) fn get(&self, key: &str) -> Option<&Slot> {
        self.hashed.get(key)
    }

    /// Whether `key` has a slot.
    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.hashed.contains_key(key)
    }

    /// The slot of `key`, made empty if it has none.
    pub(super) fn get_or_insert_default(&mut self, key: &str) -> Slot {
        if let Some(slot) = self.hashed.get(key) {
            return slot.clone();
        }
        let slot = Slot::default();
        self.insert(key.to_string(), slot.clone());
        slot
    }

    /// Sets the slot of `key`.
    pub(super) fn insert(&mut self, key: String, slot: Slot) {
        self.ordered.insert(key.clone(), slot.clone());
        self.hashed.insert(key, slot);
    }

    /// Takes `key`'s slot out.
    pub(super) fn remove(&mut self, key: &str) -> Option<Slot> {
        self.ordered.remove(key);
        self.hashed.remove(key)
    }

    /// Every slot, in no order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Slot> {
        self.hashed.values()
    }

    /// The keys and slots within `range`, in order.
    pub(super) fn range<'a>(
        &'a self,
        range: impl RangeBounds<str> + 'a,
    ) -> impl Iterator<Item = (&'a String, &'a Slot)> + 'a {
        self.ordered.range::<str, _>(range)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::*;

    fn keys_from(map: &ModelMap, from: &str) -> Vec<String> {
        map.range((Bound::Included(from), Bound::Unbounded))
            .map(|(key, _)| key.clone())
            .collect()
    }

    #[test]
    fn lookups_and_ranges_agree_after_every_change() {
        let mut map = ModelMap::default();
        let first = map.get_or_insert_default("m");
        map.insert("m/2".into(), Slot::default());
        map.insert("n".into(), Slot::default());
        // The same slot again, not a new one.
        assert!(std::sync::Arc::ptr_eq(
            &first,
            &map.get_or_insert_default("m")
        ));
        assert!(map.contains_key("m/2") && !map.contains_key("m/3"));
        assert_eq!(keys_from(&map, "m/"), ["m/2", "n"]);
        assert_eq!(map.values().count(), 3);
        assert!(map.remove("m/2").is_some());
        assert!(map.remove("m/2").is_none());
        assert!(map.get("m/2").is_none());
        assert_eq!(keys_from(&map, "m/"), ["n"]);
        assert_eq!(map.values().count(), 2);
    }
}
