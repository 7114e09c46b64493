//! Ordering rules: which reported messages, method responses and presence messages a
//! receiver accepts, so that duplicates, reordering and late Last Wills do no harm.

use std::cmp::Ordering;

use crate::cursor::{Cursor, PresenceCursor};
use crate::message::{MethodResponse, ResponseStatus};

/// What a receiver does with an incoming message, given the last one it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Admission {
    /// Newer than anything accepted: apply it.
    Accept,
    /// The same position (or terminal status) as the last accepted one: drop it silently.
    Duplicate,
    /// Older than the last accepted one: drop it.
    Stale,
    /// A boot counter further ahead than any device can be
    /// ([`MAX_BOOT_AHEAD_SECS`](crate::contract::MAX_BOOT_AHEAD_SECS)): drop it, or it would
    /// make every later message of the device look stale.
    Implausible,
    /// Applying it would make the reported properties larger than
    /// [`MAX_REPORTED_BYTES`](crate::contract::MAX_REPORTED_BYTES): drop it.
    TooLarge,
}

impl Admission {
    /// Whether the message is applied.
    pub fn is_accept(self) -> bool {
        self == Self::Accept
    }

    /// Short, stable label of why the message is dropped (`None` when accepted), for metrics.
    pub fn drop_reason(self) -> Option<&'static str> {
        match self {
            Self::Accept => None,
            Self::Duplicate => Some("duplicate"),
            Self::Stale => Some("stale"),
            Self::Implausible => Some("invalid"),
            Self::TooLarge => Some("reported-too-large"),
        }
    }
}

/// Whether `boot` can be a device's boot counter when the receiver's clock says `now_secs`
/// (Unix seconds): a count of boots, or the Unix time at boot, is never more than
/// [`MAX_BOOT_AHEAD_SECS`](crate::contract::MAX_BOOT_AHEAD_SECS) ahead of now.
pub fn plausible_boot(boot: u64, now_secs: u64) -> bool {
    boot <= now_secs.saturating_add(crate::contract::MAX_BOOT_AHEAD_SECS)
}

/// Decides on a reported message at `incoming` when `last` was the last one accepted: only a
/// strictly greater `(boot, seq)` is accepted.
pub fn admit(last: Option<Cursor>, incoming: Cursor) -> Admission {
    match last.map(|last| incoming.cmp(&last)) {
        None | Some(Ordering::Greater) => Admission::Accept,
        Some(Ordering::Equal) => Admission::Duplicate,
        Some(Ordering::Less) => Admission::Stale,
    }
}

/// Decides on a method response given the last one accepted for the same request (its cursor
/// and status): ordered by `(boot, seq)`, and nothing follows a terminal status.
pub fn admit_response(
    last: Option<(Cursor, ResponseStatus)>,
    incoming: &MethodResponse,
) -> Admission {
    match last {
        Some((_, status)) if status.is_terminal() => {
            if incoming.status == status {
                Admission::Duplicate
            } else {
                Admission::Stale
            }
        }
        Some((cursor, _)) => admit(Some(cursor), incoming.cursor()),
        None => Admission::Accept,
    }
}

