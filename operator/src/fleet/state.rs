//! What the operator knows about one device from its MQTT messages, and how each message
//! changes it. Every message passes the ordering rules of the contract first, so duplicates,
//! reordering, stale messages and late Last Wills never move the state back.

use std::collections::VecDeque;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kubetwin_api::{
    AppliedVersion, ConnectionState, ConnectionStatus, CursorOutOfRange, DeviceStatus,
    RecordedResponse, ReportCursor,
};
use kubetwin_protocol::{
    Admission, Cursor, MethodResponse, Presence, PresenceCursor, PresenceState, ReportedMessage,
    RequestId, ResponseStatus, admit, admit_presence, admit_response, apply_reported,
};
use serde_json::{Map, Value};

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
        }
    }

    /// The device's message, or its code when it gave none.
    pub fn detail(&self) -> String {
        if self.message.is_empty() { format!("code {}", self.code) } else { self.message.clone() }
    }
}

impl From<&Answer> for RecordedResponse {
    fn from(answer: &Answer) -> Self {
        Self { code: i32::from(answer.code), message: answer.message.clone() }
    }
}

/// What the operator knows about one device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceState {
    /// Last accepted reported position.
    pub cursor: Option<Cursor>,
    /// Reported properties, merged.
    pub reported: Map<String, Value>,
    /// When the last reported message was accepted.
    pub reported_at: Option<Timestamp>,
    /// Desired version the device applied.
    pub applied: Option<AppliedVersion>,
    /// Position of the last accepted presence message (`None` since the operator started).
    pub presence: Option<PresenceCursor>,
    /// Connection as shown in status.
    pub connection: ConnectionStatus,
    /// Latest answers to method requests, newest last.
    pub answers: VecDeque<Answer>,
    /// The desired document published in this MQTT session (`None`: publish again).
    pub published: Option<Published>,
}

/// A desired document the operator published: its version and a fingerprint of its content,
/// so that the operator recognises its own retained document when the broker delivers it,
/// and notices one that anything else wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The Device's uid.
    pub epoch: String,
    /// The Device's generation.
    pub version: i64,
    /// Fingerprint of the desired properties.
    pub fingerprint: u64,
}

impl Published {
    /// What identifies `document`.
    pub fn of(document: &kubetwin_protocol::DesiredDocument) -> Self {
        Self {
            epoch: document.epoch.clone(),
            version: document.version,
            fingerprint: desired_fingerprint(&document.desired),
        }
    }

    /// Whether it describes (epoch, version).
    pub fn is(&self, epoch: &str, version: i64) -> bool {
        self.epoch == epoch && self.version == version
    }
}

/// A fingerprint of desired properties (their canonical JSON: keys sorted).
pub fn desired_fingerprint(desired: &Map<String, Value>) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default()
        .hash_one(Value::Object(desired.clone()).to_string())
}

impl DeviceState {
    /// A state seeded from what the Device's status already records, so that nothing older
    /// than what status shows is accepted after an operator restart.
    pub fn from_status(status: Option<&DeviceStatus>) -> Self {
        let Some(status) = status else {
            return Self::default();
        };
        Self {
            // The CRD allows no negative counters, so a stored position always converts.
            cursor: status.last_reported.and_then(|c| Cursor::try_from(c).ok()),
            reported: status.reported.clone().map(|r| r.into_iter().collect()).unwrap_or_default(),
            reported_at: status.reported_at.as_ref().map(|t| t.0),
            applied: status.applied.clone(),
            presence: None,
            connection: status.connection.clone().unwrap_or_default(),
            answers: VecDeque::new(),
            published: None,
        }
    }

    /// Applies a reported message if it is newer than the last accepted one.
    pub fn apply_reported(&mut self, message: &ReportedMessage, now: Timestamp) -> Admission {
        let admission = admit(self.cursor, message.cursor());
        if admission.is_accept() {
            apply_reported(&mut self.reported, message);
            self.cursor = Some(message.cursor());
            self.reported_at = Some(now);
            if let Some(applied) = &message.applied {
                self.applied =
                    Some(AppliedVersion { epoch: applied.epoch.clone(), version: applied.version });
            }
            self.connection.last_seen = Some(Time(now));
        }
        admission
    }

