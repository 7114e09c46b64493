//! Table tests of the wave planner: no cluster, no clock.

use super::*;

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
}

fn member(name: &str, latest: Attempt) -> Member {
    let attempts = u32::from(!matches!(latest, Attempt::None | Attempt::Skipped));
    Member { name: name.into(), attempts, latest, readiness: Readiness::Ready, groups: Vec::new() }
}

fn fresh(n: usize) -> Vec<Member> {
    (0..n).map(|i| member(&format!("d{i:03}"), Attempt::None)).collect()
}

fn strategy() -> Strategy {
    Strategy {
        waves: Vec::new(),
        max_in_flight: Size::Count(10),
        max_per_minute: None,
        ramp: None,
        continue_after_wave: 0,
        abort: Vec::new(),
        retry: RetryPolicy { limit: 0, on: vec![FailureFilter::Any], backoff: Duration::ZERO },
        disruptive: true,
        suspended: false,
    }
}

fn observed() -> Observed {
    Observed { started_last_minute: 0, aborted: false, deleting: false }
}

fn failed(failure: Failure) -> Attempt {
    Attempt::Failed { failure, at: t(0) }
}

fn started(decision: &Decision) -> Vec<usize> {
    decision.starts.iter().map(|s| s.member).collect()
}

#[test]
fn sizes_round_percent_up_and_never_to_zero() {
    let table = [
        (Size::Count(7), 100, 7),
        (Size::Percent(1), 100, 1),
        (Size::Percent(1), 10, 1),
        (Size::Percent(10), 95, 10),
        (Size::Percent(100), 3, 3),
        (Size::Percent(50), 0, 0),
        (Size::Percent(0), 10, 0),
    ];
    for (size, total, expected) in table {
        assert_eq!(size.of(total), expected, "{size:?} of {total}");
    }
}

#[test]
fn waves_take_their_share_in_order_and_the_last_takes_the_rest() {
    let wave = |size| WaveSpec { size, pause_after: false };
    let table: [(Vec<WaveSpec>, u32, Vec<u32>); 4] = [
        (vec![], 100, vec![100]),
        (
            vec![wave(Size::Percent(1)), wave(Size::Percent(10)), wave(Size::Count(1))],
            1000,
            vec![10, 110, 1000],
        ),
        (vec![wave(Size::Count(5)), wave(Size::Count(5))], 3, vec![3, 3]),
        (vec![wave(Size::Count(2)), wave(Size::Count(2))], 10, vec![2, 10]),
    ];
    for (waves, total, bounds) in table {
        assert_eq!(wave_bounds(&waves, total), bounds, "{waves:?} over {total}");
    }
}

#[test]
fn never_more_in_flight_than_the_limit() {
    let mut members = fresh(30);
    for m in members.iter_mut().take(4) {
        m.latest = Attempt::InFlight;
        m.attempts = 1;
    }
    let decision = plan(&members, &strategy(), &Room::default(), observed(), t(0));
    assert_eq!(decision.stage, Stage::Running);
    assert_eq!(started(&decision), (4..10).collect::<Vec<_>>(), "6 free slots, in name order");
    assert_eq!(decision.counts.in_flight, 4);
    assert_eq!(decision.counts.pending, 26);

    let percent = Strategy { max_in_flight: Size::Percent(10), ..strategy() };
    let decision = plan(&fresh(30), &percent, &Room::default(), observed(), t(0));
    assert_eq!(decision.starts.len(), 3, "10 % of 30");
}

#[test]
fn the_rate_limit_counts_the_starts_of_the_last_minute() {
    let limited = Strategy { max_per_minute: Some(12), ..strategy() };
    let table = [(0, 10), (5, 7), (12, 0), (20, 0)];
    for (started_last_minute, starts) in table {
        let observed = Observed { started_last_minute, ..observed() };
        let decision = plan(&fresh(50), &limited, &Room::default(), observed, t(0));
        assert_eq!(
            decision.starts.len(),
            starts,
            "{started_last_minute} started in the last minute"
        );
        if starts < 10 {
            assert_eq!(
                decision.wake_after,
                Some(Duration::from_secs(5)),
                "one start per 5 s at 12/min"
            );
        }
    }
}

#[test]
fn the_exponential_rate_grows_with_successes_and_stays_under_the_cap() {
    let ramp = Ramp { base_per_minute: 2, factor: 2.0, succeeded_per_increase: 3 };
    let ramped = Strategy {
        max_in_flight: Size::Count(1000),
        ramp: Some(ramp),
        max_per_minute: Some(20),
        ..strategy()
    };
    // (succeeded so far, starts allowed with none in the last minute)
    for (succeeded, starts) in [(0, 2), (2, 2), (3, 4), (6, 8), (9, 16), (12, 20), (300, 20)] {
        let mut members = fresh(400);
        for m in members.iter_mut().take(succeeded) {
            m.latest = Attempt::Succeeded;
            m.attempts = 1;
        }
        let decision = plan(&members, &ramped, &Room::default(), observed(), t(0));
        assert_eq!(decision.starts.len(), starts, "after {succeeded} succeeded");
    }
}

