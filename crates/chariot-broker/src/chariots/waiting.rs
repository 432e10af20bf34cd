//! The dependency queue's index: which waiting records each missing fact would free.
//!
//! A waiting record is filed under every fact it still lacks (a tag of its seed, or its
//! origin's previous TOId). When a fact arrives, only the records filed under it are
//! touched, and a record whose last missing fact arrived becomes a candidate to release.
//! So the work per record is proportional to its own dependencies, never to how many
//! other records wait (a full queue of 100,000 costs an append no more than an empty one).

use std::collections::{BTreeSet, HashMap, HashSet};

/// A fact a waiting record needs before it may be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Need {
    /// A record of chain `seed` carrying a tag whose hash is `hash`.
    Tag { seed: u64, hash: u64 },
    /// Every record of datacenter `dc` below TOId `toid` (so `toid` is the one it expects
    /// next).
    Toid { dc: u32, toid: u64 },
}

/// Waiting records by missing fact, and missing facts by waiting record.
#[derive(Debug, Default)]
pub(super) struct WaitIndex {
    by_need: HashMap<Need, HashSet<u64>>,
    needs: HashMap<u64, Vec<Need>>,
    /// Records whose last missing fact arrived (or that needed nothing when filed).
    ready: BTreeSet<u64>,
    /// Records filed, changed or removed since the last [`WaitIndex::take_touched`].
    touched: HashSet<u64>,
}

impl WaitIndex {
    /// Files record `id` under what it `needs` (duplicates are ignored). A record that
    /// needs nothing is ready at once.
    pub(super) fn insert(&mut self, id: u64, mut needs: Vec<Need>) {
        self.remove(id);
        needs.sort_unstable();
        needs.dedup();
        for n in &needs {
            self.by_need.entry(*n).or_default().insert(id);
        }
        if needs.is_empty() {
            self.ready.insert(id);
        }
        self.needs.insert(id, needs);
        self.touched.insert(id);
    }

    /// Forgets record `id` (released or rejected).
    pub(super) fn remove(&mut self, id: u64) {
        self.ready.remove(&id);
        let Some(needs) = self.needs.remove(&id) else {
            return;
        };
        for n in needs {
            if let Some(ids) = self.by_need.get_mut(&n) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_need.remove(&n);
                }
            }
        }
        self.touched.insert(id);
    }

    /// Fact `need` now holds: the records filed under it lack one fact less.
    pub(super) fn arrived(&mut self, need: Need) {
        let Some(ids) = self.by_need.remove(&need) else {
            return;
        };
        for id in ids {
            if let Some(needs) = self.needs.get_mut(&id) {
                needs.retain(|n| *n != need);
                if needs.is_empty() {
                    self.ready.insert(id);
                }
                self.touched.insert(id);
            }
        }
    }

    /// The records that lack nothing any more, oldest first; they stay filed until
    /// removed.
    pub(super) fn take_ready(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.ready)
    }

    /// What record `id` still lacks.
    pub(super) fn missing(&self, id: u64) -> &[Need] {
        self.needs.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The missing tag hashes of record `id`, as listed to clients.
    pub(super) fn missing_tags(&self, id: u64) -> Vec<u64> {
        self.missing(id)
            .iter()
            .filter_map(|n| match n {
                Need::Tag { hash, .. } => Some(*hash),
                Need::Toid { .. } => None,
            })
            .collect()
    }

    /// Records filed, changed or removed since the last call.
    pub(super) fn take_touched(&mut self) -> HashSet<u64> {
        std::mem::take(&mut self.touched)
    }

    /// How many records are filed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.needs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(seed: u64, hash: u64) -> Need {
        Need::Tag { seed, hash }
    }

    #[test]
    fn a_record_is_ready_once_its_last_need_arrives() {
        let mut w = WaitIndex::default();
        w.insert(1, vec![tag(7, 1), tag(7, 2), tag(7, 1)]);
        assert_eq!(w.missing(1), &[tag(7, 1), tag(7, 2)]);
        w.arrived(tag(7, 1));
        assert!(w.take_ready().is_empty());
        assert_eq!(w.missing_tags(1), vec![2]);
        // The same hash under another seed is another fact.
        w.arrived(tag(8, 2));
        assert!(w.take_ready().is_empty());
        w.arrived(tag(7, 2));
        assert_eq!(w.take_ready().into_iter().collect::<Vec<_>>(), vec![1]);
        assert!(w.missing(1).is_empty());
        w.remove(1);
        assert_eq!(w.len(), 0);
        assert!(w.by_need.is_empty());
    }

    #[test]
    fn one_fact_frees_every_record_filed_under_it_in_id_order() {
        let mut w = WaitIndex::default();
        let toid = Need::Toid { dc: 2, toid: 5 };
        w.insert(9, vec![toid]);
        w.insert(3, vec![toid, tag(1, 1)]);
        w.insert(4, vec![toid]);
        w.arrived(toid);
        assert_eq!(w.take_ready().into_iter().collect::<Vec<_>>(), vec![4, 9]);
        assert_eq!(w.missing(3), &[tag(1, 1)]);
    }

    #[test]
    fn a_record_needing_nothing_is_ready_when_filed_and_removal_cleans_up() {
        let mut w = WaitIndex::default();
        w.insert(1, Vec::new());
        w.insert(2, vec![tag(1, 9)]);
        assert_eq!(w.take_ready().into_iter().collect::<Vec<_>>(), vec![1]);
        w.remove(2);
        // A fact for a removed record frees nothing.
        w.arrived(tag(1, 9));
        assert!(w.take_ready().is_empty());
        let touched = w.take_touched();
        assert!(touched.contains(&1) && touched.contains(&2));
        assert!(w.take_touched().is_empty());
    }

    #[test]
    fn an_unrelated_fact_touches_no_waiting_record() {
        let mut w = WaitIndex::default();
        for id in 0..100_000 {
            w.insert(id, vec![tag(1, 42)]);
        }
        w.take_touched();
        w.arrived(tag(1, 7));
        w.arrived(Need::Toid { dc: 3, toid: 1 });
        assert!(w.take_touched().is_empty());
        assert!(w.take_ready().is_empty());
        w.arrived(tag(1, 42));
        assert_eq!(w.take_ready().len(), 100_000);
    }
}