/// Decides on a presence message: accepted unless its `(boot, conn)` is older than the current
/// one (an equal pair is accepted), so a late Last Will of an older connection is dropped.
pub fn admit_presence(current: Option<PresenceCursor>, incoming: PresenceCursor) -> Admission {
    match current {
        Some(current) if incoming < current => Admission::Stale,
        _ => Admission::Accept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Presence, PresenceState, ReportedMessage};

    fn c(boot: u64, seq: u64) -> Cursor {
        Cursor { boot, seq }
    }

    fn p(boot: u64, conn: u64) -> PresenceCursor {
        PresenceCursor { boot, conn }
    }

    #[test]
    fn a_boot_far_in_the_future_is_implausible() {
        let now = 1_800_000_000;
        assert!(plausible_boot(3, now), "a count of boots");
        assert!(plausible_boot(now, now), "the Unix time at boot");
        assert!(plausible_boot(now + 86_400, now), "a clock one day fast");
        assert!(!plausible_boot(now + 86_401, now));
        assert!(!plausible_boot(u64::MAX, now));
        assert_eq!(Admission::Implausible.drop_reason(), Some("invalid"));
        assert_eq!(Admission::TooLarge.drop_reason(), Some("reported-too-large"));
    }

    #[test]
    fn cursors_order_by_boot_then_seq() {
        assert!(c(1, 5) < c(1, 6));
        assert!(c(1, 999) < c(2, 0));
        assert!(c(2, 1) > c(1, 1));
        assert_eq!(c(3, 3).cmp(&c(3, 3)), Ordering::Equal);
        assert!(p(1, 9) < p(2, 1));
        assert!(p(2, 1) < p(2, 2));
    }

    #[test]
    fn reported_first_message_is_accepted() {
        assert_eq!(admit(None, c(0, 0)), Admission::Accept);
        assert_eq!(admit(None, c(7, 12)), Admission::Accept);
    }

    #[test]
    fn reported_duplicates_and_reordering_are_dropped() {
        let mut last = None;
        let mut applied = Vec::new();
        // Delivered: 1, 2, 2 (QoS 1 duplicate), 4, 3 (late), 5.
        for seq in [1, 2, 2, 4, 3, 5] {
            let decision = admit(last, c(7, seq));
            if decision.is_accept() {
                last = Some(c(7, seq));
                applied.push(seq);
            }
        }
        assert_eq!(applied, vec![1, 2, 4, 5]);
        assert_eq!(last, Some(c(7, 5)));
        assert_eq!(admit(Some(c(7, 2)), c(7, 2)), Admission::Duplicate);
        assert_eq!(admit(Some(c(7, 4)), c(7, 3)), Admission::Stale);
        assert_eq!(Admission::Duplicate.drop_reason(), Some("duplicate"));
        assert_eq!(Admission::Stale.drop_reason(), Some("stale"));
        assert_eq!(Admission::Accept.drop_reason(), None);
    }

    #[test]
    fn new_boot_restarts_seq() {
        let full = ReportedMessage::full(8, 1, serde_json::Map::new());
        assert_eq!(admit(Some(c(7, 500)), full.cursor()), Admission::Accept);
        // A message of the previous boot arriving late is stale, whatever its seq.
        assert_eq!(admit(Some(c(8, 1)), c(7, 501)), Admission::Stale);
        assert_eq!(admit(Some(c(8, 1)), c(8, 2)), Admission::Accept);
    }

    #[test]
    fn responses_follow_cursor_and_stop_at_terminal() {
        let id = "r1";
        let accepted = MethodResponse::new(id, ResponseStatus::Accepted, 7, 13);
        let progress = MethodResponse::new(id, ResponseStatus::InProgress, 7, 14);
        let succeeded = MethodResponse::new(id, ResponseStatus::Succeeded, 8, 2);
        let failed = MethodResponse::new(id, ResponseStatus::Failed, 8, 3);

        assert_eq!(admit_response(None, &accepted), Admission::Accept);
        let after_accepted = Some((accepted.cursor(), accepted.status));
        assert_eq!(admit_response(after_accepted, &accepted), Admission::Duplicate);
        assert_eq!(admit_response(after_accepted, &progress), Admission::Accept);
        assert_eq!(admit_response(after_accepted, &succeeded), Admission::Accept);

        // An Accepted that arrives after the final answer (reordering) is dropped.
        let after_success = Some((succeeded.cursor(), succeeded.status));
        assert_eq!(admit_response(after_success, &accepted), Admission::Stale);
        // The device answers a repeated request with its last status: a duplicate.
        let repeat = MethodResponse::new(id, ResponseStatus::Succeeded, 8, 9);
        assert_eq!(admit_response(after_success, &repeat), Admission::Duplicate);
        // A terminal status never changes, even with a newer cursor.
        assert_eq!(admit_response(after_success, &failed), Admission::Stale);
    }

    #[test]
    fn late_last_will_of_older_connection_is_dropped() {
        // Device connects (boot 7, conn 2), loses the network, reconnects as conn 3 before the
        // broker notices; the broker then publishes the Last Will of conn 2.
        let online = Presence::new(PresenceState::Online, 7, 3);
        let will = Presence::new(PresenceState::Offline, 7, 2);
        let current = Some(online.cursor());
        assert_eq!(admit_presence(current, will.cursor()), Admission::Stale);
        // The same after a reboot: a Last Will of the previous boot is dropped.
        assert_eq!(admit_presence(Some(p(8, 1)), p(7, 9)), Admission::Stale);
    }

    #[test]
    fn presence_equal_or_newer_is_accepted() {
        assert_eq!(admit_presence(None, p(0, 0)), Admission::Accept);
        // Retained re-delivery of the same message.
        assert_eq!(admit_presence(Some(p(7, 3)), p(7, 3)), Admission::Accept);
        // The same connection's offline (graceful or Last Will) after its online.
        let online = Presence::new(PresenceState::Online, 7, 3);
        let offline = Presence::new(PresenceState::Offline, 7, 3);
        assert_eq!(admit_presence(Some(online.cursor()), offline.cursor()), Admission::Accept);
        // A new connection, and a new boot with conn reset.
        assert_eq!(admit_presence(Some(p(7, 3)), p(7, 4)), Admission::Accept);
        assert_eq!(admit_presence(Some(p(7, 3)), p(8, 1)), Admission::Accept);
    }
}
