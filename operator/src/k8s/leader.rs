//! Leader election with a coordination.k8s.io Lease: only the holder runs the controllers and
//! talks to devices.
//!
//! Fencing is measured on this process's monotonic clock, never on timestamps from another
//! machine. A leader counts its Lease as valid until `sent + duration`, where `sent` is when it
//! sent the last renewal the API server accepted; a standby takes the Lease over only after it
//! has seen the same record, unchanged, for `duration` — and it can only have seen that record
//! after it was written, so after `sent`. The leader stops acting (the process exits, and
//! Kubernetes restarts it as a standby) at `sent + duration - margin`, before any standby can
//! act, whatever the API server does meanwhile: errors, timeouts or a frozen process.
//!
//! The decisions are pure functions of what was observed and when ([`Observation`],
//! [`fence_deadline`]); [`acquire`] and the renewal task do the I/O.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::{
    config::OperatorConfig,
    error::{Error, Result},
};

/// Exit code of a leader that stopped acting because it could not keep its Lease.
pub const FENCED_EXIT_CODE: i32 = 3;

/// Timing of the election, from the Lease duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How long before the Lease could expire the leader stops acting.
    pub margin: Duration,
    /// How often a standby looks at the Lease, and how soon a failed renewal is retried.
    pub retry: Duration,
}

impl Timing {
    /// Timing for a Lease of `seconds` (at least 5): renew every third, stop a fifth early.
    pub fn for_duration(seconds: u64) -> Self {
        let duration = Duration::from_secs(seconds.max(5));
        Self {
            duration,
            renew_every: duration / 3,
            margin: (duration / 5).max(Duration::from_secs(1)),
            retry: Duration::from_secs(1).min(duration / 5),
        }
    }
}

/// When a leader whose last accepted renewal was sent at `sent` must stop acting.
pub fn fence_deadline(sent: Instant, timing: &Timing) -> Instant {
    sent + timing.duration - timing.margin
}

/// The parts of a Lease record that tell whether its holder is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Who holds it (`None` or empty: released).
    pub holder: Option<String>,
    /// The holder's last renewal, as the holder wrote it (compared, never trusted as time).
    pub renew_time: Option<String>,
    /// The object's resourceVersion (changes on every write).
    pub resource_version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What a standby has seen of the Lease, and since when (its own monotonic clock).
#[derive(Clone, Debug, Default)]
pub struct Observation {
    seen: Option<(Record, Instant)>,
}

impl Observation {
    /// Records the Lease as read at `now`; an unchanged record keeps its first sighting.
    pub fn observe(&mut self, record: Record, now: Instant) {
        match &self.seen {
            Some((seen, _)) if *seen == record => {}
            _ => self.seen = Some((record, now)),
        }
    }

    /// Whether `me` may take the Lease at `now`: nobody holds it, or this identity does (a
    /// restarted container of the same pod), or its record has not changed for `duration`.
    pub fn may_take(&self, me: &str, now: Instant, duration: Duration) -> bool {
        match &self.seen {
            None => true,
            Some((record, since)) => match record.holder.as_deref() {
                None => true,
                Some(holder) if holder == me => true,
                Some(_) => now.saturating_duration_since(*since) >= duration,
            },
        }
    }

    /// The holder seen last, if any.
    pub fn holder(&self) -> Option<&str> {
        self.seen.as_ref().and_then(|(r, _)| r.holder.as_deref())
    }
}

/// The held Lease: a task renews it, and stops the process if it cannot.
pub struct Leadership {
    api: Api<Lease>,
    name: String,
    identity: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Stops renewing and releases the Lease (on a graceful shutdown, after the last status
    /// write), so a standby takes over at once instead of after the Lease expires. Waits at
    /// most `timeout`.
    pub async fn release(self, timeout: Duration) {
        self.renewal.abort();
        let _ = self.renewal.await;
        info!(identity = %self.identity, "stopped acting: releasing the leader Lease");
        match tokio::time::timeout(timeout, release(&self.api, &self.name, &self.identity)).await {
            Ok(Ok(())) => info!("released the leader Lease"),
            Ok(Err(error)) => {
                warn!(%error, "cannot release the leader Lease; a standby takes over when it expires")
            }
            Err(_) => {
                warn!("releasing the leader Lease timed out; a standby takes over when it expires")
            }
        }
    }
}

fn now_micro() -> MicroTime {
    // The Lease's times are for people and other tools; fencing never reads them as time.
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// A Lease held by `identity` from now on, replacing `current` (or new).
fn claimed(current: Option<&Lease>, name: &str, identity: &str, timing: &Timing) -> Lease {
    let spec = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let takeover = spec.holder_identity.as_deref() != Some(identity);
    let transitions = spec.lease_transitions.unwrap_or(0);
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: Some(i32::try_from(timing.duration.as_secs()).unwrap_or(15)),
            acquire_time: if takeover { Some(now_micro()) } else { spec.acquire_time },
            renew_time: Some(now_micro()),
            lease_transitions: Some(if takeover && current.is_some() {
                transitions.saturating_add(1)
            } else {
                transitions
            }),
            ..Default::default()
        }),
    }
}