    /// Applies a presence message unless it belongs to an older connection. A `retained`
    /// replay (delivered again after the operator (re)subscribed) that matches the state the
    /// status already shows only restores the connection position, so a restart writes nothing.
    pub fn apply_presence(
        &mut self,
        message: &Presence,
        now: Timestamp,
        retained: bool,
    ) -> Admission {
        let admission = admit_presence(self.presence, message.cursor());
        if admission.is_accept() {
            let state = match message.state {
                PresenceState::Online => ConnectionState::Connected,
                PresenceState::Offline => ConnectionState::Disconnected,
            };
            let replay = retained && self.presence.is_none() && self.connection.state == state;
            self.presence = Some(message.cursor());
            if replay {
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
    ) -> Admission {
        let last = self.answer(request_id).map(|a| (a.cursor, a.status));
        let admission = admit_response(last, message);
        if admission.is_accept() {
            self.answers.retain(|a| &a.request_id != request_id);
            self.answers.push_back(Answer::from_response(request_id.clone(), message));
            while self.answers.len() > REMEMBERED_ANSWERS {
                self.answers.pop_front();
            }
        }
        admission
    }

    /// The latest answer to `request_id`.
    pub fn answer(&self, request_id: &str) -> Option<&Answer> {
        self.answers.iter().find(|a| a.request_id == *request_id)
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
    pub fn write_into(&self, status: &mut DeviceStatus) -> Result<(), CursorOutOfRange> {
        status.connection = Some(self.connection.clone());
        status.reported = Some(self.reported.clone().into_iter().collect());
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
    fn duplicates_reordering_and_stale_reports_never_move_state_back() {
        let mut state = DeviceState::default();
        assert!(
            state.apply_reported(&reported(1, 1, true, json!({"a": 1, "b": 1})), now()).is_accept()
        );
        assert!(state.apply_reported(&reported(1, 3, false, json!({"a": 3})), now()).is_accept());
        assert_eq!(
            state.apply_reported(&reported(1, 2, false, json!({"a": 2})), now()),
            Admission::Stale
        );
        assert_eq!(
            state.apply_reported(&reported(1, 3, false, json!({"a": 3})), now()),
            Admission::Duplicate
        );
        assert_eq!(state.reported.get("a"), Some(&json!(3)));
        assert!(
            state.apply_reported(&reported(1, 4, false, json!({"b": null})), now()).is_accept()
        );
        assert_eq!(state.reported.get("b"), None, "null deletes a key");
        assert!(state.apply_reported(&reported(2, 1, true, json!({"c": 1})), now()).is_accept());
        assert_eq!(state.reported, json!({"c": 1}).as_object().cloned().unwrap_or_default());
        assert_eq!(
            state.apply_reported(&reported(1, 99, false, json!({"a": 9})), now()),
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
        let mut state = DeviceState::from_status(Some(&status));
        assert_eq!(
            state.apply_reported(&reported(3, 7, false, json!({"x": 0})), now()),
            Admission::Duplicate
        );
        assert_eq!(
            state.apply_reported(&reported(2, 9, false, json!({"x": 0})), now()),
            Admission::Stale
        );
        assert_eq!(state.reported.get("x"), Some(&json!(1)));
    }

    #[test]
    fn a_late_last_will_of_an_old_connection_is_ignored() {
        let mut state = DeviceState::default();
        assert!(
            state
                .apply_presence(&Presence::new(PresenceState::Online, 2, 1), now(), false)
                .is_accept()
        );
        assert!(
            state
                .apply_presence(&Presence::new(PresenceState::Online, 2, 2), now(), false)
                .is_accept()
        );
        let late_will = Presence::new(PresenceState::Offline, 2, 1);
        assert_eq!(state.apply_presence(&late_will, now(), false), Admission::Stale);
        assert_eq!(state.online(), Some(true));
        assert!(
            state
                .apply_presence(&Presence::new(PresenceState::Offline, 2, 2), now(), false)
                .is_accept()
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
        let mut state = DeviceState::from_status(Some(&status));
        let replay = Presence::new(PresenceState::Online, 4, 1);
        assert!(state.apply_presence(&replay, now(), true).is_accept());
        assert_eq!(state.connection.since, Some(since.clone()));
        assert_eq!(state.connection.last_seen, Some(since));
        assert_eq!(state.boot(), Some(4), "the position is known again");
    }

    #[test]
    fn answers_are_ordered_and_bounded() {
        let mut state = DeviceState::default();
        let accepted = MethodResponse::new("r1", ResponseStatus::Accepted, 1, 5);
        let done = MethodResponse::new("r1", ResponseStatus::Succeeded, 2, 1);
        assert!(state.apply_response(&id("r1"), &accepted).is_accept());
        assert!(state.apply_response(&id("r1"), &done).is_accept());
        assert!(
            !state.apply_response(&id("r1"), &accepted).is_accept(),
            "nothing follows a terminal answer"
        );
        assert_eq!(state.answer("r1").map(|a| a.status), Some(ResponseStatus::Succeeded));
        for i in 0..40 {
            let request = format!("x{i}");
            state.apply_response(
                &id(&request),
                &MethodResponse::new(request.clone(), ResponseStatus::Accepted, 1, i),
            );
        }
        assert_eq!(state.answers.len(), REMEMBERED_ANSWERS);
    }

    #[test]
    fn status_shows_the_position_and_answers_convert_explicitly() {
        let mut state = DeviceState::default();
        state.apply_reported(&reported(4, 2, true, json!({})), now());
        let mut status = DeviceStatus::default();
        assert_eq!(state.write_into(&mut status), Ok(()));
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
