//! Direct methods: response codes, the `reboot` method, request expiry and MQTT 5 properties,
//! and the device's memory of recent request ids (so a repeated request is never executed twice).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::DecodeError;
use crate::message::{MethodRequest, MethodResponse};
use crate::timestamp::parse_rfc3339;

/// Code: the request completed (Succeeded).
pub const CODE_OK: u16 = 200;
/// Code: the request was accepted or is in progress (Accepted, InProgress).
pub const CODE_ACCEPTED: u16 = 202;
/// Code: invalid params (Rejected).
pub const CODE_BAD_REQUEST: u16 = 400;
/// Code: unknown method (Rejected).
pub const CODE_NOT_FOUND: u16 = 404;
/// Code: the device is busy with a conflicting request (Rejected).
pub const CODE_CONFLICT: u16 = 409;
/// Code: the request expired before it was executed (Expired).
pub const CODE_EXPIRED: u16 = 410;
/// Code: the request failed on the device (Failed).
pub const CODE_FAILED: u16 = 500;

/// Name of the reboot method.
pub const REBOOT_METHOD: &str = "reboot";
/// Name of the factory-reset method: the device wipes its state and restarts.
pub const FACTORY_RESET_METHOD: &str = "factoryReset";
/// How many request ids a device remembers by default.
pub const DEFAULT_REMEMBERED_REQUESTS: usize = 64;

/// Params of the `reboot` method: `{"delaySeconds": 5}`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RebootParams {
    /// Seconds the device waits after accepting before it reboots.
    #[serde(default)]
    pub delay_seconds: u32,
}

impl RebootParams {
    /// Reads the params of a reboot request, failing with [`DecodeError::InvalidField`] (answer 400).
    pub fn from_params(params: &Map<String, Value>) -> Result<Self, DecodeError> {
        Self::deserialize(Value::Object(params.clone()))
            .map_err(|e| DecodeError::InvalidField(format!("reboot params: {e}")))
    }

    /// The params as a JSON object, for [`MethodRequest::params`].
    pub fn to_params(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("delaySeconds".into(), Value::from(self.delay_seconds));
        map
    }
}

impl MethodRequest {
    /// Whether the request is past its `expiresAt` at `now_unix_millis` (an unreadable
    /// `expiresAt` counts as expired).
    pub fn is_expired(&self, now_unix_millis: i64) -> bool {
        parse_rfc3339(&self.expires_at).is_none_or(|expires| now_unix_millis > expires)
    }

    /// MQTT 5 Message Expiry Interval for publishing at `now_unix_millis`: whole seconds left
    /// until `expiresAt`, rounded up; `None` if already expired.
    pub fn expiry_interval_secs(&self, now_unix_millis: i64) -> Option<u32> {
        let expires = parse_rfc3339(&self.expires_at)?;
        let left = expires.checked_sub(now_unix_millis)?;
        if left <= 0 {
            return None;
        }
        let secs = (left + 999) / 1000;
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }

    /// MQTT 5 Correlation Data: the request id's bytes.
    pub fn correlation_data(&self) -> &[u8] {
        self.id.as_bytes()
    }
}

/// The device's memory of recent requests: the last response it sent for each id, so that a
/// repeated request is answered with it instead of being executed again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RecentRequests {
    capacity: usize,
    responses: VecDeque<MethodResponse>,
}

impl Default for RecentRequests {
    fn default() -> Self {
        Self::new(DEFAULT_REMEMBERED_REQUESTS)
    }
}