/// Waits until this process holds the Lease, then starts renewing it.
pub async fn acquire(
    client: Client,
    config: &OperatorConfig,
    identity: &str,
) -> Result<Leadership> {
    let api: Api<Lease> = Api::namespaced(client, &config.leader_election_namespace);
    let name = config.lease_name.clone();
    let timing = Timing::for_duration(config.lease_duration_seconds);
    info!(lease = %name, namespace = %config.leader_election_namespace, %identity, "waiting to become the leader");
    let mut observation = Observation::default();
    let sent = loop {
        let attempt = Instant::now();
        match tokio::time::timeout(
            timing.retry * 3,
            try_acquire(&api, &name, identity, &timing, &mut observation),
        )
        .await
        {
            Ok(Ok(true)) => break attempt,
            Ok(Ok(false)) => {}
            Ok(Err(error)) => warn!(%error, "cannot read or take the leader Lease; trying again"),
            Err(_) => {
                warn!("the API server did not answer about the leader Lease in time; trying again")
            }
        }
        tokio::time::sleep_until(attempt + timing.retry).await;
    };
    info!(%identity, "acting as the leader");
    let renewal = tokio::spawn(keep(api.clone(), name.clone(), identity.to_string(), timing, sent));
    Ok(Leadership { api, name, identity: identity.to_string(), renewal })
}

/// One look at the Lease; takes it if it is free. `Ok(true)` once held.
async fn try_acquire(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    timing: &Timing,
    observation: &mut Observation,
) -> Result<bool> {
    let current = api.get_opt(name).await?;
    let Some(current) = current else {
        return match api
            .create(&PostParams::default(), &claimed(None, name, identity, timing))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        };
    };
    observation.observe(Record::of(&current), Instant::now());
    if !observation.may_take(identity, Instant::now(), timing.duration) {
        return Ok(false);
    }
    if let Some(holder) = observation.holder().filter(|h| *h != identity) {
        info!(previous = %holder, "the leader Lease expired; taking it over");
    }
    match api
        .replace(name, &PostParams::default(), &claimed(Some(&current), name, identity, timing))
        .await
    {
        Ok(_) => Ok(true),
        // Someone else wrote it first: look again.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Renews the Lease until the task is aborted; stops the process when the Lease is lost or
/// cannot be renewed before [`fence_deadline`].
async fn keep(api: Api<Lease>, name: String, identity: String, timing: Timing, mut sent: Instant) {
    let mut next = sent + timing.renew_every;
    loop {
        let deadline = fence_deadline(sent, &timing);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => fence("the Lease could not be renewed in time"),
            () = tokio::time::sleep_until(next) => {}
        }
        let attempt = Instant::now();
        let left = deadline.saturating_duration_since(attempt);
        match tokio::time::timeout(left, renew(&api, &name, &identity, &timing)).await {
            Ok(Ok(Renewal::Renewed)) => {
                sent = attempt;
                next = attempt + timing.renew_every;
            }
            Ok(Ok(Renewal::Lost(holder))) => {
                fence(&format!("the Lease is held by {}", holder.as_deref().unwrap_or("nobody")))
            }
            Ok(Err(error)) => {
                warn!(%error, "cannot renew the leader Lease; retrying");
                next = attempt + timing.retry;
            }
            Err(_) => fence("the Lease could not be renewed in time"),
        }
    }
}

/// Stops acting at once: another replica may hold the Lease soon.
fn fence(why: &str) -> ! {
    error!(
        reason = why,
        "stopped acting: lost the leader Lease; exiting so that the next leader acts alone"
    );
    std::process::exit(FENCED_EXIT_CODE);
}

