//! The JSON payloads of the contract. Field names are camelCase and every payload carries
//! `"v": 1`; unknown fields are ignored so that v1 can grow compatibly.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::contract::PROTOCOL_VERSION;
use crate::cursor::{Cursor, PresenceCursor};
use crate::error::DecodeError;
use crate::ids::{validate_method, validate_request_id};
use crate::timestamp::validate_timestamp;
use crate::topic::ParsedTopic;

mod sealed {
    /// Keeps [`Message`](super::Message) implemented only by this crate's payloads.
    pub trait Sealed {}
}

/// A payload of the contract: what the [`Codec`](crate::Codec) encodes and decodes.
pub trait Message: Serialize + DeserializeOwned + sealed::Sealed {
    /// Kind of the message; equals [`ParsedTopic::kind`] of the topic it travels on.
    const KIND: &'static str;
    /// Whether the message is published with the MQTT retain flag.
    const RETAINED: bool;

    /// Checks the fields that serde cannot (ids, timestamps, ranges).
    fn validate(&self) -> Result<(), DecodeError>;

    /// Checks that the message belongs on `topic`: the kind and any id that is in both must match.
    fn check_topic(&self, topic: &ParsedTopic) -> Result<(), DecodeError> {
        check_kind(Self::KIND, topic)
    }
}

fn check_kind(kind: &str, topic: &ParsedTopic) -> Result<(), DecodeError> {
    if topic.kind() == kind {
        Ok(())
    } else {
        Err(DecodeError::InvalidField(format!(
            "a {kind} message does not belong on a {} topic",
            topic.kind()
        )))
    }
}

fn check_same(field: &str, body: &str, topic: &str) -> Result<(), DecodeError> {
    if body == topic {
        Ok(())
    } else {
        Err(DecodeError::InvalidField(format!(
            "{field} {body:?} in the payload does not match {topic:?} in the topic"
        )))
    }
}

/// Checks that a counter is at most [`MAX_COUNTER`](crate::contract::MAX_COUNTER).
fn validate_counter(field: &str, value: u64) -> Result<(), DecodeError> {
    if value <= crate::contract::MAX_COUNTER {
        Ok(())
    } else {
        Err(DecodeError::InvalidField(format!(
            "{field} {value} is above 2^53 - 1, the largest counter receivers accept"
        )))
    }
}

/// Checks that a text for people is at most `limit` bytes.
fn validate_text(field: &str, value: Option<&str>, limit: usize) -> Result<(), DecodeError> {
    match value {
        Some(text) if text.len() > limit => Err(DecodeError::InvalidField(format!(
            "{field} is {} bytes, above the {limit} bytes allowed",
            text.len()
        ))),
        _ => Ok(()),
    }
}

fn validate_optional_timestamp(field: &str, value: Option<&str>) -> Result<(), DecodeError> {
    value.map_or(Ok(()), |v| validate_timestamp(field, v))
}

/// The schema version field `"v": 1`: serializes as 1 and deserializes only from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct V1;

impl Serialize for V1 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(PROTOCOL_VERSION)
    }
}

impl<'de> Deserialize<'de> for V1 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(deserializer)?;
        if v == PROTOCOL_VERSION {
            Ok(V1)
        } else {
            Err(D::Error::custom(format!("unsupported schema version {v}")))
        }
    }
}

/// A version of the desired document: the Device uid (`epoch`), its generation (`version`)
/// and the operator's revision of that generation (`revision`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AppliedVersion {
    /// The Device's metadata.uid when the document was issued.
    pub epoch: String,
    /// The Device's metadata.generation when the document was issued.
    pub version: i64,
    /// The operator's revision of the document within one generation (0 when absent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u32,
}

impl AppliedVersion {
    /// The version of a desired document.
    pub fn of(doc: &DesiredDocument) -> Self {
        Self { epoch: doc.epoch.clone(), version: doc.version, revision: doc.revision }
    }

    fn validate(&self) -> Result<(), DecodeError> {
        validate_epoch_version(&self.epoch, self.version)
    }
}

/// Serde helper: a zero revision is left out, so documents without one read the same.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes fields by reference
fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn validate_epoch_version(epoch: &str, version: i64) -> Result<(), DecodeError> {
    if epoch.is_empty() {
        return Err(DecodeError::InvalidField("epoch is empty".into()));
    }
    if version < 0 {
        return Err(DecodeError::InvalidField(format!("version {version} is negative")));
    }
    Ok(())
}