impl RecentRequests {
    /// A memory of the last `capacity` request ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), responses: VecDeque::new() }
    }

    /// The last response sent for `request_id`, if the device remembers it.
    pub fn last_response(&self, request_id: &str) -> Option<&MethodResponse> {
        self.responses.iter().find(|r| r.id == request_id)
    }

    /// Whether the device has seen `request_id`.
    pub fn contains(&self, request_id: &str) -> bool {
        self.last_response(request_id).is_some()
    }

    /// Records a response just sent; it replaces the previous one for the same id, and the
    /// oldest id is forgotten when the memory is full.
    pub fn record(&mut self, response: MethodResponse) {
        self.responses.retain(|r| r.id != response.id);
        self.responses.push_back(response);
        while self.responses.len() > self.capacity {
            self.responses.pop_front();
        }
    }

    /// The last responses sent, newest last, at most `count` of them.
    pub fn newest(&self, count: usize) -> impl Iterator<Item = &MethodResponse> {
        self.responses.iter().skip(self.responses.len().saturating_sub(count))
    }

    /// How many request ids are remembered.
    pub fn len(&self) -> usize {
        self.responses.len()
    }

    /// Whether no request id is remembered.
    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::examples::{self, REQUEST_ID};
    use crate::message::ResponseStatus;
    use crate::timestamp::parse_rfc3339;

    fn request() -> MethodRequest {
        serde_json::from_str(examples::REQUEST).unwrap()
    }

    fn at(ts: &str) -> i64 {
        parse_rfc3339(ts).unwrap()
    }

    #[test]
    fn codes_match_default_codes() {
        assert_eq!(ResponseStatus::Succeeded.default_code(), CODE_OK);
        assert_eq!(ResponseStatus::Accepted.default_code(), CODE_ACCEPTED);
        assert_eq!(ResponseStatus::InProgress.default_code(), CODE_ACCEPTED);
        assert_eq!(ResponseStatus::Rejected.default_code(), CODE_BAD_REQUEST);
        assert_eq!(ResponseStatus::Expired.default_code(), CODE_EXPIRED);
        assert_eq!(ResponseStatus::Failed.default_code(), CODE_FAILED);
        assert_eq!((CODE_NOT_FOUND, CODE_CONFLICT), (404, 409));
    }

    #[test]
    fn reboot_params() {
        let req = request();
        assert_eq!(req.method, REBOOT_METHOD);
        let params = RebootParams::from_params(&req.params).unwrap();
        assert_eq!(params, RebootParams { delay_seconds: 5 });
        assert_eq!(params.to_params(), req.params);
        assert_eq!(RebootParams::from_params(&Map::new()), Ok(RebootParams::default()));
        let Value::Object(bad) = json!({"delaySeconds": -1}) else { panic!("not an object") };
        assert_eq!(RebootParams::from_params(&bad).map_err(|e| e.reason()), Err("invalid"));
    }

    #[test]
    fn expiry() {
        let req = request();
        assert!(!req.is_expired(at("2025-05-01T12:01:00Z")));
        assert!(!req.is_expired(at("2025-05-01T12:01:30Z")));
        assert!(req.is_expired(at("2025-05-01T12:01:30Z") + 1));
        assert_eq!(req.expiry_interval_secs(at("2025-05-01T12:01:00Z")), Some(30));
        assert_eq!(req.expiry_interval_secs(at("2025-05-01T12:01:29.001Z")), Some(1));
        assert_eq!(req.expiry_interval_secs(at("2025-05-01T12:01:28.999Z")), Some(2));
        assert_eq!(req.expiry_interval_secs(at("2025-05-01T12:01:30Z")), None);
        assert_eq!(req.expiry_interval_secs(at("2025-05-01T13:00:00Z")), None);
        let mut unreadable = req.clone();
        unreadable.expires_at = "later".into();
        assert!(unreadable.is_expired(0));
        assert_eq!(unreadable.expiry_interval_secs(0), None);
        assert_eq!(req.correlation_data(), REQUEST_ID.as_bytes());
    }

    #[test]
    fn repeated_request_is_answered_from_memory() {
        let mut memory = RecentRequests::default();
        assert!(memory.is_empty());
        assert_eq!(memory.last_response(REQUEST_ID), None);

        memory.record(MethodResponse::new(REQUEST_ID, ResponseStatus::Accepted, 7, 13));
        memory.record(MethodResponse::new(REQUEST_ID, ResponseStatus::Succeeded, 8, 2));
        assert_eq!(memory.len(), 1);
        let last = memory.last_response(REQUEST_ID).map(|r| (r.status, r.code, r.boot));
        assert_eq!(last, Some((ResponseStatus::Succeeded, 200, 8)));
        assert!(memory.contains(REQUEST_ID));
        assert!(!memory.contains("other"));
    }

    #[test]
    fn memory_forgets_oldest_ids() {
        let mut memory = RecentRequests::new(2);
        for id in ["r1", "r2", "r3"] {
            memory.record(MethodResponse::new(id, ResponseStatus::Succeeded, 1, 1));
        }
        assert_eq!(memory.len(), 2);
        assert!(!memory.contains("r1"));
        assert!(memory.contains("r2") && memory.contains("r3"));
        // Updating r2 makes it the most recent, so r3 is forgotten next.
        memory.record(MethodResponse::new("r2", ResponseStatus::Failed, 1, 2));
        memory.record(MethodResponse::new("r4", ResponseStatus::Succeeded, 1, 3));
        assert!(memory.contains("r2") && memory.contains("r4") && !memory.contains("r3"));
        assert_eq!(RecentRequests::new(0).capacity, 1);
    }

    #[test]
    fn memory_survives_serialization() {
        let mut memory = RecentRequests::new(4);
        memory.record(MethodResponse::new(REQUEST_ID, ResponseStatus::Accepted, 7, 13));
        let saved = serde_json::to_string(&memory).unwrap();
        let restored: RecentRequests = serde_json::from_str(&saved).unwrap();
        assert_eq!(restored, memory);
    }
}