#[test]
fn a_wave_that_pauses_holds_the_next_until_a_person_continues() {
    let waves = vec![
        WaveSpec { size: Size::Count(2), pause_after: true },
        WaveSpec { size: Size::Count(3), pause_after: false },
        WaveSpec { size: Size::Count(100), pause_after: false },
    ];
    let paused = Strategy { waves, ..strategy() };
    let mut members = fresh(10);
    // Canary running: only its two members start.
    let decision = plan(&members, &paused, &Room::default(), observed(), t(0));
    assert_eq!((decision.stage, started(&decision)), (Stage::Running, vec![0, 1]));
    assert_eq!(decision.current_wave, Some(1));
    // Canary done: paused at wave 1.
    for m in members.iter_mut().take(2) {
        m.latest = Attempt::Succeeded;
        m.attempts = 1;
    }
    let decision = plan(&members, &paused, &Room::default(), observed(), t(0));
    assert_eq!((decision.stage, decision.current_wave), (Stage::Paused, Some(1)));
    assert!(decision.starts.is_empty());
    // Continued: wave 2 starts, and only wave 2.
    let continued = Strategy { continue_after_wave: 1, ..paused.clone() };
    let decision = plan(&members, &continued, &Room::default(), observed(), t(0));
    assert_eq!((decision.stage, started(&decision)), (Stage::Running, vec![2, 3, 4]));
    assert_eq!(decision.current_wave, Some(2));
    assert_eq!(decision.waves.iter().map(|w| w.size).collect::<Vec<_>>(), [2, 3, 5]);
}

#[test]
fn abort_criteria_judge_finished_members_only_and_stop_every_start() {
    let criterion = AbortCriterion {
        filter: FailureFilter::Only(Failure::Rejected),
        min_executed: 10,
        threshold_percent: 30,
    };
    let aborting =
        Strategy { abort: vec![criterion], max_in_flight: Size::Count(100), ..strategy() };
    // (succeeded, rejected, failed, aborted?)
    let table =
        [(5, 4, 0, false), (7, 3, 0, true), (6, 2, 2, false), (20, 9, 0, true), (22, 9, 0, false)];
    for (ok, rejected, failed_, aborts) in table {
        let mut members = fresh(100);
        let outcomes = std::iter::repeat_n(Attempt::Succeeded, ok)
            .chain(std::iter::repeat_n(failed(Failure::Rejected), rejected))
            .chain(std::iter::repeat_n(failed(Failure::Failed), failed_));
        for (m, outcome) in members.iter_mut().zip(outcomes) {
            m.latest = outcome;
            m.attempts = 1;
        }
        let decision = plan(&members, &aborting, &Room::default(), observed(), t(0));
        assert_eq!(
            decision.stage == Stage::Aborted,
            aborts,
            "{ok} ok, {rejected} rejected, {failed_} failed"
        );
        if aborts {
            assert!(decision.starts.is_empty(), "nothing more starts once aborted");
        }
    }
    // Aborting is final even if the counts later look better.
    let decision = plan(
        &fresh(5),
        &strategy(),
        &Room::default(),
        Observed { aborted: true, ..observed() },
        t(0),
    );
    assert_eq!((decision.stage, decision.starts.len()), (Stage::Aborted, 0));
}

#[test]
fn failed_members_are_retried_after_the_backoff_up_to_the_limit() {
    let retrying = Strategy {
        retry: RetryPolicy {
            limit: 2,
            on: vec![FailureFilter::Only(Failure::Failed)],
            backoff: Duration::from_secs(10),
        },
        ..strategy()
    };
    let mut members = fresh(4);
    members[0].latest = failed(Failure::Failed); // first failure: retry due at 10 s
    members[0].attempts = 1;
    members[1].latest = failed(Failure::Failed); // third attempt failed: limit reached
    members[1].attempts = 3;
    members[2].latest = failed(Failure::Rejected); // not retried on Rejected
    members[2].attempts = 1;
    members[3].latest = Attempt::Succeeded;
    members[3].attempts = 2;

    let early = plan(&members, &retrying, &Room::default(), observed(), t(5));
    assert!(early.starts.is_empty(), "backoff not over: {:?}", early.starts);
    assert_eq!(early.wake_after, Some(Duration::from_secs(5)));
    assert_eq!((early.counts.pending, early.counts.failed, early.counts.rejected), (1, 1, 1));
    assert_eq!(early.counts.retried, 3, "2 retries of d001 and 1 of d003");

    let due = plan(&members, &retrying, &Room::default(), observed(), t(10));
    assert_eq!(due.starts, vec![Start { member: 0, attempt: 1 }]);
    assert_eq!(due.stage, Stage::Running);
}

