//! The wave planner: which members of a rollout start now, as a pure function of the
//! membership snapshot, each member's latest attempt and readiness, the strategy (waves,
//! in-flight and rate limits, abort criteria, retries), the room disruption budgets leave,
//! and the time. The same function previews a suspended rollout and runs it, so the preview
//! never disagrees with what happens.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// A count, or a percent of some total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// This many.
    Count(u32),
    /// This percent of the total, rounded up (so never 0 when neither is 0).
    Percent(u32),
}

impl Size {
    /// A size from the API's int-or-percent ("10%"); `None` when it is neither.
    pub fn parse(
        value: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    ) -> Option<Self> {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        match value {
            IntOrString::Int(n) => u32::try_from(*n).ok().map(Self::Count),
            IntOrString::String(s) => s.strip_suffix('%')?.parse().ok().map(Self::Percent),
        }
    }

    /// The size as a count out of `total`.
    pub fn of(self, total: u32) -> u32 {
        match self {
            Self::Count(n) => n,
            Self::Percent(p) => {
                let scaled = u64::from(total) * u64::from(p);
                let rounded = u32::try_from(scaled.div_ceil(100)).unwrap_or(u32::MAX);
                if total > 0 && p > 0 { rounded.max(1) } else { rounded }
            }
        }
    }
}

/// How a finished attempt ended without success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The device reported a failure.
    Failed,
    /// Refused by the device or before sending.
    Rejected,
    /// A deadline passed.
    TimedOut,
}

/// Which failures a criterion or a retry counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureFilter {
    /// Only this one.
    Only(Failure),
    /// Every failure.
    Any,
}

impl FailureFilter {
    fn counts(self, failure: Failure) -> bool {
        match self {
            Self::Only(only) => only == failure,
            Self::Any => true,
        }
    }
}

/// Where a member's latest attempt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// No attempt yet.
    None,
    /// Created, not finished.
    InFlight,
    /// Finished with success.
    Succeeded,
    /// Finished without success, at `at`.
    Failed {
        /// How.
        failure: Failure,
        /// When it finished.
        at: Timestamp,
    },
    /// Nothing was sent: the device was offline at its turn and the rollout skips such.
    Skipped,
}

/// Whether a member could start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Online, supports the action.
    Ready,
    /// Offline (or never seen).
    Offline,
    /// Lists its methods and this action is not among them.
    NotSupporting,
}

/// One member of the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Name (members are ordered by name; waves take them in that order).
    pub name: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The latest attempt.
    pub latest: Attempt,
    /// Whether it could start now.
    pub readiness: Readiness,
    /// Budget groups the member belongs to (indexes into [`Room`]); empty: no budget.
    pub groups: Vec<usize>,
}

/// Disruptions each budget group allows now. Starting a disruptive attempt on an online
/// member takes one from each of its groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Per group.
    pub allowed: Vec<u32>,
}

impl Room {
    fn admits(&self, groups: &[usize]) -> bool {
        groups.iter().all(|g| self.allowed.get(*g).is_some_and(|n| *n > 0))
    }

    fn take(&mut self, groups: &[usize]) {
        for g in groups {
            if let Some(n) = self.allowed.get_mut(*g) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// One wave of the strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaveSpec {
    /// Its share of the members.
    pub size: Size,
    /// Pause after it until a person continues.
    pub pause_after: bool,
}

/// A start rate that grows as members succeed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ramp {
    /// Starts per minute at first.
    pub base_per_minute: u32,
    /// Factor applied at each increase.
    pub factor: f64,
    /// Successes between increases.
    pub succeeded_per_increase: u32,
}

/// Abort when at least `min_executed` members finished and at least `threshold_percent` of
/// them failed as `filter` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortCriterion {
    /// Failures counted.
    pub filter: FailureFilter,
    /// Finished members needed before judging.
    pub min_executed: u32,
    /// Percent of finished members.
    pub threshold_percent: u32,
}

/// Retries of failed members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries per member.
    pub limit: u32,
    /// Failures retried.
    pub on: Vec<FailureFilter>,
    /// Wait after a failure before the retry.
    pub backoff: Duration,
}

impl RetryPolicy {
    fn retries(&self, failure: Failure) -> bool {
        self.on.iter().any(|f| f.counts(failure))
    }
}