/// `twin/desired` (operator → device, retained): the full desired document.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DesiredDocument {
    /// Schema version, always 1.
    pub v: V1,
    /// The Device's metadata.uid; a new Device with the same id has a new epoch.
    pub epoch: String,
    /// The Device's metadata.generation; grows with every spec change.
    pub version: i64,
    /// Grows when the operator changes the document without a spec change (a firmware order
    /// released by a disruption budget): devices apply a higher (version, revision) pair.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u32,
    /// When the operator issued the document (RFC 3339).
    pub issued_at: String,
    /// The desired properties (a JSON object).
    pub desired: Map<String, Value>,
    /// The firmware the device should run, if the Device sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<crate::firmware::FirmwareOrder>,
}

impl DesiredDocument {
    /// A desired document.
    pub fn new(
        epoch: impl Into<String>,
        version: i64,
        issued_at: impl Into<String>,
        desired: Map<String, Value>,
    ) -> Self {
        Self {
            v: V1,
            epoch: epoch.into(),
            version,
            revision: 0,
            issued_at: issued_at.into(),
            desired,
            firmware: None,
        }
    }
}

impl sealed::Sealed for DesiredDocument {}
impl Message for DesiredDocument {
    const KIND: &'static str = "desired";
    const RETAINED: bool = true;

    fn validate(&self) -> Result<(), DecodeError> {
        validate_epoch_version(&self.epoch, self.version)?;
        if let Some(firmware) = &self.firmware {
            firmware.validate()?;
        }
        validate_timestamp("issuedAt", &self.issued_at)
    }
}

/// `twin/reported` (device → operator): a merge patch (or, with `full`, all) of the reported
/// properties, ordered by `(boot, seq)`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReportedMessage {
    /// Schema version, always 1.
    pub v: V1,
    /// Boot counter of the device; grows by one on every boot.
    pub boot: u64,
    /// Sequence number within the boot; grows with every message.
    pub seq: u64,
    /// Whether `reported` replaces all reported properties instead of patching them.
    #[serde(default)]
    pub full: bool,
    /// The desired version the device has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AppliedVersion>,
    /// When the device sent the message (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    /// The reported properties: a JSON merge patch (`null` deletes a key), or all of them.
    #[serde(default)]
    pub reported: Map<String, Value>,
}

impl ReportedMessage {
    /// A patch of the reported properties.
    pub fn patch(boot: u64, seq: u64, reported: Map<String, Value>) -> Self {
        Self { v: V1, boot, seq, full: false, applied: None, ts: None, reported }
    }

    /// All reported properties (the first message of every boot).
    pub fn full(boot: u64, seq: u64, reported: Map<String, Value>) -> Self {
        Self { full: true, ..Self::patch(boot, seq, reported) }
    }

    /// Position of the message: `(boot, seq)`.
    pub fn cursor(&self) -> Cursor {
        Cursor { boot: self.boot, seq: self.seq }
    }
}

impl sealed::Sealed for ReportedMessage {}
impl Message for ReportedMessage {
    const KIND: &'static str = "reported";
    const RETAINED: bool = false;

    fn validate(&self) -> Result<(), DecodeError> {
        validate_counter("boot", self.boot)?;
        validate_counter("seq", self.seq)?;
        if let Some(applied) = &self.applied {
            applied.validate()?;
        }
        validate_optional_timestamp("ts", self.ts.as_deref())
    }
}

/// `twin/get` (device → operator): asks the operator to republish the desired document.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwinGet {
    /// Schema version, always 1.
    pub v: V1,
}

impl sealed::Sealed for TwinGet {}
impl Message for TwinGet {
    const KIND: &'static str = "get";
    const RETAINED: bool = false;

    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

/// `rpc/req/{method}/{requestId}` (operator → device): a direct-method call.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MethodRequest {
    /// Schema version, always 1.
    pub v: V1,
    /// Request id (the RebootRequest's metadata.uid); equals the id in the topic.
    pub id: String,
    /// Method name; equals the method in the topic.
    pub method: String,
    /// Parameters of the method (a JSON object).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// When the operator issued the request (RFC 3339).
    pub issued_at: String,
    /// After this instant the device must not execute the request (RFC 3339).
    pub expires_at: String,
}

