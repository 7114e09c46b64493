//! What the operator knows about one device from its MQTT messages, and how each message
//! changes it. Every message passes the ordering rules of the contract first, so duplicates,
//! reordering, stale messages and late Last Wills never move the state back.

use std::collections::VecDeque;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kubetwin_api::{
    AppliedVersion, ConnectionState, ConnectionStatus, DeviceStatus, DocumentVersion,
    RecordedResponse, ReportCursor,
};
use kubetwin_protocol::{
    Admission, Cursor, MAX_REPORTED_BYTES, MethodResponse, Presence, PresenceCursor, PresenceState,
    ReportedMessage, RequestId, ResponseStatus, admit, admit_presence, admit_response,
    apply_reported, plausible_boot,
};
use serde_json::{Map, Value};

use super::compact::CompactObject;
use crate::error::{Error, ReadBackError};

/// How many method answers are remembered per device.
const REMEMBERED_ANSWERS: usize = 16;

/// A device's latest answer to one request, as the fleet index and the method engine see it
/// (the wire shape is [`MethodResponse`], the status shape [`RecordedResponse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Request id.
    pub request_id: RequestId,
    /// Position of the answer.
    pub cursor: Cursor,
    /// What the device said.
    pub status: ResponseStatus,
    /// HTTP-like code.
    pub code: u16,
    /// The device's message.
    pub message: String,
    /// Progress in percent, for InProgress answers.
    pub progress: Option<u8>,
    /// The method's result, when it fits the shown bound
    /// ([`kubetwin_api::method::MAX_RESULT_PAYLOAD_BYTES`]).
    pub payload: Option<Value>,
    /// The device sent a result larger than the bound; it is not kept.
    pub payload_truncated: bool,
}

impl Answer {
    /// The answer carried by a response message whose id was validated.
    pub fn from_response(request_id: RequestId, message: &MethodResponse) -> Self {
        Self {
            request_id,
            cursor: message.cursor(),
            status: message.status,
            code: message.code,
            message: message.message.clone().unwrap_or_default(),
            progress: message.progress,
            payload: message.payload.clone().filter(fits_result_bound),
            payload_truncated: message.payload.as_ref().is_some_and(|p| !fits_result_bound(p)),
        }
    }

    /// The device's message, or its code when it gave none.
    pub fn detail(&self) -> String {
        if self.message.is_empty() { format!("code {}", self.code) } else { self.message.clone() }
    }
}

/// Whether a result payload is small enough to keep and show.
fn fits_result_bound(payload: &Value) -> bool {
    serde_json::to_vec(payload)
        .is_ok_and(|bytes| bytes.len() <= kubetwin_api::method::MAX_RESULT_PAYLOAD_BYTES)
}

impl From<&Answer> for RecordedResponse {
    fn from(answer: &Answer) -> Self {
        Self { code: i32::from(answer.code), message: answer.message.clone() }
    }
}

/// What the operator knows about one device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceState {
    /// Last accepted reported position (shown in status).
    pub cursor: Option<Cursor>,
    /// Position of the newest full report that only repeated what was known (a resync): it
    /// changed nothing shown, but anything older is stale from now on.
    pub repeated: Option<Cursor>,
    /// Reported properties, merged (compact: one per device is kept; see [`CompactObject`]).
    pub reported: CompactObject,
    /// When the last reported message was accepted.
    pub reported_at: Option<Timestamp>,
    /// Desired version the device applied.
    pub applied: Option<AppliedVersion>,
    /// Position of the last accepted presence message (`None` since the operator started).
    pub presence: Option<PresenceCursor>,
    /// Connection as shown in status.
    pub connection: ConnectionStatus,
    /// Latest answers to method requests, newest last; `None` until the first. Boxed although
    /// a `VecDeque` is on the heap already: most devices have none, and its 32 bytes inline
    /// would be paid by every device (8 here keep the state in a smaller allocation class).
    #[allow(clippy::box_collection)]
    answers: Option<Box<VecDeque<Answer>>>,
    /// The desired document published in this MQTT session (`None`: publish again).
    pub published: Option<Published>,
    /// The newest document version this process offered to the Device's status, with the
    /// Device's uid. The watch cache can still show an older one (its own write not seen
    /// yet): a revision computed from the cache alone could be given twice to different
    /// content, and a device applies only a higher one. Boxed: only Devices with a
    /// configuration or a firmware order have one.
    pub recorded_document: Option<Box<(String, DocumentVersion)>>,
    /// The size a dropped reported message would have made the reported properties (until a
    /// report is accepted again; `u32::MAX` for any larger size).
    pub reported_too_large: Option<u32>,
    /// Methods the device listed in its latest online presence (empty: it did not say). A
    /// boxed slice, not a `Vec`: 8 bytes less inline keep the state in jemalloc's 320-byte
    /// class rather than its 384-byte one (64 bytes per device).
    pub methods: Box<[String]>,
}

