//! Statuses a controller computed but the cache may not show yet.

use std::{collections::HashMap, sync::Mutex};

use super::writer::StatusKey;

/// Statuses computed but maybe not yet visible in the cache, per object (small: an entry goes
/// once the cache shows it, or when its object is forgotten).
#[derive(Debug)]
pub struct LatestStatuses<S> {
    inner: Mutex<HashMap<StatusKey, S>>,
}

impl<S> Default for LatestStatuses<S> {
    fn default() -> Self {
        Self { inner: Mutex::new(HashMap::new()) }
    }
}

impl<S: Clone + PartialEq> LatestStatuses<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StatusKey, S>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest known status: ours if the cache has not caught up, else the cache's.
    pub fn newest(&self, key: &StatusKey, cached: Option<&S>) -> Option<S> {
        let mut map = self.lock();
        match map.get(key) {
            Some(ours) if Some(ours) == cached => {
                map.remove(key);
                cached.cloned()
            }
            Some(ours) => Some(ours.clone()),
            None => cached.cloned(),
        }
    }

    /// Records the status just offered for `key`.
    pub fn record(&self, key: StatusKey, status: S) {
        self.lock().insert(key, status);
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &StatusKey) {
        self.lock().remove(key);
    }

    /// Number of objects whose newest status the cache does not show yet.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache shows every status.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::status::StatusKind;

    fn key() -> StatusKey {
        StatusKey::new(StatusKind::of::<kubetwin_api::Device>(), "ns", "d1")
    }

    #[test]
    fn ours_wins_until_the_cache_shows_it_then_the_entry_goes() {
        let latest = LatestStatuses::<u32>::default();
        assert_eq!(latest.newest(&key(), Some(&1)), Some(1));
        latest.record(key(), 2);
        assert_eq!(latest.newest(&key(), Some(&1)), Some(2), "the cache is behind");
        assert_eq!(latest.newest(&key(), Some(&2)), Some(2), "the cache caught up");
        assert!(latest.is_empty());
        latest.record(key(), 3);
        latest.forget(&key());
        assert_eq!(latest.newest(&key(), None), None);
    }
}
