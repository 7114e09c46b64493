//! The status-write budget (pure, no I/O): changes are merged per object, a token bucket caps
//! writes per second, a per-object minimum interval bounds churn, urgent changes go first and
//! the oldest change goes next. Memory is one entry per object with a pending change.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    hash::Hash,
    time::{Duration, Instant},
};

/// How long after a write the cache may still show the object's older status.
pub const CACHE_LAG: Duration = Duration::from_secs(5);

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let rate = rate.max(0.001);
        let burst = burst.max(1.0);
        Self { rate, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available.
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// How urgent a pending change is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Reported properties and other routine changes.
    Routine,
    /// Terminal request phases, phase transitions, connection changes: written first and not
    /// held back by the per-object minimum interval.
    Urgent,
}

impl Priority {
    /// The priority's name, as in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routine => "routine",
            Self::Urgent => "urgent",
        }
    }
}

#[derive(Debug)]
struct Pending<V> {
    value: V,
    priority: Priority,
    since: Instant,
    seq: u64,
}

/// A change taken from the queue for writing.
#[derive(Debug, PartialEq)]
pub struct Flush<K, V> {
    /// Which object.
    pub key: K,
    /// The latest value to write.
    pub value: V,
    /// How long the oldest merged change waited.
    pub staleness: Duration,
    /// The priority it was queued with.
    pub priority: Priority,
}

/// What happened to an offered change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Equal to what was written last: nothing to do.
    Unchanged,
    /// Queued as a new pending change.
    Queued,
    /// Merged into a change that was already pending.
    Merged,
}

/// Delay before retrying something that failed `failures` times in a row: 1 s doubling to
/// 5 minutes, so a persistent failure costs little and a transient one is retried soon.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1).saturating_mul(1 << failures.min(9)).min(Duration::from_secs(300))
}

/// Pending status changes, at most one per object.
#[derive(Debug)]
pub struct WriteQueue<K, V> {
    pending: HashMap<K, Pending<V>>,
    // (urgent first, oldest first, arrival order, key)
    order: BTreeSet<(std::cmp::Reverse<Priority>, Instant, u64, K)>,
    /// Changes whose last write failed, held back until their retry is due (oldest due first);
    /// they are not in `order`, so they never stand in front of others.
    held: BTreeSet<(Instant, u64, K)>,
    held_keys: HashMap<K, (Instant, u64)>,
    /// Held changes that wait for a deferral ([`WriteQueue::offer_deferred`]), not for a
    /// retry: an urgent change of the same object releases them at once.
    deferred: HashSet<K>,
    /// Failed writes in a row, per object.
    failures: HashMap<K, u32>,
    written: HashMap<K, (u64, Instant)>,
    in_flight: HashMap<K, u64>,
    min_interval: Duration,
    next_seq: u64,
    writes_since_prune: usize,
    /// When [`WriteQueue::settle`] may next walk the tables (it walks all of them: at most
    /// once per [`CACHE_LAG`]).
    settle_due: Option<Instant>,
}