/// Unix seconds of `now` (0 before 1970).
fn unix_secs(now: Timestamp) -> u64 {
    u64::try_from(now.as_second()).unwrap_or(0)
}

/// A desired document the operator published: its version and a fingerprint of its content,
/// so that the operator recognises its own retained document when the broker delivers it,
/// and notices one that anything else wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Fingerprint of the Device's uid ([`epoch_fingerprint`]; a copy of the uid would cost
    /// ~70 bytes per device).
    pub epoch: u64,
    /// The Device's generation.
    pub version: i64,
    /// Fingerprint of the desired properties.
    pub fingerprint: u64,
    /// The operator's revision within the generation (1 once a firmware order is included;
    /// one held back by a disruption budget is not).
    pub revision: u32,
}

impl Published {
    /// What identifies `document`.
    pub fn of(document: &kubetwin_protocol::DesiredDocument) -> Self {
        Self {
            epoch: epoch_fingerprint(&document.epoch),
            version: document.version,
            fingerprint: desired_fingerprint(&document.desired),
            revision: document.revision,
        }
    }

    /// Whether it describes (epoch, version).
    pub fn is(&self, epoch: &str, version: i64) -> bool {
        self.epoch == epoch_fingerprint(epoch) && self.version == version
    }
}

/// A fingerprint of a Device's uid (the epoch of its documents).
pub fn epoch_fingerprint(epoch: &str) -> u64 {
    fingerprint(epoch)
}

/// A fingerprint of desired properties (their canonical JSON: keys sorted).
pub fn desired_fingerprint(desired: &Map<String, Value>) -> u64 {
    fingerprint(Value::Object(desired.clone()).to_string())
}