/// The outcome of a renewal.
enum Renewal {
    Renewed,
    Lost(Option<String>),
}

async fn renew(api: &Api<Lease>, name: &str, identity: &str, timing: &Timing) -> Result<Renewal> {
    let current = api.get(name).await?;
    let holder = Record::of(&current).holder;
    if holder.as_deref() != Some(identity) {
        return Ok(Renewal::Lost(holder));
    }
    match api
        .replace(name, &PostParams::default(), &claimed(Some(&current), name, identity, timing))
        .await
    {
        Ok(_) => Ok(Renewal::Renewed),
        // Written since the read: whoever wrote it decides on the next attempt.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Err(Error::LeaderElection("the Lease changed during renewal".into()))
        }
        Err(error) => Err(error.into()),
    }
}

async fn release(api: &Api<Lease>, name: &str, identity: &str) -> Result<()> {
    let mut current = api.get(name).await?;
    if Record::of(&current).holder.as_deref() != Some(identity) {
        return Ok(());
    }
    if let Some(spec) = current.spec.as_mut() {
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = Some(now_micro());
    }
    api.replace(name, &PostParams::default(), &current).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: Option<&str>, renew: &str) -> Record {
        Record {
            holder: holder.map(str::to_string),
            renew_time: Some(renew.to_string()),
            resource_version: Some(renew.to_string()),
        }
    }

    #[test]
    fn the_timing_follows_the_lease_duration() {
        let t = Timing::for_duration(15);
        assert_eq!(t.duration, Duration::from_secs(15));
        assert_eq!(t.renew_every, Duration::from_secs(5));
        assert_eq!(t.margin, Duration::from_secs(3));
        assert_eq!(t.retry, Duration::from_secs(1));
        assert_eq!(Timing::for_duration(1).duration, Duration::from_secs(5), "at least 5 s");
    }

    #[test]
    fn a_standby_takes_over_only_after_the_record_stood_still_for_the_duration() {
        let d = Duration::from_secs(15);
        let t0 = Instant::now();
        let mut seen = Observation::default();
        assert!(seen.may_take("b", t0, d), "no Lease yet");
        seen.observe(record(Some("a"), "r1"), t0);
        // (seconds after the first sighting, record, may take)
        let table = [
            (5, record(Some("a"), "r1"), false),
            (14, record(Some("a"), "r1"), false),
            // Renewed: the wait starts again.
            (14, record(Some("a"), "r2"), false),
            (28, record(Some("a"), "r2"), false),
            (29, record(Some("a"), "r2"), true),
        ];
        for (after, rec, wanted) in table {
            let now = t0 + Duration::from_secs(after);
            seen.observe(rec, now);
            assert_eq!(seen.may_take("b", now, d), wanted, "at +{after}s");
        }
        let mut released = Observation::default();
        released.observe(record(None, "r3"), t0);
        assert!(released.may_take("b", t0, d), "a released Lease is free at once");
        let mut mine = Observation::default();
        mine.observe(record(Some("b"), "r4"), t0);
        assert!(mine.may_take("b", t0, d), "a restarted container of the holder's pod");
    }

    #[test]
    fn the_leader_stops_before_any_standby_may_take_over() {
        // Whatever the API server does, the leader's deadline comes before the earliest
        // takeover: the standby first sees the renewed record no earlier than it was sent.
        for seconds in [5, 15, 60] {
            let timing = Timing::for_duration(seconds);
            let sent = Instant::now();
            for seen_after_ms in [0u64, 1, 500, 4000] {
                let first_seen = sent + Duration::from_millis(seen_after_ms);
                let mut standby = Observation::default();
                standby.observe(record(Some("a"), "r"), first_seen);
                let deadline = fence_deadline(sent, &timing);
                assert!(!standby.may_take("b", deadline, timing.duration));
                let earliest = first_seen + timing.duration;
                assert!(deadline + timing.margin <= earliest);
            }
        }
    }

    #[test]
    fn a_claim_counts_transitions_and_keeps_the_acquire_time_on_renewal() {
        let timing = Timing::for_duration(15);
        let first = claimed(None, "l", "a", &timing);
        let spec = first.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        let renewed = claimed(Some(&first), "l", "a", &timing).spec.unwrap();
        assert_eq!(renewed.acquire_time, spec.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = claimed(Some(&first), "l", "b", &timing).spec.unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
    }
}