#[test]
fn the_outcome_is_succeeded_only_without_final_failures_and_skips_are_not_failures() {
    let mut members = fresh(3);
    members[0].latest = Attempt::Succeeded;
    members[1].latest = Attempt::Skipped;
    members[2].latest = Attempt::Succeeded;
    let decision = plan(&members, &strategy(), &Room::default(), observed(), t(0));
    assert_eq!((decision.stage, decision.counts.skipped), (Stage::Succeeded, 1));
    members[2].latest = failed(Failure::TimedOut);
    let decision = plan(&members, &strategy(), &Room::default(), observed(), t(0));
    assert_eq!((decision.stage, decision.counts.timed_out), (Stage::Failed, 1));
    let empty = plan(&[], &strategy(), &Room::default(), observed(), t(0));
    assert_eq!(empty.stage, Stage::Succeeded, "no member: nothing to do");
}

#[test]
fn budgets_hold_back_online_members_of_a_full_group_and_let_others_go() {
    // Four lines, one disruption each; members d000..d019 on line i % 4.
    let mut members = fresh(20);
    for (i, m) in members.iter_mut().enumerate() {
        m.groups = vec![i % 4];
    }
    let room = Room { allowed: vec![1, 1, 0, 1] };
    let wide = Strategy { max_in_flight: Size::Count(20), ..strategy() };
    let narrow = Strategy { max_in_flight: Size::Count(3), ..strategy() };
    let decision = plan(&members, &narrow, &room, observed(), t(0));
    assert_eq!(started(&decision), vec![0, 1, 3], "one per line with room; line 2 has none");
    assert_eq!(decision.budget_blocked, 17);
    // With slots to spare, the held-back members start after the others: their requests wait
    // for room with a bound, so the job never waits on a budget forever.
    let decision = plan(&members, &wide, &room, observed(), t(0));
    let order = started(&decision);
    assert_eq!(order[..3], [0, 1, 3]);
    assert_eq!(order[3..6], [2, 4, 5]);
    assert_eq!(order.len(), 20);
    // An offline member is unavailable already: it takes no room and starts (its request waits).
    members[2].readiness = Readiness::Offline;
    let decision = plan(&members, &narrow, &room, observed(), t(0));
    assert_eq!(started(&decision), vec![0, 1, 2]);
    // A non-disruptive action ignores budgets.
    let gentle = Strategy { disruptive: false, ..wide };
    assert_eq!(plan(&members, &gentle, &room, observed(), t(0)).starts.len(), 20);
}

#[test]
fn a_suspended_rollout_starts_nothing_and_previews_what_the_run_does() {
    let waves = vec![WaveSpec { size: Size::Percent(10), pause_after: true }];
    let mut members = fresh(20);
    members[3].readiness = Readiness::Offline;
    members[4].readiness = Readiness::NotSupporting;
    for (i, m) in members.iter_mut().enumerate() {
        m.groups = vec![usize::from(i >= 10)];
    }
    let room = Room { allowed: vec![5, 0] };
    let suspended = Strategy { waves: waves.clone(), suspended: true, ..strategy() };
    let decision = plan(&members, &suspended, &room, observed(), t(0));
    assert_eq!(decision.stage, Stage::Suspended);
    assert!(decision.starts.is_empty());
    let preview = &decision.preview;
    assert_eq!(
        (preview.targeted, preview.offline, preview.not_supporting, preview.budget_blocked),
        (20, 1, 1, 10)
    );
    assert_eq!((preview.wave_sizes.clone(), preview.max_in_flight), (vec![20], 10));
    assert_eq!(preview.sample, vec![0, 1, 2, 3, 4]);
    // Unsuspended, the same members start in the same order the preview showed.
    let running = Strategy { suspended: false, ..suspended };
    let decision = plan(&members, &running, &room, observed(), t(0));
    assert_eq!(started(&decision)[..5], preview.sample[..]);
}

#[test]
fn a_rollout_being_deleted_starts_nothing_more() {
    let decision = plan(
        &fresh(5),
        &strategy(),
        &Room::default(),
        Observed { deleting: true, ..observed() },
        t(0),
    );
    assert!(decision.starts.is_empty());
}