/// The strategy of a rollout, resolved from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Strategy {
    /// Waves in order (empty: one wave of everything).
    pub waves: Vec<WaveSpec>,
    /// Most members in flight.
    pub max_in_flight: Size,
    /// Most starts per minute.
    pub max_per_minute: Option<u32>,
    /// Growing start rate.
    pub ramp: Option<Ramp>,
    /// Paused waves a person continued (waves count from 1).
    pub continue_after_wave: u32,
    /// Abort criteria.
    pub abort: Vec<AbortCriterion>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Whether the action disrupts the device (budgets apply).
    pub disruptive: bool,
    /// Nothing starts.
    pub suspended: bool,
}

/// What is known about the rollout besides its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Attempts started within the last minute (for the rate limit).
    pub started_last_minute: u32,
    /// The rollout was already aborted (aborting is final).
    pub aborted: bool,
    /// The rollout is being deleted: nothing more starts.
    pub deleting: bool,
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Suspended: nothing starts.
    Suspended,
    /// Starting members or waiting for them.
    Running,
    /// A wave with pause_after finished; waiting for a person.
    Paused,
    /// Every member finished, none failed.
    Succeeded,
    /// Every member finished, some failed.
    Failed,
    /// An abort criterion held.
    Aborted,
}

/// Member counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Members.
    pub targeted: u32,
    /// Not started, or waiting for a retry.
    pub pending: u32,
    /// Latest attempt in flight.
    pub in_flight: u32,
    /// Succeeded.
    pub succeeded: u32,
    /// Finished failed (device failure), no retry left.
    pub failed: u32,
    /// Finished timed out, no retry left.
    pub timed_out: u32,
    /// Finished rejected, no retry left.
    pub rejected: u32,
    /// Skipped.
    pub skipped: u32,
    /// Retries started.
    pub retried: u32,
}

impl Counts {
    /// Members finished for good, whatever the outcome.
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed + self.timed_out + self.rejected + self.skipped
    }

    fn final_failures(&self, filter: FailureFilter) -> u32 {
        [
            (Failure::Failed, self.failed),
            (Failure::Rejected, self.rejected),
            (Failure::TimedOut, self.timed_out),
        ]
        .into_iter()
        .filter(|(f, _)| filter.counts(*f))
        .map(|(_, n)| n)
        .sum()
    }
}

/// Progress of one wave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaveProgress {
    /// Members in the wave.
    pub size: u32,
    /// Started (at least one attempt).
    pub started: u32,
    /// Finished for good.
    pub finished: u32,
    /// Succeeded.
    pub succeeded: u32,
}

/// A member to start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// Index into the members.
    pub member: usize,
    /// The attempt number (0 first).
    pub attempt: u32,
}

/// The preview of what the rollout does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    /// Members.
    pub targeted: u32,
    /// Members offline now.
    pub offline: u32,
    /// Members not supporting the action.
    pub not_supporting: u32,
    /// Online members whose budgets have no room now.
    pub budget_blocked: u32,
    /// Size of each wave.
    pub wave_sizes: Vec<u32>,
    /// In-flight limit as a count.
    pub max_in_flight: u32,
    /// Indexes of the first members, in start order.
    pub sample: Vec<usize>,
}

/// What the planner decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Where the rollout stands.
    pub stage: Stage,
    /// Members to start now, in order.
    pub starts: Vec<Start>,
    /// Counts, before the starts.
    pub counts: Counts,
    /// Per wave.
    pub waves: Vec<WaveProgress>,
    /// The wave running or paused now (from 1; `None` when finished).
    pub current_wave: Option<u32>,
    /// The preview (what the rollout does, counted now).
    pub preview: Preview,
    /// Members held back by a disruption budget now.
    pub budget_blocked: u32,
    /// Look again after this long at the latest (`None`: nothing to wait for).
    pub wake_after: Option<Duration>,
}

/// Where a member stands for good, or not yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// No attempt yet.
    Fresh,
    /// In flight.
    Busy,
    /// Failed, and a retry is due at this instant.
    RetryAt(Timestamp),
    /// Finished for good.
    Done,
}

fn standing(member: &Member, retry: &RetryPolicy, aborted: bool) -> Standing {
    match member.latest {
        Attempt::None => Standing::Fresh,
        Attempt::InFlight => Standing::Busy,
        Attempt::Succeeded | Attempt::Skipped => Standing::Done,
        Attempt::Failed { failure, at } => {
            let retries_used = member.attempts.saturating_sub(1);
            if !aborted && retry.retries(failure) && retries_used < retry.limit {
                let due = at.checked_add(retry.backoff).unwrap_or(at);
                Standing::RetryAt(due)
            } else {
                Standing::Done
            }
        }
    }
}