impl<K: Clone + Eq + Hash + Ord, V: Hash> WriteQueue<K, V> {
    /// An empty queue with a per-object minimum interval between writes.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            pending: HashMap::new(),
            order: BTreeSet::new(),
            held: BTreeSet::new(),
            held_keys: HashMap::new(),
            deferred: HashSet::new(),
            failures: HashMap::new(),
            written: HashMap::new(),
            in_flight: HashMap::new(),
            min_interval,
            next_seq: 0,
            writes_since_prune: 0,
            settle_due: None,
        }
    }

    /// Offers the latest wanted value for `key`. `current` is a fingerprint of what the API
    /// server holds, if known (for example after a restart), so an unchanged value costs
    /// nothing.
    pub fn offer(
        &mut self,
        key: K,
        value: V,
        priority: Priority,
        current: Option<u64>,
        now: Instant,
    ) -> Offer {
        let fingerprint = fingerprint(&value);
        let back_to_written = fingerprint == self.written_fingerprint(&key, current, now)
            && !self.in_flight.contains_key(&key);
        if let Some(pending) = self.pending.get_mut(&key) {
            if self.deferred.contains(&key) && priority == Priority::Urgent {
                // What the deferral waited for came: one write carries both.
                pending.value = value;
                pending.priority = priority;
                let since = pending.since;
                let seq = pending.seq;
                self.release(&key, since, seq, priority);
                return Offer::Merged;
            }
            if self.held_keys.contains_key(&key) {
                // Held back after a failure (or deferred): the newer value waits for the same
                // retry.
                pending.value = value;
                pending.priority = pending.priority.max(priority);
                return Offer::Merged;
            }
            if back_to_written {
                // Back to what is already written: drop the pending change.
                let old =
                    (std::cmp::Reverse(pending.priority), pending.since, pending.seq, key.clone());
                self.order.remove(&old);
                self.pending.remove(&key);
                return Offer::Unchanged;
            }
            if priority > pending.priority {
                let old =
                    (std::cmp::Reverse(pending.priority), pending.since, pending.seq, key.clone());
                self.order.remove(&old);
                pending.priority = priority;
                self.order.insert((
                    std::cmp::Reverse(priority),
                    pending.since,
                    pending.seq,
                    key.clone(),
                ));
            }
            pending.value = value;
            return Offer::Merged;
        }
        let in_flight = self.in_flight.get(&key).copied();
        if in_flight.is_none_or(|f| f == fingerprint)
            && self.written_fingerprint(&key, current, now) == fingerprint
        {
            return Offer::Unchanged;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert((std::cmp::Reverse(priority), now, seq, key.clone()));
        self.pending.insert(key, Pending { value, priority, since: now, seq });
        Offer::Queued
    }

    /// Like [`WriteQueue::offer`], but a new change waits `until` before it may be written,
    /// unless an urgent change of the same object comes first, which then replaces it: one
    /// write instead of two when the next change usually follows soon (a request's `Sent`
    /// before the device's answer). A change already pending or in flight is offered as usual.
    pub fn offer_deferred(
        &mut self,
        key: K,
        value: V,
        priority: Priority,
        current: Option<u64>,
        now: Instant,
        until: Instant,
    ) -> Offer {
        let fresh = !self.pending.contains_key(&key) && !self.in_flight.contains_key(&key);
        let offer = self.offer(key.clone(), value, priority, current, now);
        if fresh
            && offer == Offer::Queued
            && let Some(pending) = self.pending.get(&key)
        {
            // Queued as usual: move it from the order to the held changes until `until`.
            let (since, seq) = (pending.since, pending.seq);
            self.order.remove(&(std::cmp::Reverse(pending.priority), since, seq, key.clone()));
            self.held.insert((until, seq, key.clone()));
            self.held_keys.insert(key.clone(), (until, seq));
            self.deferred.insert(key);
        }
        offer
    }

    /// Moves a held (deferred) change of `key` into the order now.
    fn release(&mut self, key: &K, since: Instant, seq: u64, priority: Priority) {
        if let Some((due, held_seq)) = self.held_keys.remove(key) {
            self.held.remove(&(due, held_seq, key.clone()));
        }
        self.deferred.remove(key);
        self.order.insert((std::cmp::Reverse(priority), since, seq, key.clone()));
    }

    /// What the API server holds for `key`, as far as the queue can tell: what it wrote last,
    /// unless the cache (`current`) shows something else long enough after that write for the
    /// cache to have caught up — then something else overwrote the object, and the cache is
    /// right.
    fn written_fingerprint(&self, key: &K, current: Option<u64>, now: Instant) -> u64 {
        match (self.written.get(key), current) {
            (Some((_, at)), Some(current)) if now.saturating_duration_since(*at) >= CACHE_LAG => {
                current
            }
            (Some((written, _)), _) => *written,
            (None, current) => current.unwrap_or(u64::MAX),
        }
    }

    /// The next change that may be written at `now`: urgent ones first, then the oldest whose
    /// object was not written within the minimum interval. Objects with a write in flight
    /// are skipped. Looks at no more than `scan` entries.
    pub fn take(&mut self, now: Instant, scan: usize) -> Option<Flush<K, V>> {
        self.release_held(now);
        let chosen = self
            .order
            .iter()
            .take(scan)
            .find(|(priority, _, _, key)| {
                !self.in_flight.contains_key(key)
                    && (priority.0 == Priority::Urgent
                        || self.written.get(key).is_none_or(|(_, at)| {
                            now.saturating_duration_since(*at) >= self.min_interval
                        }))
            })
            .cloned()?;
        self.order.remove(&chosen);
        let key = chosen.3;
        let pending = self.pending.remove(&key)?;
        self.in_flight.insert(key.clone(), fingerprint(&pending.value));
        Some(Flush {
            key,
            value: pending.value,
            staleness: now.saturating_duration_since(pending.since),
            priority: pending.priority,
        })
    }

    /// Moves held changes whose retry is due back into the order.
    fn release_held(&mut self, now: Instant) {
        while let Some((due, seq, key)) = self.held.first().cloned() {
            if due > now {
                break;
            }
            self.held.remove(&(due, seq, key.clone()));
            self.held_keys.remove(&key);
            self.deferred.remove(&key);
            if let Some(pending) = self.pending.get(&key) {
                self.order.insert((
                    std::cmp::Reverse(pending.priority),
                    pending.since,
                    pending.seq,
                    key,
                ));
            }
        }
    }

    /// Records that the write of `key` succeeded.
    pub fn written(&mut self, key: &K, now: Instant) {
        self.failures.remove(key);
        if let Some(fingerprint) = self.in_flight.remove(key) {
            self.written.insert(key.clone(), (fingerprint, now));
        }
        // Now and then forget old writes while writing, so a busy queue stays flat too.
        self.writes_since_prune += 1;
        if self.written.len() > 1024 && self.writes_since_prune >= self.written.len() / 2 {
            self.forget_old_writes(now);
        }
    }

    /// Forgets writes older than the minimum interval (and the cache's lag): they no longer
    /// hold anything back, and the cache holds what they wrote.
    fn forget_old_writes(&mut self, now: Instant) {
        self.writes_since_prune = 0;
        let horizon = self.min_interval.max(CACHE_LAG);
        let pending = &self.pending;
        let in_flight = &self.in_flight;
        self.written.retain(|key, (_, at)| {
            now.saturating_duration_since(*at) < horizon
                || pending.contains_key(key)
                || in_flight.contains_key(key)
        });
    }

    /// Called when nothing may be written now: forgets old writes and gives back the room
    /// the tables grew to at their peak. Without it an operator that went idle right after
    /// writing every object's status would keep one record per object (and a table sized
    /// for its busiest moment) for as long as it stays idle.
    pub fn settle(&mut self, now: Instant) {
        if self.settle_due.is_some_and(|due| now < due) {
            return;
        }
        self.settle_due = Some(now + CACHE_LAG);
        if !self.written.is_empty() {
            self.forget_old_writes(now);
        }
        shrink_when_sparse(&mut self.written);
        shrink_when_sparse(&mut self.pending);
        shrink_when_sparse(&mut self.in_flight);
        shrink_when_sparse(&mut self.held_keys);
        shrink_when_sparse(&mut self.failures);
        if let Some(room) = room_to_keep(self.deferred.len(), self.deferred.capacity()) {
            self.deferred.shrink_to(room);
        }
    }

    /// Rooms the tables hold, for tests of [`WriteQueue::settle`].
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.written.capacity() + self.pending.capacity() + self.in_flight.capacity()
    }

    /// Records that the write of `flush` failed: it is queued again (unless a newer value
    /// arrived meanwhile, which takes its place), held back for the next retry delay ([`backoff`]
    /// with the failures in a row, or `hint` — for example the API server's Retry-After — if
    /// longer), keeping its age and priority. Returns the delay.
    pub fn failed(&mut self, flush: Flush<K, V>, now: Instant, hint: Duration) -> Duration {
        self.in_flight.remove(&flush.key);
        let failures = self.failures.entry(flush.key.clone()).or_insert(0);
        let delay = backoff(*failures).max(hint);
        *failures = failures.saturating_add(1);
        let due = now + delay;
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.pending.get(&flush.key) {
            Some(newer) => {
                let in_order =
                    (std::cmp::Reverse(newer.priority), newer.since, newer.seq, flush.key.clone());
                self.order.remove(&in_order);
            }
            None => {
                let since = now.checked_sub(flush.staleness).unwrap_or(now);
                self.pending.insert(
                    flush.key.clone(),
                    Pending { value: flush.value, priority: flush.priority, since, seq },
                );
            }
        }
        self.held.insert((due, seq, flush.key.clone()));
        self.held_keys.insert(flush.key, (due, seq));
        delay
    }

    /// From now on, writes pending changes without waiting for the per-object minimum interval
    /// (at shutdown: what is not written before the process ends is lost).
    pub fn drain(&mut self) {
        self.min_interval = Duration::ZERO;
        let deferred: Vec<K> = self.deferred.iter().cloned().collect();
        for key in deferred {
            if let Some(p) = self.pending.get(&key) {
                let (since, seq, priority) = (p.since, p.seq, p.priority);
                self.release(&key, since, seq, priority);
            }
        }
    }

    /// Forgets an object that no longer exists.
    pub fn forget(&mut self, key: &K) {
        if let Some(p) = self.pending.remove(key) {
            self.order.remove(&(std::cmp::Reverse(p.priority), p.since, p.seq, key.clone()));
        }
        if let Some((due, seq)) = self.held_keys.remove(key) {
            self.held.remove(&(due, seq, key.clone()));
        }
        self.deferred.remove(key);
        self.failures.remove(key);
        self.written.remove(key);
    }

    /// The pending (not yet written) value of `key`.
    pub fn pending(&self, key: &K) -> Option<&V> {
        self.pending.get(key).map(|p| &p.value)
    }

    /// Number of objects with a pending change.
    pub fn depth(&self) -> usize {
        self.pending.len()
    }

    /// When the earliest pending change that waits only for its minimum interval may go.
    pub fn next_due(&self, now: Instant, scan: usize) -> Option<Instant> {
        let ordered = self
            .order
            .iter()
            .take(scan)
            .filter(|(_, _, _, key)| !self.in_flight.contains_key(key))
            .map(|(_, _, _, key)| {
                self.written.get(key).map_or(now, |(_, at)| *at + self.min_interval)
            })
            .min();
        let retry = self.held.first().map(|(due, _, _)| *due);
        ordered.into_iter().chain(retry).min()
    }
}