impl MethodRequest {
    /// A method request.
    pub fn new(
        id: impl Into<String>,
        method: impl Into<String>,
        params: Map<String, Value>,
        issued_at: impl Into<String>,
        expires_at: impl Into<String>,
    ) -> Self {
        Self {
            v: V1,
            id: id.into(),
            method: method.into(),
            params,
            issued_at: issued_at.into(),
            expires_at: expires_at.into(),
        }
    }
}

impl sealed::Sealed for MethodRequest {}
impl Message for MethodRequest {
    const KIND: &'static str = "request";
    const RETAINED: bool = false;

    fn validate(&self) -> Result<(), DecodeError> {
        validate_request_id(&self.id)?;
        validate_method(&self.method)?;
        validate_timestamp("issuedAt", &self.issued_at)?;
        validate_timestamp("expiresAt", &self.expires_at)
    }

    fn check_topic(&self, topic: &ParsedTopic) -> Result<(), DecodeError> {
        match topic {
            ParsedTopic::Request { method, request_id, .. } => {
                check_same("id", &self.id, request_id.as_str())?;
                check_same("method", &self.method, method)
            }
            other => check_kind(Self::KIND, other),
        }
    }
}

/// Status of a method call as the device reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseStatus {
    /// The device will execute the request (code 202).
    Accepted,
    /// The device is executing the request (code 202, optional `progress`).
    InProgress,
    /// The request completed (code 200). Terminal.
    Succeeded,
    /// The request failed while executing (code 500). Terminal.
    Failed,
    /// The device refused the request: bad params 400, unknown method 404, busy 409. Terminal.
    Rejected,
    /// The request arrived after its `expiresAt` and was not executed (code 410). Terminal.
    Expired,
}

impl ResponseStatus {
    /// Whether no other status follows this one for the same request.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Rejected | Self::Expired)
    }

    /// The usual code of the status: 202, 202, 200, 500, 400, 410.
    pub fn default_code(self) -> u16 {
        match self {
            Self::Accepted | Self::InProgress => 202,
            Self::Succeeded => 200,
            Self::Failed => 500,
            Self::Rejected => 400,
            Self::Expired => 410,
        }
    }
}

/// `rpc/res/{requestId}` (device → operator): the device's answer to a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MethodResponse {
    /// Schema version, always 1.
    pub v: V1,
    /// Request id; equals the id in the topic.
    pub id: String,
    /// Sequence number within the boot, as for reported messages.
    pub seq: u64,
    /// Status of the call.
    pub status: ResponseStatus,
    /// HTTP-like code: 200, 202, 400, 404, 409, 410 or 500.
    pub code: u16,
    /// Progress in percent (0-100), for InProgress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// Message for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The method's result, any JSON value, on a final response (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Boot counter of the device when it sent the response.
    pub boot: u64,
    /// When the device sent the response (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

impl MethodResponse {
    /// A response with the status's default code.
    pub fn new(id: impl Into<String>, status: ResponseStatus, boot: u64, seq: u64) -> Self {
        Self {
            v: V1,
            id: id.into(),
            seq,
            status,
            code: status.default_code(),
            progress: None,
            message: None,
            payload: None,
            boot,
            ts: None,
        }
    }

    /// Position of the response: `(boot, seq)`.
    pub fn cursor(&self) -> Cursor {
        Cursor { boot: self.boot, seq: self.seq }
    }
}

impl sealed::Sealed for MethodResponse {}
impl Message for MethodResponse {
    const KIND: &'static str = "response";
    const RETAINED: bool = false;

    fn validate(&self) -> Result<(), DecodeError> {
        validate_request_id(&self.id)?;
        validate_counter("boot", self.boot)?;
        validate_counter("seq", self.seq)?;
        if !(100..=599).contains(&self.code) {
            return Err(DecodeError::InvalidField(format!(
                "code {} is not an HTTP-like status code",
                self.code
            )));
        }
        if let Some(progress) = self.progress.filter(|p| *p > 100) {
            return Err(DecodeError::InvalidField(format!("progress {progress} is above 100")));
        }
        validate_text("message", self.message.as_deref(), crate::contract::MAX_MESSAGE_BYTES)?;
        validate_optional_timestamp("ts", self.ts.as_deref())
    }

    fn check_topic(&self, topic: &ParsedTopic) -> Result<(), DecodeError> {
        match topic {
            ParsedTopic::Response { request_id, .. } => {
                check_same("id", &self.id, request_id.as_str())
            }
            other => check_kind(Self::KIND, other),
        }
    }
}