/// Cumulative end of each wave over `total` members (the last wave takes the rest).
pub fn wave_bounds(waves: &[WaveSpec], total: u32) -> Vec<u32> {
    if waves.is_empty() {
        return vec![total];
    }
    let mut bounds = Vec::with_capacity(waves.len());
    let mut end = 0u32;
    for (index, wave) in waves.iter().enumerate() {
        end = if index + 1 == waves.len() {
            total
        } else {
            end.saturating_add(wave.size.of(total)).min(total)
        };
        bounds.push(end);
    }
    bounds
}

/// The current start rate per minute (`None`: unlimited).
fn rate_per_minute(strategy: &Strategy, succeeded: u32) -> Option<u32> {
    let ramped = strategy.ramp.map(|ramp| {
        let steps = succeeded / ramp.succeeded_per_increase.max(1);
        // Capped well before f64 loses integers; the cap below is what matters.
        let exponent = i32::try_from(steps.min(64)).unwrap_or(64);
        let rate = f64::from(ramp.base_per_minute) * ramp.factor.powi(exponent);
        if rate >= f64::from(u32::MAX) { u32::MAX } else { rate.floor().max(1.0) as u32 }
    });
    match (ramped, strategy.max_per_minute) {
        (Some(r), Some(m)) => Some(r.min(m)),
        (Some(r), None) => Some(r),
        (None, m) => m,
    }
}

