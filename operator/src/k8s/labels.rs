//! One shared copy of each distinct label set in use, for the structures that keep every
//! Device's labels (the Device cache, the disruption-budget index). Fleets label by site, line
//! or model, so a few sets serve many Devices, where a copy per Device costs ~600 bytes (a
//! B-tree node and its strings) in each structure.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
    sync::{Arc, LazyLock, Mutex, Weak},
};

/// A set of labels, as object metadata holds them.
pub type Labels = BTreeMap<String, String>;

/// Sets the pool holds at least before it looks for sets no one holds any more.
const FIRST_SWEEP: usize = 1024;

/// Label sets in use, each known by its hash. The pool holds them weakly: a set is freed when
/// the last structure holding it lets go, and the pool forgets it at its next sweep.
#[derive(Debug, Default)]
pub struct LabelPool {
    inner: Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    sets: HashMap<u64, Weak<Labels>>,
    hasher: RandomState,
    /// Sweep when the pool knows this many sets: twice the live ones after the last sweep,
    /// so sweeping costs O(1) per share over time.
    sweep_at: usize,
}

impl LabelPool {
    /// The shared set equal to `labels`. Two different sets with the same hash (rare) are
    /// each correct, only one of them is shared.
    pub fn share(&self, labels: &Labels) -> Arc<Labels> {
        let mut pool = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let hash = pool.hasher.hash_one(labels);
        if let Some(shared) = pool.sets.get(&hash).and_then(Weak::upgrade)
            && *shared == *labels
        {
            return shared;
        }
        if pool.sets.len() >= pool.sweep_at.max(FIRST_SWEEP) {
            pool.sets.retain(|_, set| set.strong_count() > 0);
            pool.sweep_at = pool.sets.len() * 2;
        }
        let shared = Arc::new(labels.clone());
        pool.sets.insert(hash, Arc::downgrade(&shared));
        shared
    }

    /// Label sets the pool knows, held or not (a forgotten one goes at the next sweep).
    pub fn known(&self) -> usize {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).sets.len()
    }
}

/// The process's pool of Device label sets: Devices are converted for the cache inside the
/// watch stream, where no state is passed, and the structures that keep labels share it.
pub fn shared(labels: &Labels) -> Arc<Labels> {
    static DEVICE_LABELS: LazyLock<LabelPool> = LazyLock::new(LabelPool::default);
    DEVICE_LABELS.share(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> Labels {
        Labels::from([("site".to_string(), s.to_string())])
    }

    #[test]
    fn equal_sets_are_one_copy_and_a_set_no_one_holds_is_freed() {
        let pool = LabelPool::default();
        let a1 = pool.share(&site("a"));
        let a2 = pool.share(&site("a"));
        let b = pool.share(&site("b"));
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b));
        assert_eq!(*b, site("b"));
        let weak_b = Arc::downgrade(&b);
        drop(b);
        assert_eq!(weak_b.strong_count(), 0, "the pool does not keep a set alive");
        let b = pool.share(&site("b"));
        assert_eq!(*b, site("b"), "shared again once someone needs it");
        assert!(Arc::ptr_eq(&pool.share(&Labels::new()), &pool.share(&Labels::new())));
    }

    #[test]
    fn the_pool_forgets_sets_no_one_holds_as_it_grows() {
        let pool = LabelPool::default();
        let held: Vec<Arc<Labels>> =
            (0..10).map(|i| pool.share(&site(&format!("held-{i}")))).collect();
        for i in 0..5 * FIRST_SWEEP {
            drop(pool.share(&site(&format!("passing-{i}"))));
        }
        assert!(pool.known() <= 2 * FIRST_SWEEP, "{} sets known, 10 held", pool.known());
        for (i, set) in held.iter().enumerate() {
            assert!(Arc::ptr_eq(set, &pool.share(&site(&format!("held-{i}")))), "held-{i}");
        }
    }
}