/// A 64-bit hash with fixed keys: the same for the same value in every run of the process.
fn fingerprint(value: impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

impl DeviceState {
    /// A state seeded from what the Device's status already records, so that nothing older
    /// than what status shows is accepted after an operator restart.
    ///
    /// A stored position with an implausible boot (written before boots were bounded) is
    /// ignored, so that device is not stuck behind it.
    pub fn from_status(status: Option<&DeviceStatus>, now: Timestamp) -> Self {
        let Some(status) = status else {
            return Self::default();
        };
        Self {
            // The CRD allows no negative counters, so a stored position always converts.
            cursor: status
                .last_reported
                .and_then(|c| Cursor::try_from(c).ok())
                .filter(|c| plausible_boot(c.boot, unix_secs(now))),
            repeated: None,
            reported: status.reported.as_ref().map(CompactObject::of).unwrap_or_default(),
            reported_at: status.reported_at.as_ref().map(|t| t.0),
            applied: status.applied.clone(),
            presence: None,
            connection: status.connection.clone().unwrap_or_default(),
            answers: None,
            published: None,
            recorded_document: None,
            reported_too_large: None,
            methods: Box::default(),
        }
    }

    /// Applies a reported message if it is newer than the last accepted one.
    ///
    /// A message whose result would be larger than [`MAX_REPORTED_BYTES`] is dropped
    /// ([`Admission::TooLarge`]) and remembered, so status can say so. Fails only when the
    /// kept reported properties do not read back (a bug), changing nothing.
    pub fn apply_reported(
        &mut self,
        message: &ReportedMessage,
        now: Timestamp,
    ) -> Result<Admission, ReadBackError> {
        if !plausible_boot(message.boot, unix_secs(now)) {
            return Ok(Admission::Implausible);
        }
        let admission = admit(self.position(), message.cursor());
        if admission.is_accept() {
            let mut merged: Map<String, Value> = self.reported.to_map()?;
            apply_reported(&mut merged, message);
            let merged = CompactObject::new(merged);
            let size = merged.text_len();
            if size > MAX_REPORTED_BYTES {
                self.reported_too_large = Some(u32::try_from(size).unwrap_or(u32::MAX));
                return Ok(Admission::TooLarge);
            }
            if self.repeats_known_state(message, &merged) {
                // A resync (protocol 5.5) that says what is already known changes nothing
                // shown, not even the position, so a restarted operator writes no status for
                // it; older messages are stale from now on all the same.
                self.repeated = Some(message.cursor());
                return Ok(Admission::Duplicate);
            }
            self.reported = merged;
            self.reported_too_large = None;
            self.cursor = Some(message.cursor());
            self.reported_at = Some(now);
            if let Some(applied) = &message.applied {
                self.applied = Some(AppliedVersion::from(applied));
            }
            self.connection.last_seen = Some(Time(now));
        }
        Ok(admission)
    }

    /// The newest reported position seen: older messages are stale.
    pub fn position(&self) -> Option<Cursor> {
        self.cursor.max(self.repeated)
    }

    /// Whether `message` is a full report of the current boot whose result (`merged`) and
    /// applied version are exactly what is held. A new boot always counts (reboots are seen
    /// through it).
    fn repeats_known_state(&self, message: &ReportedMessage, merged: &CompactObject) -> bool {
        let applied = message.applied.as_ref().map(AppliedVersion::from);
        message.full
            && self.cursor.is_some_and(|c| c.boot == message.boot)
            && *merged == self.reported
            && applied == self.applied
    }

    /// Applies a presence message unless it belongs to an older connection. A repeat (a
    /// retained replay after the operator (re)subscribed, or a device's resync) that matches
    /// the state already known only restores the connection position, so a restart writes
    /// nothing.
    pub fn apply_presence(&mut self, message: &Presence, now: Timestamp) -> Admission {
        if !plausible_boot(message.boot, unix_secs(now)) {
            return Admission::Implausible;
        }
        let admission = admit_presence(self.presence, message.cursor());
        if admission.is_accept() {
            if message.state == PresenceState::Online {
                self.methods = message.methods.as_slice().into();
            }
            let state = match message.state {
                PresenceState::Online => ConnectionState::Connected,
                PresenceState::Offline => ConnectionState::Disconnected,
            };
            // The broker delivers the retained presence again after every (re)subscription,
            // and a device repeats its presence when it resyncs: when it shows what is
            // already known, nothing changes (not even lastSeen), so an idle fleet costs no
            // writes on a reconnect or an operator restart.
            if self.presence == Some(message.cursor()) && self.connection.state == state {
                return Admission::Duplicate;
            }
            let replay = self.presence.is_none() && self.connection.state == state;
            self.presence = Some(message.cursor());
            if replay {
                return admission;
            }
            if self.connection.state == state
                && self.connection.since.is_some()
                && self.connection.reason == message.reason
            {
                // A new connection in the state already shown (the device reconnected after
                // a broker restart, and the broker could not publish its will): nothing shown
                // changes, and moving lastSeen alone would cost a write per device.
                return admission;
            }
            if self.connection.state != state || self.connection.since.is_none() {
                self.connection.since = Some(Time(now));
            }
            self.connection.state = state;
            self.connection.reason = message.reason.clone();
            self.connection.last_seen = Some(Time(now));
        }
        admission
    }

    /// Records a method answer if it is newer than the last one for its request.
    pub fn apply_response(
        &mut self,
        request_id: &RequestId,
        message: &MethodResponse,
        now: Timestamp,
    ) -> Admission {
        if !plausible_boot(message.boot, unix_secs(now)) {
            return Admission::Implausible;
        }
        let last = self.answer(request_id).map(|a| (a.cursor, a.status));
        let admission = admit_response(last, message);
        if admission.is_accept() {
            let answers = self.answers.get_or_insert_default();
            answers.retain(|a| &a.request_id != request_id);
            answers.push_back(Answer::from_response(request_id.clone(), message));
            while answers.len() > REMEMBERED_ANSWERS {
                answers.pop_front();
            }
        }
        admission
    }

    /// The reported properties, merged.
    pub fn reported(&self) -> Result<Map<String, Value>, ReadBackError> {
        self.reported.to_map()
    }

    /// The latest answer to `request_id`.
    pub fn answer(&self, request_id: &str) -> Option<&Answer> {
        self.answers.as_ref()?.iter().find(|a| a.request_id == *request_id)
    }

    /// Whether the device is online, as far as presence tells (`None`: no presence seen).
    pub fn online(&self) -> Option<bool> {
        self.presence.map(|_| self.connection.state == ConnectionState::Connected)
    }

    /// The device's current boot counter from its presence.
    pub fn boot(&self) -> Option<u64> {
        self.presence.map(|p| p.boot)
    }

    /// Status fields that come from the device.
    pub fn write_into(&self, status: &mut DeviceStatus) -> Result<(), Error> {
        status.connection = Some(self.connection.clone());
        status.reported = Some(self.reported.to_map().map_err(Error::Reported)?);
        status.reported_at = self.reported_at.map(Time);
        status.last_reported = self.cursor.map(ReportCursor::try_from).transpose()?;
        status.applied = self.applied.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn reported(boot: u64, seq: u64, full: bool, body: Value) -> ReportedMessage {
        let map = body.as_object().cloned().unwrap_or_default();
        if full {
            ReportedMessage::full(boot, seq, map)
        } else {
            ReportedMessage::patch(boot, seq, map)
        }
    }

    fn id(text: &str) -> RequestId {
        RequestId::new(text).expect("valid request id")
    }

    #[test]
    fn a_device_state_fits_jemalloc_s_320_byte_class() {
        // Each device's state is boxed in the fleet index: past 320 bytes it takes 384.
        assert!(size_of::<DeviceState>() <= 320, "{}", size_of::<DeviceState>());
    }

    #[test]
    fn a_resync_that_repeats_the_known_state_changes_nothing() {
        let mut state = DeviceState::default();
        assert!(
            state
                .apply_reported(&reported(1, 1, true, json!({"a": 1})), now())
                .unwrap()
                .is_accept()
        );
        assert!(
            state
                .apply_reported(&reported(1, 2, false, json!({"b": 2})), now())
                .unwrap()
                .is_accept()
        );
        let before = state.clone();
        // (message, admission, the position afterwards)
        let table = [
            // The same state in a full report of the same boot: nothing changes.
            (reported(1, 5, true, json!({"a": 1, "b": 2})), Admission::Duplicate, (1, 2)),
            // Different content: accepted.
            (reported(1, 6, true, json!({"a": 1, "b": 3})), Admission::Accept, (1, 6)),
            // The same content in a new boot: accepted, a reboot must show.
            (reported(2, 1, true, json!({"a": 1, "b": 3})), Admission::Accept, (2, 1)),
        ];
        for (message, admission, (boot, seq)) in table {
            assert_eq!(state.apply_reported(&message, now()).unwrap(), admission, "{message:?}");
            assert_eq!(state.cursor, Some(Cursor { boot, seq }));
        }
        assert_ne!(state, before);
        // A repeated full report shows nothing new, not even lastSeen, but older messages
        // are stale after it; a patch after it is newer than both.
        let mut quiet = before.clone();
        let shown = |state: &DeviceState| {
            let mut status = DeviceStatus::default();
            state.write_into(&mut status).expect("in range");
            status
        };
        quiet.apply_reported(&reported(1, 5, true, json!({"a": 1, "b": 2})), now()).unwrap();
        assert_eq!(shown(&quiet), shown(&before), "the status does not change");
        assert_eq!(
            quiet.apply_reported(&reported(1, 4, false, json!({"a": 9})), now()).unwrap(),
            Admission::Stale,
            "older than the repeated full report"
        );
        assert!(
            quiet
                .apply_reported(&reported(1, 6, false, json!({"c": 1})), now())
                .unwrap()
                .is_accept()
        );
        assert_eq!(quiet.cursor, Some(Cursor { boot: 1, seq: 6 }));
    }

    #[test]
    fn duplicates_reordering_and_stale_reports_never_move_state_back() {
        let mut state = DeviceState::default();
        assert!(
            state
                .apply_reported(&reported(1, 1, true, json!({"a": 1, "b": 1})), now())
                .unwrap()
                .is_accept()
        );
        assert!(
            state
                .apply_reported(&reported(1, 3, false, json!({"a": 3})), now())
                .unwrap()
                .is_accept()
        );
        assert_eq!(
            state.apply_reported(&reported(1, 2, false, json!({"a": 2})), now()).unwrap(),
            Admission::Stale
        );
        assert_eq!(
            state.apply_reported(&reported(1, 3, false, json!({"a": 3})), now()).unwrap(),
            Admission::Duplicate
        );
        assert_eq!(state.reported().unwrap().get("a"), Some(&json!(3)));
        assert!(
            state
                .apply_reported(&reported(1, 4, false, json!({"b": null})), now())
                .unwrap()
                .is_accept()
        );
        assert_eq!(state.reported().unwrap().get("b"), None, "null deletes a key");
        assert!(
            state
                .apply_reported(&reported(2, 1, true, json!({"c": 1})), now())
                .unwrap()
                .is_accept()
        );
        assert_eq!(
            state.reported().unwrap(),
            json!({"c": 1}).as_object().cloned().unwrap_or_default()
        );
        assert_eq!(
            state.apply_reported(&reported(1, 99, false, json!({"a": 9})), now()).unwrap(),
            Admission::Stale
        );
    }

    #[test]
    fn a_state_seeded_from_status_rejects_what_status_already_shows() {
        let status = DeviceStatus {
            last_reported: Some(ReportCursor { boot: 3, seq: 7 }),
            reported: Some([("x".to_string(), json!(1))].into_iter().collect()),
            ..Default::default()
        };
        let mut state = DeviceState::from_status(Some(&status), now());
        assert_eq!(
            state.apply_reported(&reported(3, 7, false, json!({"x": 0})), now()).unwrap(),
            Admission::Duplicate
        );
        assert_eq!(
            state.apply_reported(&reported(2, 9, false, json!({"x": 0})), now()).unwrap(),
            Admission::Stale
        );
        assert_eq!(state.reported().unwrap().get("x"), Some(&json!(1)));
    }

    #[test]
    fn a_late_last_will_of_an_old_connection_is_ignored() {
        let mut state = DeviceState::default();
        assert!(
            state.apply_presence(&Presence::new(PresenceState::Online, 2, 1), now()).is_accept()
        );
        assert!(
            state.apply_presence(&Presence::new(PresenceState::Online, 2, 2), now()).is_accept()
        );
        let late_will = Presence::new(PresenceState::Offline, 2, 1);
        assert_eq!(state.apply_presence(&late_will, now()), Admission::Stale);
        assert_eq!(state.online(), Some(true));
        assert!(
            state.apply_presence(&Presence::new(PresenceState::Offline, 2, 2), now()).is_accept()
        );
        assert_eq!(state.online(), Some(false));
        assert_eq!(state.boot(), Some(2));
    }

    #[test]
    fn a_retained_presence_replay_after_a_restart_changes_nothing_shown() {
        let since = Time(Timestamp::from_second(1_600_000_000).expect("valid"));
        let status = DeviceStatus {
            connection: Some(ConnectionStatus {
                state: ConnectionState::Connected,
                since: Some(since.clone()),
                last_seen: Some(since.clone()),
                reason: None,
            }),
            ..Default::default()
        };
        let mut state = DeviceState::from_status(Some(&status), now());
        let replay = Presence::new(PresenceState::Online, 4, 1);
        assert!(state.apply_presence(&replay, now()).is_accept());
        assert_eq!(state.connection.since, Some(since.clone()));
        assert_eq!(state.connection.last_seen, Some(since));
        assert_eq!(state.boot(), Some(4), "the position is known again");
    }

    #[test]
    fn answers_are_ordered_and_bounded() {
        let mut state = DeviceState::default();
        let accepted = MethodResponse::new("r1", ResponseStatus::Accepted, 1, 5);
        let done = MethodResponse::new("r1", ResponseStatus::Succeeded, 2, 1);
        assert!(state.apply_response(&id("r1"), &accepted, now()).is_accept());
        assert!(state.apply_response(&id("r1"), &done, now()).is_accept());
        assert!(
            !state.apply_response(&id("r1"), &accepted, now()).is_accept(),
            "nothing follows a terminal answer"
        );
        assert_eq!(state.answer("r1").map(|a| a.status), Some(ResponseStatus::Succeeded));
        for i in 0..40 {
            let request = format!("x{i}");
            state.apply_response(
                &id(&request),
                &MethodResponse::new(request.clone(), ResponseStatus::Accepted, 1, i),
                now(),
            );
        }
        assert_eq!(state.answers.as_ref().map(|a| a.len()), Some(REMEMBERED_ANSWERS));
    }

    #[test]
    fn a_poisoned_boot_is_dropped_and_a_stored_one_is_ignored() {
        let mut state = DeviceState::default();
        let poisoned = reported(u64::MAX >> 11, 1, true, json!({"x": 1}));
        assert_eq!(state.apply_reported(&poisoned, now()).unwrap(), Admission::Implausible);
        assert!(
            state
                .apply_reported(&reported(5, 1, true, json!({"x": 2})), now())
                .unwrap()
                .is_accept()
        );
        let stored = DeviceStatus {
            last_reported: Some(ReportCursor { boot: 1 << 52, seq: 1 }),
            ..Default::default()
        };
        let mut restored = DeviceState::from_status(Some(&stored), now());
        assert_eq!(restored.cursor, None, "a poisoned position from status is ignored");
        assert!(
            restored.apply_reported(&reported(6, 1, true, json!({})), now()).unwrap().is_accept()
        );
        let will = Presence::new(PresenceState::Offline, u64::MAX >> 11, 1);
        assert_eq!(state.apply_presence(&will, now()), Admission::Implausible);
    }

    #[test]
    fn a_report_that_would_grow_reported_past_32_kib_is_dropped_and_remembered() {
        let mut state = DeviceState::default();
        assert!(
            state
                .apply_reported(&reported(1, 1, true, json!({"a": "x".repeat(20_000)})), now())
                .unwrap()
                .is_accept()
        );
        let too_much = reported(1, 2, false, json!({"b": "y".repeat(20_000)}));
        assert_eq!(state.apply_reported(&too_much, now()).unwrap(), Admission::TooLarge);
        assert_eq!(state.reported().unwrap().get("b"), None, "nothing of it applied");
        assert_eq!(state.cursor, Some(Cursor { boot: 1, seq: 1 }), "the position did not move");
        assert!(state.reported_too_large.is_some_and(|size| size as usize > MAX_REPORTED_BYTES));
        let smaller = reported(1, 3, false, json!({"a": null, "b": "y".repeat(20_000)}));
        assert!(state.apply_reported(&smaller, now()).unwrap().is_accept());
        assert_eq!(state.reported_too_large, None);
    }

    #[test]
    fn a_retained_presence_the_state_already_shows_changes_nothing_on_a_reconnect() {
        let mut state = DeviceState::default();
        let online = Presence::new(PresenceState::Online, 3, 1);
        assert!(state.apply_presence(&online, now()).is_accept());
        let before = state.clone();
        let later = Timestamp::from_second(1_700_000_600).expect("valid");
        assert_eq!(state.apply_presence(&online, later), Admission::Duplicate);
        assert_eq!(state, before, "lastSeen did not move");
    }

    #[test]
    fn a_reconnect_in_the_state_already_shown_does_not_move_last_seen() {
        let mut state = DeviceState::default();
        assert!(
            state.apply_presence(&Presence::new(PresenceState::Online, 3, 1), now()).is_accept()
        );
        let shown = state.connection.clone();
        let later = Timestamp::from_second(1_700_000_600).expect("valid");
        let reconnect = Presence::new(PresenceState::Online, 3, 2);
        assert!(state.apply_presence(&reconnect, later).is_accept(), "a newer connection");
        assert_eq!(state.connection, shown, "nothing shown changes, not even lastSeen");
        // Its will, of the new connection, is a real change.
        let will = Presence::new(PresenceState::Offline, 3, 2);
        assert!(state.apply_presence(&will, later).is_accept());
        assert_eq!(state.connection.state, ConnectionState::Disconnected);
        assert_eq!(state.connection.last_seen, Some(Time(later)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 512,
            rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b74_7769_6e00_0003),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Delivered shuffled and with duplicates, reported messages give the state of applying,
        /// in order, exactly the ones that were accepted; those are in increasing position; and
        /// when the newest message is a full report, the state equals the ordered application
        /// of every message.
        #[test]
        fn shuffled_and_duplicated_reports_equal_the_ordered_application(
            patches in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::btree_map("[a-d]", proptest::option::of(0i64..9), 0..4)),
                1..12,
            ),
            order in proptest::collection::vec(0usize..1000, 0..30),
            last_full in proptest::bool::ANY,
        ) {
            let count = patches.len();
            let messages: Vec<ReportedMessage> = patches
                .into_iter()
                .enumerate()
                .map(|(i, (full, body))| {
                    let body: Map<String, Value> = body
                        .into_iter()
                        .map(|(k, v)| (k, v.map_or(Value::Null, Value::from)))
                        .collect();
                    let seq = u64::try_from(i).unwrap_or(0) + 1;
                    let full = full || (last_full && i + 1 == count);
                    if full { ReportedMessage::full(1, seq, body) } else { ReportedMessage::patch(1, seq, body) }
                })
                .collect();
            // Every message at least once, in a shuffled order, some twice.
            let mut delivery: Vec<usize> = (0..count).collect();
            for (i, pick) in order.iter().enumerate() {
                if i % 3 == 0 {
                    delivery.push(pick % count);
                } else {
                    let len = delivery.len();
                    delivery.swap(i % len, pick % len);
                }
            }
            let mut state = DeviceState::default();
            let mut accepted = Vec::new();
            for i in &delivery {
                if state.apply_reported(&messages[*i], now()).unwrap().is_accept() {
                    accepted.push(*i);
                }
            }
            proptest::prop_assert!(accepted.windows(2).all(|w| w[0] < w[1]), "increasing: {:?}", accepted);
            let mut expected = Map::new();
            for i in &accepted {
                apply_reported(&mut expected, &messages[*i]);
            }
            proptest::prop_assert_eq!(&state.reported().unwrap(), &expected);
            // The shown position is the newest accepted message's; the position that decides
            // staleness is the newest delivered one (a newer full report repeating the state
            // held is not shown, but counts).
            proptest::prop_assert_eq!(state.cursor, accepted.last().map(|i| messages[*i].cursor()));
            let newest = delivery.iter().max().copied();
            proptest::prop_assert_eq!(state.position(), newest.map(|i| messages[i].cursor()));
            if last_full {
                let mut all = Map::new();
                for message in &messages {
                    apply_reported(&mut all, message);
                }
                proptest::prop_assert_eq!(&state.reported().unwrap(), &all);
            }
        }
    }

    #[test]
    fn status_shows_the_position_and_answers_convert_explicitly() {
        let mut state = DeviceState::default();
        state.apply_reported(&reported(4, 2, true, json!({})), now()).unwrap();
        let mut status = DeviceStatus::default();
        state.write_into(&mut status).unwrap();
        assert_eq!(status.last_reported, Some(ReportCursor { boot: 4, seq: 2 }));
        let mut message = MethodResponse::new("r1", ResponseStatus::Failed, 1, 1);
        message.message = Some("watchdog".into());
        let answer = Answer::from_response(id("r1"), &message);
        assert_eq!(
            RecordedResponse::from(&answer),
            RecordedResponse { code: 500, message: "watchdog".into() }
        );
        assert_eq!(answer.detail(), "watchdog");
    }
}