/// `_operator/session` (operator → every device, retained): the operator's current session.
/// A device that sees a session other than the first one it saw in its boot sends a full
/// report and its latest answers again, so nothing the operator lost in a restart, failover or
/// broker outage stays lost.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorSession {
    /// Schema version, always 1.
    pub v: V1,
    /// The session's nonce: 1-64 of `[A-Za-z0-9-]`, new for every operator session.
    pub session: String,
    /// When the operator started the session (RFC 3339).
    pub issued_at: String,
    /// Milliseconds over which the fleet should spread its resyncs (each device picks its
    /// moment from its id), so the operator and the broker are not flooded at once. Absent: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_within_ms: Option<u64>,
}

/// Longest resync spread an operator may ask for: 10 minutes.
pub const MAX_RESYNC_WITHIN_MS: u64 = 600_000;

impl OperatorSession {
    /// A session announcement.
    pub fn new(session: impl Into<String>, issued_at: impl Into<String>) -> Self {
        Self { v: V1, session: session.into(), issued_at: issued_at.into(), resync_within_ms: None }
    }

    /// When the device `device_id` should resync after this announcement: a moment within
    /// the spread, the same for the same id (FNV-1a of the id), so a fleet spreads evenly.
    pub fn resync_delay_ms(&self, device_id: &str) -> u64 {
        let window = self.resync_within_ms.unwrap_or(0).min(MAX_RESYNC_WITHIN_MS);
        if window == 0 {
            return 0;
        }
        let hash = device_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        hash % window
    }
}

impl sealed::Sealed for OperatorSession {}
impl Message for OperatorSession {
    const KIND: &'static str = "session";
    const RETAINED: bool = true;

    fn validate(&self) -> Result<(), DecodeError> {
        // Same alphabet and length as a request id.
        validate_request_id(&self.session).map_err(|_| {
            DecodeError::InvalidField(format!(
                "session {:?} is not 1-64 of [A-Za-z0-9-]",
                self.session
            ))
        })?;
        if self.resync_within_ms.is_some_and(|ms| ms > MAX_RESYNC_WITHIN_MS) {
            return Err(DecodeError::InvalidField(format!(
                "resyncWithinMs is more than {MAX_RESYNC_WITHIN_MS}"
            )));
        }
        validate_timestamp("issuedAt", &self.issued_at)
    }

    fn check_topic(&self, _topic: &ParsedTopic) -> Result<(), DecodeError> {
        // It has a topic of its own, which is not a device topic.
        Err(DecodeError::InvalidField("a session message does not belong on a device topic".into()))
    }
}

/// Whether a device is connected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    /// Connected.
    Online,
    /// Disconnected (gracefully, or through its Last Will).
    Offline,
}

/// MQTT protocol version a device connects with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MqttVersion {
    /// MQTT 5 (`"5"`).
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1 (`"3.1.1"`).
    #[serde(rename = "3.1.1")]
    V311,
}

impl MqttVersion {
    /// How the version is written: `5` or `3.1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V5 => "5",
            Self::V311 => "3.1.1",
        }
    }
}

impl std::fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MqttVersion {
    type Err = String;

    /// Parses `5` (also `5.0`, `v5`) or `3.1.1` (also `311`, `4`, `v4`: protocol level 4).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "5" | "5.0" | "v5" => Ok(Self::V5),
            "3.1.1" | "311" | "4" | "v4" => Ok(Self::V311),
            other => Err(format!("unsupported MQTT version {other:?} (use 5 or 3.1.1)")),
        }
    }
}

/// `presence` (device and its Last Will, retained): whether the device is connected.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    /// Schema version, always 1.
    pub v: V1,
    /// Online or offline.
    pub state: PresenceState,
    /// Boot counter of the device.
    pub boot: u64,
    /// Connection counter within the boot (1 for the first connection of a boot).
    pub conn: u64,
    /// When the device sent the message (RFC 3339); usually absent in a Last Will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    /// Firmware version of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Methods the device supports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// MQTT version of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttVersion>,
    /// Why the device is in this state, for example `connected`, `reboot`, `shutdown`, `lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Presence {
    /// A presence message with only the required fields.
    pub fn new(state: PresenceState, boot: u64, conn: u64) -> Self {
        Self {
            v: V1,
            state,
            boot,
            conn,
            ts: None,
            firmware: None,
            methods: Vec::new(),
            mqtt: None,
            reason: None,
        }
    }

    /// Position of the message: `(boot, conn)`.
    pub fn cursor(&self) -> PresenceCursor {
        PresenceCursor { boot: self.boot, conn: self.conn }
    }
}