/// The room to shrink a table of `len` entries and `capacity` slots to, when it uses less
/// than a quarter of it (a small table keeps its room: shrinking it would only make the next
/// burst grow it again).
fn room_to_keep(len: usize, capacity: usize) -> Option<usize> {
    const KEEP: usize = 1024;
    (capacity > KEEP && len < capacity / 4).then(|| len.max(KEEP))
}

/// Gives back a table's room when it is sparse ([`room_to_keep`]).
fn shrink_when_sparse<K: Eq + Hash, V>(table: &mut HashMap<K, V>) {
    if let Some(room) = room_to_keep(table.len(), table.capacity()) {
        table.shrink_to(room);
    }
}

/// A stable fingerprint of a value.
pub fn fingerprint<V: Hash>(value: &V) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCAN: usize = 1000;

    fn queue() -> (WriteQueue<u32, String>, Instant) {
        (WriteQueue::new(Duration::from_secs(1)), Instant::now())
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn changes_to_one_object_merge_and_the_latest_value_is_written() {
        let (mut q, t0) = queue();
        assert_eq!(q.offer(1, "a".into(), Priority::Routine, None, t0), Offer::Queued);
        assert_eq!(q.offer(1, "b".into(), Priority::Routine, None, at(t0, 10)), Offer::Merged);
        assert_eq!(q.offer(1, "c".into(), Priority::Routine, None, at(t0, 20)), Offer::Merged);
        assert_eq!(q.depth(), 1);
        let flush = q.take(at(t0, 30), SCAN).expect("due");
        assert_eq!(flush.value, "c");
        assert_eq!(flush.staleness, Duration::from_millis(30), "age of the oldest merged change");
        q.written(&1, at(t0, 31));
        assert_eq!(q.offer(1, "c".into(), Priority::Routine, None, at(t0, 40)), Offer::Unchanged);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn an_unchanged_value_costs_nothing_even_after_a_restart() {
        let (mut q, t0) = queue();
        let current = fingerprint(&"same".to_string());
        assert_eq!(
            q.offer(7, "same".into(), Priority::Urgent, Some(current), t0),
            Offer::Unchanged
        );
        assert!(q.take(t0, SCAN).is_none());
    }

    #[test]
    fn a_deferred_change_waits_and_an_urgent_one_replaces_it_in_one_write() {
        // (the urgent change comes at ms, written value, written at or after ms)
        let cases = [(Some(300), "accepted", 300), (None, "sent", 1000)];
        for (urgent_at, written, from) in cases {
            let (mut q, t0) = queue();
            let until = at(t0, 1000);
            let offer = q.offer_deferred(1, "sent".into(), Priority::Urgent, None, t0, until);
            assert_eq!(offer, Offer::Queued);
            assert!(q.take(at(t0, 200), SCAN).is_none(), "held until the deferral ends");
            assert_eq!(q.next_due(at(t0, 200), SCAN), Some(until), "the writer wakes for it");
            if let Some(ms) = urgent_at {
                let offer = q.offer(1, "accepted".into(), Priority::Urgent, None, at(t0, ms));
                assert_eq!(offer, Offer::Merged);
            }
            let flush = q.take(at(t0, from), SCAN).expect("due");
            assert_eq!(flush.value, written, "{urgent_at:?}");
            q.written(&1, at(t0, from + 1));
            assert!(q.take(at(t0, 5000), SCAN).is_none(), "one write, {urgent_at:?}");
        }
    }

    #[test]
    fn a_routine_change_does_not_end_a_deferral_and_a_drain_does() {
        let (mut q, t0) = queue();
        q.offer_deferred(1, "sent".into(), Priority::Urgent, None, t0, at(t0, 1000));
        assert_eq!(
            q.offer(1, "sent 10%".into(), Priority::Routine, None, at(t0, 10)),
            Offer::Merged
        );
        assert!(q.take(at(t0, 20), SCAN).is_none());
        q.drain();
        assert_eq!(q.take(at(t0, 30), SCAN).expect("drained").value, "sent 10%");
    }

    #[test]
    fn a_deferral_does_not_hold_back_an_object_already_pending() {
        let (mut q, t0) = queue();
        q.offer(1, "a".into(), Priority::Routine, None, t0);
        let offer = q.offer_deferred(1, "b".into(), Priority::Urgent, None, t0, at(t0, 1000));
        assert_eq!(offer, Offer::Merged);
        assert_eq!(q.take(at(t0, 1), SCAN).expect("due").value, "b");
    }

    #[test]
    fn urgent_changes_go_first_then_the_oldest() {
        let (mut q, t0) = queue();
        q.offer(1, "old".into(), Priority::Routine, None, t0);
        q.offer(2, "newer".into(), Priority::Routine, None, at(t0, 5));
        q.offer(3, "terminal".into(), Priority::Urgent, None, at(t0, 10));
        let order: Vec<u32> =
            (0..3).filter_map(|_| q.take(at(t0, 20), SCAN)).map(|f| f.key).collect();
        assert_eq!(order, [3, 1, 2]);
    }

    #[test]
    fn the_minimum_interval_holds_back_routine_changes_but_not_urgent_ones() {
        let (mut q, t0) = queue();
        q.offer(1, "a".into(), Priority::Routine, None, t0);
        q.take(t0, SCAN).expect("first write");
        q.written(&1, t0);
        q.offer(1, "b".into(), Priority::Routine, None, at(t0, 100));
        assert!(q.take(at(t0, 500), SCAN).is_none(), "written 500 ms ago");
        assert_eq!(q.next_due(at(t0, 500), SCAN), Some(at(t0, 1000)));
        q.offer(1, "c".into(), Priority::Urgent, None, at(t0, 600));
        let flush = q.take(at(t0, 600), SCAN).expect("urgent bypasses the interval");
        assert_eq!(flush.value, "c");
    }

    #[test]
    fn one_write_per_object_is_in_flight_and_a_failure_is_retried_first() {
        let (mut q, t0) = queue();
        q.offer(1, "a".into(), Priority::Routine, None, t0);
        q.offer(2, "x".into(), Priority::Routine, None, at(t0, 50));
        let flush = q.take(at(t0, 100), SCAN).expect("a");
        q.offer(1, "b".into(), Priority::Routine, None, at(t0, 110));
        let next = q.take(at(t0, 120), SCAN).expect("x, since 1 is in flight");
        assert_eq!(next.key, 2);
        let delay = q.failed(flush, at(t0, 130), Duration::ZERO);
        assert_eq!(delay, Duration::from_secs(1), "the first retry waits a second");
        q.written(&2, at(t0, 131));
        assert!(q.take(at(t0, 140), SCAN).is_none(), "held back until the retry is due");
        let retry = q.take(at(t0, 1130), SCAN).expect("1 again");
        assert_eq!(
            (retry.key, retry.value.as_str()),
            (1, "b"),
            "the newer value replaced the failed one"
        );
    }

    #[test]
    fn failing_writes_back_off_and_never_block_the_others() {
        let (mut q, t0) = queue();
        for key in 0..2000u32 {
            q.offer(key, "bad".into(), Priority::Urgent, None, t0);
        }
        // Every one of them fails (say, too large for the API server).
        for _ in 0..2000 {
            let flush = q.take(t0, SCAN).expect("due");
            q.failed(flush, t0, Duration::ZERO);
        }
        q.offer(9999, "good".into(), Priority::Routine, None, at(t0, 10));
        let next = q.take(at(t0, 20), SCAN).expect("the healthy object is not starved");
        assert_eq!(next.key, 9999);
        assert_eq!(
            q.next_due(at(t0, 20), SCAN),
            Some(at(t0, 1000)),
            "the failed ones retry in 1 s"
        );
        // The delays grow per object, and the API server's hint wins when longer.
        let flush = q.take(at(t0, 1000), SCAN).expect("a retry");
        let key = flush.key;
        assert_eq!(q.failed(flush, at(t0, 1000), Duration::ZERO), Duration::from_secs(2));
        let mut retries = Vec::new();
        let mut now = at(t0, 3000);
        while retries.len() < 3 {
            match q.take(now, usize::MAX) {
                Some(f) if f.key == key => retries.push(q.failed(f, now, Duration::from_secs(60))),
                Some(f) => q.written(&f.key, now),
                None => now += Duration::from_secs(1),
            }
        }
        assert_eq!(retries, [Duration::from_secs(60); 3], "Retry-After of 60 s is honoured");
        q.written(&key, now);
        assert_eq!(backoff(20), Duration::from_secs(300), "capped at five minutes");
    }

    #[test]
    fn no_final_value_is_lost_under_sustained_overload() {
        // 1,000 objects change every 10 ms for 10 s; the bucket allows 50 writes/s.
        let t0 = Instant::now();
        let mut q: WriteQueue<u32, u64> = WriteQueue::new(Duration::from_secs(1));
        let mut bucket = TokenBucket::new(50.0, 50.0, t0);
        let mut stored: HashMap<u32, u64> = HashMap::new();
        let mut writes = 0;
        for tick in 0..1000u64 {
            let now = t0 + Duration::from_millis(tick * 10);
            for object in 0..1000u32 {
                q.offer(object, tick, Priority::Routine, None, now);
            }
            while bucket.try_take(now) {
                let Some(flush) = q.take(now, SCAN) else {
                    break;
                };
                stored.insert(flush.key, flush.value);
                q.written(&flush.key, now);
                writes += 1;
            }
            assert!(q.depth() <= 1000, "memory stays one entry per object");
        }
        assert!(writes <= 50 * 10 + 50, "the budget held: {writes} writes");
        // Load stops: the queue drains and every object ends at its final value.
        let mut now = t0 + Duration::from_secs(10);
        while q.depth() > 0 {
            now += Duration::from_millis(20);
            while bucket.try_take(now) {
                let Some(flush) = q.take(now, SCAN) else {
                    break;
                };
                stored.insert(flush.key, flush.value);
                q.written(&flush.key, now);
            }
        }
        assert_eq!(stored.len(), 1000);
        assert!(stored.values().all(|v| *v == 999), "every final value was written");
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// The controller offers `value` for `key`; the cache shows the store's value.
        Offer(u32, u64),
        /// The writer writes what may go now.
        Write,
        /// Something else overwrites `key` with `value`.
        Overwrite(u32, u64),
        /// Time passes.
        Wait(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0u32..4, 0u64..6).prop_map(|(k, v)| Op::Offer(k, v)),
            Just(Op::Write),
            (0u32..4, 100u64..103).prop_map(|(k, v)| Op::Overwrite(k, v)),
            (0u64..8000).prop_map(Op::Wait),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 512,
            rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b74_7769_6e00_0002),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Whatever order offers, writes and foreign overwrites come in, once the controller
        /// offers its last values again (as its resync does) the store ends at them.
        #[test]
        fn the_queue_converges_to_the_last_offer_even_after_foreign_overwrites(
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut q: WriteQueue<u32, u64> = WriteQueue::new(Duration::from_secs(1));
            let mut store: HashMap<u32, u64> = HashMap::new();
            let mut last: HashMap<u32, u64> = HashMap::new();
            let write_all = |q: &mut WriteQueue<u32, u64>, store: &mut HashMap<u32, u64>, now| {
                while let Some(flush) = q.take(now, SCAN) {
                    store.insert(flush.key, flush.value);
                    q.written(&flush.key, now);
                }
            };
            for op in ops {
                match op {
                    Op::Offer(k, v) => {
                        last.insert(k, v);
                        let current = store.get(&k).map(fingerprint);
                        q.offer(k, v, Priority::Urgent, current, now);
                    }
                    Op::Write => write_all(&mut q, &mut store, now),
                    Op::Overwrite(k, v) => {
                        store.insert(k, v);
                    }
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                }
            }
            // The resync: the cache has caught up, the controller offers its values again.
            now += CACHE_LAG;
            for (k, v) in &last {
                let current = store.get(k).map(fingerprint);
                q.offer(*k, *v, Priority::Urgent, current, now);
            }
            write_all(&mut q, &mut store, now);
            for (k, v) in &last {
                proptest::prop_assert_eq!(store.get(k), Some(v), "key {}", k);
            }
        }
    }

    #[test]
    fn an_idle_queue_forgets_old_writes_and_gives_back_its_room() {
        let (mut q, t0) = queue();
        // Every one of 10,000 objects written once, all at t0, as after a restart's first pass.
        for key in 0..10_000u32 {
            q.offer(key, "v".into(), Priority::Routine, None, t0);
        }
        while let Some(flush) = q.take(t0, usize::MAX) {
            q.written(&flush.key, t0);
        }
        assert_eq!(q.depth(), 0);
        let peak = q.capacity();
        // Written just now: still remembered, so an equal offer costs nothing.
        q.settle(at(t0, 100));
        assert_eq!(q.offer(7, "v".into(), Priority::Routine, None, at(t0, 100)), Offer::Unchanged);
        // Before the cache's lag has passed, the records stay (the cache may not show them).
        q.settle(at(t0, 4_900));
        assert_eq!(q.written.len(), 10_000, "too soon to forget");
        // Once the cache holds what was written, the records go and so does their room.
        let later = t0 + CACHE_LAG + Duration::from_secs(1);
        q.offer(3, "w".into(), Priority::Routine, None, later);
        q.settle(later);
        assert_eq!(q.written.len(), 1, "only the object with a pending change is remembered");
        assert!(q.capacity() * 4 < peak, "room given back: {} of {peak}", q.capacity());
        // What the queue decides is unchanged: the pending change is written, and an old
        // value offered again is judged by the cache (`current`) as before.
        let flush = q.take(later, SCAN).expect("the pending change");
        assert_eq!((flush.key, flush.value.as_str()), (3, "w"));
        q.written(&3, later);
        let cached = Some(fingerprint(&"v".to_string()));
        assert_eq!(q.offer(9, "v".into(), Priority::Routine, cached, later), Offer::Unchanged);
        assert_eq!(q.offer(9, "x".into(), Priority::Routine, cached, later), Offer::Queued);
    }

    #[test]
    fn the_token_bucket_caps_the_rate_and_allows_a_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5.0, t0);
        assert_eq!((0..10).filter(|_| bucket.try_take(t0)).count(), 5, "burst");
        assert!(bucket.wait_time(t0) > Duration::ZERO);
        let later = t0 + Duration::from_millis(1000);
        assert_eq!((0..20).filter(|_| bucket.try_take(later)).count(), 5, "refill capped at burst");
    }
}