/// Decides what the rollout does now.
pub fn plan(
    members: &[Member],
    strategy: &Strategy,
    room: &Room,
    observed: Observed,
    now: Timestamp,
) -> Decision {
    let total = u32::try_from(members.len()).unwrap_or(u32::MAX);
    let bounds = wave_bounds(&strategy.waves, total);
    let standings: Vec<Standing> =
        members.iter().map(|m| standing(m, &strategy.retry, observed.aborted)).collect();

    let mut counts = Counts { targeted: total, ..Counts::default() };
    for (member, standing) in members.iter().zip(&standings) {
        counts.retried += member.attempts.saturating_sub(1);
        match (standing, member.latest) {
            (Standing::Fresh | Standing::RetryAt(_), _) => counts.pending += 1,
            (Standing::Busy, _) => counts.in_flight += 1,
            (Standing::Done, Attempt::Succeeded) => counts.succeeded += 1,
            (Standing::Done, Attempt::Skipped) => counts.skipped += 1,
            (Standing::Done, Attempt::Failed { failure, .. }) => match failure {
                Failure::Failed => counts.failed += 1,
                Failure::Rejected => counts.rejected += 1,
                Failure::TimedOut => counts.timed_out += 1,
            },
            (Standing::Done, Attempt::None | Attempt::InFlight) => {}
        }
    }

    let mut waves = Vec::with_capacity(bounds.len());
    let mut start = 0usize;
    for end in &bounds {
        let end = usize::try_from(*end).unwrap_or(usize::MAX).min(members.len());
        let mut progress = WaveProgress {
            size: u32::try_from(end.saturating_sub(start)).unwrap_or(u32::MAX),
            ..WaveProgress::default()
        };
        for index in start..end {
            if members[index].attempts > 0 || members[index].latest == Attempt::Skipped {
                progress.started += 1;
            }
            if standings[index] == Standing::Done {
                progress.finished += 1;
                if members[index].latest == Attempt::Succeeded {
                    progress.succeeded += 1;
                }
            }
        }
        waves.push(progress);
        start = end;
    }

    let executed = counts.finished() - counts.skipped;
    let abort_now = observed.aborted
        || strategy.abort.iter().any(|c| {
            executed >= c.min_executed
                && executed > 0
                && u64::from(counts.final_failures(c.filter)) * 100
                    >= u64::from(c.threshold_percent) * u64::from(executed)
        });

    let max_in_flight = strategy.max_in_flight.of(total).max(1);
    let preview = preview(members, &bounds, max_in_flight, room, strategy.disruptive);
    // The current wave: the first one not finished for good.
    let current = waves.iter().position(|w| w.finished < w.size);
    let all_done = current.is_none();
    let mut decision = Decision {
        stage: Stage::Running,
        starts: Vec::new(),
        counts,
        waves,
        current_wave: current.map(|w| u32::try_from(w + 1).unwrap_or(u32::MAX)),
        budget_blocked: 0,
        preview,
        wake_after: None,
    };

    if abort_now {
        decision.stage = Stage::Aborted;
        return decision;
    }
    if all_done {
        let failures =
            decision.counts.failed + decision.counts.timed_out + decision.counts.rejected;
        decision.stage = if failures == 0 { Stage::Succeeded } else { Stage::Failed };
        decision.current_wave = None;
        return decision;
    }
    if strategy.suspended {
        decision.stage = Stage::Suspended;
        return decision;
    }
    if observed.deleting {
        return decision;
    }
    let Some(wave) = current else { return decision };
    // A finished wave that pauses holds the next one until a person continues it.
    if wave > 0 {
        let previous = wave; // waves count from 1: the previous wave's number is `wave`.
        let paused = strategy.waves.get(wave - 1).is_some_and(|w| w.pause_after)
            && strategy.continue_after_wave < u32::try_from(previous).unwrap_or(u32::MAX);
        if paused {
            decision.stage = Stage::Paused;
            decision.current_wave = Some(u32::try_from(previous).unwrap_or(u32::MAX));
            return decision;
        }
    }

    let mut slots = max_in_flight.saturating_sub(decision.counts.in_flight);
    if let Some(rate) = rate_per_minute(strategy, decision.counts.succeeded) {
        let left = rate.saturating_sub(observed.started_last_minute);
        if left < slots {
            slots = left;
            // A start frees up as the minute's window slides.
            decision.wake_after = Some(Duration::from_secs(60).div_f64(f64::from(rate.max(1))));
        }
    }
    let wave_start = if wave == 0 { 0 } else { bounds[wave - 1] };
    let wave_start = usize::try_from(wave_start).unwrap_or(usize::MAX);
    let wave_end = usize::try_from(bounds[wave]).unwrap_or(usize::MAX).min(members.len());
    let mut room = room.clone();
    let mut earliest_retry: Option<Timestamp> = None;
    let mut blocked = Vec::new();
    for index in wave_start..wave_end {
        let member = &members[index];
        let attempt = match standings[index] {
            Standing::Fresh => 0,
            Standing::RetryAt(due) if due <= now => member.attempts,
            Standing::RetryAt(due) => {
                earliest_retry = Some(earliest_retry.map_or(due, |e| e.min(due)));
                continue;
            }
            Standing::Busy | Standing::Done => continue,
        };
        // Offline members start too (their request waits for them, or they are skipped);
        // they are unavailable already, so they take no budget room.
        let takes_room = strategy.disruptive && member.readiness == Readiness::Ready;
        if takes_room && !room.admits(&member.groups) {
            decision.budget_blocked += 1;
            blocked.push(Start { member: index, attempt });
            continue;
        }
        if slots == 0 {
            continue;
        }
        if takes_room {
            room.take(&member.groups);
        }
        slots -= 1;
        decision.starts.push(Start { member: index, attempt });
    }
    // Members a budget holds back go after every member that can go now. Slots left over
    // mean nothing else in the wave can start: they start too, and their requests wait for
    // room (Pending, reason DisruptionBudgetExhausted, at most the operator's budget wait),
    // so a job never waits on a budget without a bound.
    let leftover = usize::try_from(slots).unwrap_or(usize::MAX);
    decision.starts.extend(blocked.into_iter().take(leftover));
    if let Some(due) = earliest_retry {
        let wait = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO);
        decision.wake_after = Some(decision.wake_after.map_or(wait, |w| w.min(wait)));
    }
    decision
}

/// What the rollout does, counted now: the same wave bounds and order as the run.
fn preview(
    members: &[Member],
    bounds: &[u32],
    max_in_flight: u32,
    room: &Room,
    disruptive: bool,
) -> Preview {
    let mut preview = Preview {
        targeted: u32::try_from(members.len()).unwrap_or(u32::MAX),
        wave_sizes: bounds
            .iter()
            .scan(0u32, |previous, end| {
                let size = end - *previous;
                *previous = *end;
                Some(size)
            })
            .collect(),
        max_in_flight,
        sample: (0..members.len().min(kubetwin_api::job::PLAN_SAMPLE_SIZE)).collect(),
        ..Preview::default()
    };
    for member in members {
        match member.readiness {
            Readiness::Offline => preview.offline += 1,
            Readiness::NotSupporting => preview.not_supporting += 1,
            Readiness::Ready => {
                if disruptive && !room.admits(&member.groups) {
                    preview.budget_blocked += 1;
                }
            }
        }
    }
    preview
}

#[cfg(test)]
mod tests;