impl sealed::Sealed for Presence {}
impl Message for Presence {
    const KIND: &'static str = "presence";
    const RETAINED: bool = true;

    fn validate(&self) -> Result<(), DecodeError> {
        validate_counter("boot", self.boot)?;
        validate_counter("conn", self.conn)?;
        validate_text("reason", self.reason.as_deref(), crate::contract::MAX_REASON_BYTES)?;
        validate_text("firmware", self.firmware.as_deref(), crate::contract::MAX_REASON_BYTES)?;
        for method in &self.methods {
            validate_method(method)?;
        }
        validate_optional_timestamp("ts", self.ts.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::examples::{self, EPOCH, REQUEST_ID};
    use crate::ids::{DeviceId, RequestId};

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// Asserts that `message` serializes to `example` and that `example` deserializes to it.
    fn assert_round_trip<M: Message + PartialEq + std::fmt::Debug>(message: &M, example: &str) {
        let expected: Value = serde_json::from_str(example).unwrap();
        assert_eq!(serde_json::to_value(message).unwrap(), expected);
        assert_eq!(&serde_json::from_str::<M>(example).unwrap(), message);
        assert_eq!(message.validate(), Ok(()));
        assert_eq!(expected["v"], json!(1));
    }

    #[test]
    fn a_fleet_spreads_its_resyncs_over_the_window_each_device_at_its_own_moment() {
        let mut announcement = OperatorSession::new("s1", "2025-05-01T12:00:00Z");
        assert_eq!(announcement.resync_delay_ms("d-1"), 0, "no spread asked: at once");
        announcement.resync_within_ms = Some(2000);
        let delays: Vec<u64> =
            (0..1000).map(|i| announcement.resync_delay_ms(&format!("plant.d-{i}"))).collect();
        assert!(delays.iter().all(|d| *d < 2000));
        assert_eq!(delays[7], announcement.resync_delay_ms("plant.d-7"), "stable per id");
        // Roughly even: every quarter of the window gets a fair share.
        for quarter in 0..4 {
            let count = delays.iter().filter(|d| **d / 500 == quarter).count();
            assert!((150..350).contains(&count), "quarter {quarter}: {count}");
        }
        announcement.resync_within_ms = Some(MAX_RESYNC_WITHIN_MS + 1);
        assert!(announcement.validate().is_err(), "more than ten minutes is refused");
    }

    #[test]
    fn desired_round_trip() {
        let doc = DesiredDocument::new(
            EPOCH,
            3,
            "2025-05-01T12:00:00Z",
            object(
                json!({"telemetryIntervalSeconds": 30, "led": {"color": "green", "blink": false}}),
            ),
        );
        assert_round_trip(&doc, examples::DESIRED);
        assert_eq!(
            AppliedVersion::of(&doc),
            AppliedVersion { epoch: EPOCH.into(), version: 3, revision: 0 }
        );
    }

    #[test]
    fn reported_round_trips() {
        let mut patch = ReportedMessage::patch(
            7,
            12,
            object(
                json!({"telemetryIntervalSeconds": 30, "led": {"color": "green"}, "lastError": null}),
            ),
        );
        patch.applied = Some(AppliedVersion { epoch: EPOCH.into(), version: 3, revision: 0 });
        patch.ts = Some("2025-05-01T12:00:01Z".into());
        assert_round_trip(&patch, examples::REPORTED_PATCH);
        assert_eq!(patch.cursor(), Cursor { boot: 7, seq: 12 });

        let mut rebooting = ReportedMessage::patch(
            7,
            14,
            object(json!({"reboot": {"status": "rebooting", "requestId": REQUEST_ID}})),
        );
        rebooting.ts = Some("2025-05-01T12:01:05Z".into());
        assert_round_trip(&rebooting, examples::REPORTED_REBOOTING);

        let mut full = ReportedMessage::full(
            8,
            1,
            object(json!({
                "firmwareVersion": "1.4.2",
                "lastReboot": "2025-05-01T12:01:10Z",
                "reboot": {"status": "done", "requestId": REQUEST_ID},
                "telemetryIntervalSeconds": 30,
                "led": {"color": "green"}
            })),
        );
        full.applied = Some(AppliedVersion { epoch: EPOCH.into(), version: 3, revision: 0 });
        full.ts = Some("2025-05-01T12:01:12Z".into());
        assert_round_trip(&full, examples::REPORTED_FULL);
        assert!(full.full);
    }

    #[test]
    fn reported_optional_fields_default() {
        let minimal: ReportedMessage = serde_json::from_str(r#"{"v":1,"boot":1,"seq":1}"#).unwrap();
        assert_eq!(minimal, ReportedMessage::patch(1, 1, Map::new()));
        assert_eq!(
            serde_json::to_value(&minimal).unwrap(),
            json!({"v": 1, "boot": 1, "seq": 1, "full": false, "reported": {}})
        );
    }

    #[test]
    fn get_round_trip() {
        assert_round_trip(&TwinGet::default(), examples::GET);
        assert_eq!(serde_json::to_string(&TwinGet { v: V1 }).unwrap(), r#"{"v":1}"#);
    }

    #[test]
    fn request_round_trip() {
        let request = MethodRequest::new(
            REQUEST_ID,
            "reboot",
            object(json!({"delaySeconds": 5})),
            "2025-05-01T12:01:00Z",
            "2025-05-01T12:01:30Z",
        );
        assert_round_trip(&request, examples::REQUEST);
    }

    #[test]
    fn response_round_trips() {
        let mut accepted = MethodResponse::new(REQUEST_ID, ResponseStatus::Accepted, 7, 13);
        accepted.message = Some("rebooting in 5s".into());
        accepted.ts = Some("2025-05-01T12:01:00Z".into());
        assert_round_trip(&accepted, examples::RESPONSE_ACCEPTED);
        assert_eq!(accepted.code, 202);

        let mut succeeded = MethodResponse::new(REQUEST_ID, ResponseStatus::Succeeded, 8, 2);
        succeeded.progress = Some(100);
        succeeded.message = Some("rebooted".into());
        succeeded.ts = Some("2025-05-01T12:01:12Z".into());
        assert_round_trip(&succeeded, examples::RESPONSE_SUCCEEDED);
        assert_eq!(succeeded.cursor(), Cursor { boot: 8, seq: 2 });

        let mut expired = MethodResponse::new(
            "7d1e5c2a-4b3f-4e8d-9a6c-5f4e3d2c1b0a",
            ResponseStatus::Expired,
            8,
            3,
        );
        expired.message = Some("expired at 2025-05-01T12:01:40Z".into());
        assert_round_trip(&expired, examples::RESPONSE_EXPIRED);
        assert_eq!(expired.code, 410);

        let id = "5a8e2f1c-7b3d-4c6a-9e0f-2d1c4b3a5e6f";
        let mut running = MethodResponse::new(id, ResponseStatus::InProgress, 8, 21);
        running.progress = Some(50);
        running.message = Some("collecting logs".into());
        running.ts = Some("2025-05-01T12:05:02Z".into());
        assert_round_trip(&running, examples::RESPONSE_IN_PROGRESS);

        let mut result = MethodResponse::new(id, ResponseStatus::Succeeded, 8, 22);
        result.message = Some("diagnostics collected".into());
        result.payload = Some(json!({"files": 3, "boot": 8}));
        result.ts = Some("2025-05-01T12:05:03Z".into());
        assert_round_trip(&result, examples::RESPONSE_RESULT);
    }

    #[test]
    fn response_statuses() {
        let all = [
            (ResponseStatus::Accepted, "Accepted", 202, false),
            (ResponseStatus::InProgress, "InProgress", 202, false),
            (ResponseStatus::Succeeded, "Succeeded", 200, true),
            (ResponseStatus::Failed, "Failed", 500, true),
            (ResponseStatus::Rejected, "Rejected", 400, true),
            (ResponseStatus::Expired, "Expired", 410, true),
        ];
        for (status, name, code, terminal) in all {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<ResponseStatus>(json!(name)).unwrap(), status);
            assert_eq!(status.default_code(), code);
            assert_eq!(status.is_terminal(), terminal);
        }
        assert!(serde_json::from_value::<ResponseStatus>(json!("accepted")).is_err());
    }

    #[test]
    fn presence_round_trips() {
        let mut online = Presence::new(PresenceState::Online, 8, 1);
        online.ts = Some("2025-05-01T12:01:11Z".into());
        online.firmware = Some("1.4.2".into());
        online.methods =
            ["reboot", "factoryReset", "setLed", "collectDiagnostics"].map(String::from).to_vec();
        online.mqtt = Some(MqttVersion::V5);
        online.reason = Some("connected".into());
        assert_round_trip(&online, examples::PRESENCE_ONLINE);
        assert_eq!(online.cursor(), PresenceCursor { boot: 8, conn: 1 });

        let mut offline = Presence::new(PresenceState::Offline, 7, 2);
        offline.ts = Some("2025-05-01T12:01:06Z".into());
        offline.reason = Some("reboot".into());
        assert_round_trip(&offline, examples::PRESENCE_OFFLINE);

        let mut will = Presence::new(PresenceState::Offline, 7, 2);
        will.reason = Some("lost".into());
        assert_round_trip(&will, examples::PRESENCE_LAST_WILL);
    }

    #[test]
    fn presence_enums() {
        assert_eq!(serde_json::to_value(PresenceState::Online).unwrap(), json!("online"));
        assert_eq!(serde_json::to_value(PresenceState::Offline).unwrap(), json!("offline"));
        assert_eq!(serde_json::to_value(MqttVersion::V5).unwrap(), json!("5"));
        assert_eq!(serde_json::to_value(MqttVersion::V311).unwrap(), json!("3.1.1"));
        assert_eq!(
            serde_json::from_value::<MqttVersion>(json!("3.1.1")).unwrap(),
            MqttVersion::V311
        );
        assert!(serde_json::from_value::<MqttVersion>(json!(5)).is_err());
        assert!(serde_json::from_value::<PresenceState>(json!("Online")).is_err());
    }

    #[test]
    fn kinds_and_retain_flags_match_topics() {
        let t = crate::topic::Topics::default();
        let cases = [
            (t.desired("d"), DesiredDocument::KIND, DesiredDocument::RETAINED),
            (t.reported("d"), ReportedMessage::KIND, ReportedMessage::RETAINED),
            (t.get("d"), TwinGet::KIND, TwinGet::RETAINED),
            (t.request("d", "reboot", "r1"), MethodRequest::KIND, MethodRequest::RETAINED),
            (t.response("d", "r1"), MethodResponse::KIND, MethodResponse::RETAINED),
            (t.presence("d"), Presence::KIND, Presence::RETAINED),
        ];
        let retained: Vec<_> = cases.iter().filter(|c| c.2).map(|c| c.1).collect();
        assert_eq!(retained, vec!["desired", "presence"]);
        for (topic, kind, retained) in cases {
            let parsed = t.parse(&topic).unwrap();
            assert_eq!((parsed.kind(), parsed.retained()), (kind, retained), "{topic}");
        }
    }

    #[test]
    fn v1_accepts_only_one() {
        assert_eq!(serde_json::to_value(V1).unwrap(), json!(1));
        assert_eq!(serde_json::from_value::<V1>(json!(1)).unwrap(), V1);
        assert!(serde_json::from_value::<V1>(json!(2)).is_err());
        assert!(serde_json::from_value::<V1>(json!("1")).is_err());
        assert!(serde_json::from_str::<TwinGet>("{}").is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let get: TwinGet = serde_json::from_str(r#"{"v":1,"future":true}"#).unwrap();
        assert_eq!(get, TwinGet::default());
        let presence: Presence =
            serde_json::from_str(r#"{"v":1,"state":"online","boot":1,"conn":1,"battery":93}"#)
                .unwrap();
        assert_eq!(presence, Presence::new(PresenceState::Online, 1, 1));
    }

    #[test]
    fn validation_rejects_bad_fields() {
        let invalid = |r: Result<(), DecodeError>| matches!(r, Err(DecodeError::InvalidField(_)));

        let mut doc = DesiredDocument::new(EPOCH, 1, "2025-05-01T12:00:00Z", Map::new());
        doc.epoch.clear();
        assert!(invalid(doc.validate()));
        let doc = DesiredDocument::new(EPOCH, -1, "2025-05-01T12:00:00Z", Map::new());
        assert!(invalid(doc.validate()));
        let doc = DesiredDocument::new(EPOCH, 1, "now", Map::new());
        assert!(invalid(doc.validate()));

        let mut reported = ReportedMessage::patch(1, 1, Map::new());
        reported.ts = Some("12:00".into());
        assert!(invalid(reported.validate()));
        reported.ts = None;
        reported.applied = Some(AppliedVersion { epoch: String::new(), version: 1, revision: 0 });
        assert!(invalid(reported.validate()));

        let request = |id: &str, method: &str, expires: &str| {
            MethodRequest::new(id, method, Map::new(), "2025-05-01T12:01:00Z", expires)
        };
        assert_eq!(request(REQUEST_ID, "reboot", "2025-05-01T12:01:30Z").validate(), Ok(()));
        assert!(invalid(request("bad id", "reboot", "2025-05-01T12:01:30Z").validate()));
        assert!(invalid(request(REQUEST_ID, "Reboot", "2025-05-01T12:01:30Z").validate()));
        assert!(invalid(request(REQUEST_ID, "reboot", "soon").validate()));

        let mut response = MethodResponse::new(REQUEST_ID, ResponseStatus::InProgress, 1, 1);
        response.progress = Some(101);
        assert!(invalid(response.validate()));
        response.progress = Some(50);
        assert_eq!(response.validate(), Ok(()));
        response.code = 42;
        assert!(invalid(response.validate()));
        response.code = 202;
        response.id = "a/b".into();
        assert!(invalid(response.validate()));

        let mut presence = Presence::new(PresenceState::Online, 1, 1);
        presence.methods = vec!["reboot".into(), "Bad Method".into()];
        assert!(invalid(presence.validate()));
    }

    fn d1() -> DeviceId {
        DeviceId::new("d1").unwrap()
    }

    #[test]
    fn counters_above_2_pow_53_are_invalid() {
        let invalid = |r: Result<(), DecodeError>| matches!(r, Err(DecodeError::InvalidField(_)));
        let max = crate::contract::MAX_COUNTER;
        assert_eq!(ReportedMessage::patch(max, max, Map::new()).validate(), Ok(()));
        for (boot, seq) in [(max + 1, 1), (1, max + 1), (u64::MAX, 1), (1 << 63, 1)] {
            let error = ReportedMessage::patch(boot, seq, Map::new()).validate();
            assert!(invalid(error.clone()), "({boot}, {seq}): {error:?}");
        }
        assert!(invalid(Presence::new(PresenceState::Online, 1, u64::MAX).validate()));
        assert!(invalid(
            MethodResponse::new("r1", ResponseStatus::Accepted, u64::MAX, 1).validate()
        ));
    }

    #[test]
    fn topic_checks() {
        let request_topic = ParsedTopic::Request {
            device_id: d1(),
            method: "reboot".into(),
            request_id: RequestId::new(REQUEST_ID).unwrap(),
        };
        let request = MethodRequest::new(
            REQUEST_ID,
            "reboot",
            Map::new(),
            "2025-05-01T12:01:00Z",
            "2025-05-01T12:01:30Z",
        );
        assert_eq!(request.check_topic(&request_topic), Ok(()));
        let mut other_id = request.clone();
        other_id.id = "other".into();
        assert!(matches!(other_id.check_topic(&request_topic), Err(DecodeError::InvalidField(_))));
        let mut other_method = request.clone();
        other_method.method = "identify".into();
        assert!(matches!(
            other_method.check_topic(&request_topic),
            Err(DecodeError::InvalidField(_))
        ));

        let response_topic = ParsedTopic::Response {
            device_id: d1(),
            request_id: RequestId::new(REQUEST_ID).unwrap(),
        };
        let response = MethodResponse::new(REQUEST_ID, ResponseStatus::Accepted, 1, 1);
        assert_eq!(response.check_topic(&response_topic), Ok(()));
        let other = MethodResponse::new("other", ResponseStatus::Accepted, 1, 1);
        assert!(matches!(other.check_topic(&response_topic), Err(DecodeError::InvalidField(_))));
        assert!(matches!(response.check_topic(&request_topic), Err(DecodeError::InvalidField(_))));

        let presence_topic = ParsedTopic::Presence { device_id: d1() };
        let presence = Presence::new(PresenceState::Online, 1, 1);
        assert_eq!(presence.check_topic(&presence_topic), Ok(()));
        assert!(matches!(
            TwinGet::default().check_topic(&presence_topic),
            Err(DecodeError::InvalidField(_))
        ));
    }
}
