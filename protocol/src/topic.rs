//! MQTT topic names of the contract: building them, the subscription filters, and parsing
//! incoming topics.

use crate::contract::DEFAULT_ROOT;
use crate::error::DecodeError;
use crate::ids::{DeviceId, RequestId, validate_method};

/// Builds and parses the topics under one root (default [`DEFAULT_ROOT`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Topics {
    root: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

impl Topics {
    /// Topics under `root` (trailing '/' removed; must not contain the wildcards '+' or '#').
    pub fn new(root: impl Into<String>) -> Self {
        let mut root = root.into();
        while root.ends_with('/') {
            root.pop();
        }
        Self { root }
    }

    /// The topic root, for example `kubetwin/v1`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `{root}/{id}/twin/desired`: desired document, operator → device, retained.
    pub fn desired(&self, device_id: &str) -> String {
        format!("{}/{device_id}/twin/desired", self.root)
    }

    /// `{root}/{id}/twin/reported`: reported properties, device → operator.
    pub fn reported(&self, device_id: &str) -> String {
        format!("{}/{device_id}/twin/reported", self.root)
    }

    /// `{root}/{id}/twin/get`: request to republish the desired document, device → operator.
    pub fn get(&self, device_id: &str) -> String {
        format!("{}/{device_id}/twin/get", self.root)
    }

    /// `{root}/{id}/rpc/req/{method}/{requestId}`: method request, operator → device.
    pub fn request(&self, device_id: &str, method: &str, request_id: &str) -> String {
        format!("{}/{device_id}/rpc/req/{method}/{request_id}", self.root)
    }

    /// `{root}/{id}/rpc/res/{requestId}`: method response, device → operator.
    pub fn response(&self, device_id: &str, request_id: &str) -> String {
        response_topic(&self.root, device_id, request_id)
    }

    /// `{root}/{id}/presence`: presence (and Last Will) of the device, retained.
    pub fn presence(&self, device_id: &str) -> String {
        format!("{}/{device_id}/presence", self.root)
    }

    /// Operator filter for every device's reported messages: `{root}/+/twin/reported`.
    pub fn reported_filter(&self) -> String {
        format!("{}/+/twin/reported", self.root)
    }

    /// Operator filter for every device's get requests: `{root}/+/twin/get`.
    pub fn get_filter(&self) -> String {
        format!("{}/+/twin/get", self.root)
    }

    /// Operator filter for every device's method responses: `{root}/+/rpc/res/+`.
    pub fn response_filter(&self) -> String {
        format!("{}/+/rpc/res/+", self.root)
    }

    /// Operator filter for every device's presence: `{root}/+/presence`.
    pub fn presence_filter(&self) -> String {
        format!("{}/+/presence", self.root)
    }

    /// `{root}/_operator/session` (operator → every device, retained): the operator's current
    /// session. The level `_operator` cannot be a device id (ids have no `_`).
    pub fn operator_session(&self) -> String {
        format!("{}/{OPERATOR_LEVEL}/session", self.root)
    }

    /// Operator filter for every device's desired document: `{root}/+/twin/desired` (the
    /// operator watches the documents it owns, to notice when anything else overwrote one).
    pub fn desired_filter(&self) -> String {
        format!("{}/+/twin/desired", self.root)
    }

    /// Device filter for its method requests: `{root}/{id}/rpc/req/#`.
    pub fn request_filter(&self, device_id: &str) -> String {
        format!("{}/{device_id}/rpc/req/#", self.root)
    }

    /// Every filter the operator subscribes to (QoS 1).
    pub fn operator_subscriptions(&self) -> Vec<String> {
        vec![
            self.reported_filter(),
            self.get_filter(),
            self.response_filter(),
            self.presence_filter(),
            self.desired_filter(),
        ]
    }

    /// Every filter a device subscribes to (QoS 1).
    pub fn device_subscriptions(&self, device_id: &str) -> Vec<String> {
        vec![self.desired(device_id), self.request_filter(device_id), self.operator_session()]
    }

    /// Parses a topic under this root, validating the ids in it.
    ///
    /// Fails with [`DecodeError::UnknownTopic`] for another root or shape, and with
    /// [`DecodeError::InvalidField`] for a known shape with an invalid id.
    pub fn parse(&self, topic: &str) -> Result<ParsedTopic, DecodeError> {
        let rest = topic
            .strip_prefix(self.root.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or(DecodeError::UnknownTopic)?;
        let parts: Vec<&str> = rest.split('/').collect();
        // The shape decides what the topic is; then every id in it must be valid.
        let parsed = match parts.as_slice() {
            [id, "twin", "desired"] => ParsedTopic::Desired { device_id: DeviceId::new(id)? },
            [id, "twin", "reported"] => ParsedTopic::Reported { device_id: DeviceId::new(id)? },
            [id, "twin", "get"] => ParsedTopic::Get { device_id: DeviceId::new(id)? },
            [id, "rpc", "req", method, request_id] => {
                validate_method(method)?;
                let request_id = RequestId::new(request_id)?;
                ParsedTopic::Request {
                    device_id: DeviceId::new(id)?,
                    method: (*method).to_owned(),
                    request_id,
                }
            }
            [id, "rpc", "res", request_id] => {
                let request_id = RequestId::new(request_id)?;
                ParsedTopic::Response { device_id: DeviceId::new(id)?, request_id }
            }
            [id, "presence"] => ParsedTopic::Presence { device_id: DeviceId::new(id)? },
            _ => return Err(DecodeError::UnknownTopic),
        };
        Ok(parsed)
    }
}

/// `{root}/{id}/rpc/res/{requestId}`: where a device answers a request (MQTT 5 Response Topic).
pub fn response_topic(root: &str, device_id: &str, request_id: &str) -> String {
    format!("{}/{device_id}/rpc/res/{request_id}", root.trim_end_matches('/'))
}

/// The topic level of the operator's own topics: not a valid device id, so it cannot collide.
pub const OPERATOR_LEVEL: &str = "_operator";

/// A topic of the contract, with the ids it carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParsedTopic {
    /// `{root}/{id}/twin/desired`.
    Desired {
        /// Device id.
        device_id: DeviceId,
    },
    /// `{root}/{id}/twin/reported`.
    Reported {
        /// Device id.
        device_id: DeviceId,
    },
    /// `{root}/{id}/twin/get`.
    Get {
        /// Device id.
        device_id: DeviceId,
    },
    /// `{root}/{id}/rpc/req/{method}/{requestId}`.
    Request {
        /// Device id.
        device_id: DeviceId,
        /// Method name.
        method: String,
        /// Request id.
        request_id: RequestId,
    },
    /// `{root}/{id}/rpc/res/{requestId}`.
    Response {
        /// Device id.
        device_id: DeviceId,
        /// Request id.
        request_id: RequestId,
    },
    /// `{root}/{id}/presence`.
    Presence {
        /// Device id.
        device_id: DeviceId,
    },
}

impl ParsedTopic {
    /// The device id in the topic.
    pub fn device_id(&self) -> &DeviceId {
        match self {
            Self::Desired { device_id }
            | Self::Reported { device_id }
            | Self::Get { device_id }
            | Self::Request { device_id, .. }
            | Self::Response { device_id, .. }
            | Self::Presence { device_id } => device_id,
        }
    }

    /// Short label of the topic kind (the same as the [`Message::KIND`](crate::Message::KIND) it carries).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Desired { .. } => "desired",
            Self::Reported { .. } => "reported",
            Self::Get { .. } => "get",
            Self::Request { .. } => "request",
            Self::Response { .. } => "response",
            Self::Presence { .. } => "presence",
        }
    }

    /// Whether messages on this topic are published with the retain flag.
    pub fn retained(&self) -> bool {
        matches!(self, Self::Desired { .. } | Self::Presence { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "plant-1.sensor-42";
    const REQ: &str = "3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d";

    #[test]
    fn builds_every_topic() {
        let t = Topics::default();
        assert_eq!(t.root(), "kubetwin/v1");
        assert_eq!(t.desired(DEV), "kubetwin/v1/plant-1.sensor-42/twin/desired");
        assert_eq!(t.reported(DEV), "kubetwin/v1/plant-1.sensor-42/twin/reported");
        assert_eq!(t.get(DEV), "kubetwin/v1/plant-1.sensor-42/twin/get");
        assert_eq!(
            t.request(DEV, "reboot", REQ),
            "kubetwin/v1/plant-1.sensor-42/rpc/req/reboot/3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d"
        );
        assert_eq!(
            t.response(DEV, REQ),
            "kubetwin/v1/plant-1.sensor-42/rpc/res/3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d"
        );
        assert_eq!(t.presence(DEV), "kubetwin/v1/plant-1.sensor-42/presence");
        assert_eq!(response_topic("kubetwin/v1", DEV, REQ), t.response(DEV, REQ));
        assert_eq!(response_topic("kubetwin/v1/", DEV, REQ), t.response(DEV, REQ));
    }

    #[test]
    fn subscription_filters() {
        let t = Topics::new("site-a/kt/");
        assert_eq!(t.root(), "site-a/kt");
        assert_eq!(
            t.operator_subscriptions(),
            vec![
                "site-a/kt/+/twin/reported",
                "site-a/kt/+/twin/get",
                "site-a/kt/+/rpc/res/+",
                "site-a/kt/+/presence",
                "site-a/kt/+/twin/desired",
            ]
        );
        assert_eq!(
            t.device_subscriptions("d1"),
            vec![
                "site-a/kt/d1/twin/desired",
                "site-a/kt/d1/rpc/req/#",
                "site-a/kt/_operator/session"
            ]
        );
    }

    #[test]
    fn parses_what_it_builds() {
        let t = Topics::default();
        let dev = DeviceId::new(DEV).unwrap();
        let req = RequestId::new(REQ).unwrap();
        let cases = [
            (t.desired(DEV), ParsedTopic::Desired { device_id: dev.clone() }),
            (t.reported(DEV), ParsedTopic::Reported { device_id: dev.clone() }),
            (t.get(DEV), ParsedTopic::Get { device_id: dev.clone() }),
            (
                t.request(DEV, "reboot", REQ),
                ParsedTopic::Request {
                    device_id: dev.clone(),
                    method: "reboot".into(),
                    request_id: req.clone(),
                },
            ),
            (
                t.response(DEV, REQ),
                ParsedTopic::Response { device_id: dev.clone(), request_id: req.clone() },
            ),
            (t.presence(DEV), ParsedTopic::Presence { device_id: dev.clone() }),
        ];
        for (topic, expected) in cases {
            let parsed = t.parse(&topic);
            assert_eq!(parsed.as_ref(), Ok(&expected), "{topic}");
            assert_eq!(expected.device_id(), DEV);
        }
        let kinds: Vec<_> = [
            t.desired(DEV),
            t.reported(DEV),
            t.get(DEV),
            t.request(DEV, "reboot", REQ),
            t.response(DEV, REQ),
            t.presence(DEV),
        ]
        .iter()
        .map(|topic| t.parse(topic).map(|p| (p.kind(), p.retained())))
        .collect();
        assert_eq!(
            kinds,
            vec![
                Ok(("desired", true)),
                Ok(("reported", false)),
                Ok(("get", false)),
                Ok(("request", false)),
                Ok(("response", false)),
                Ok(("presence", true)),
            ]
        );
    }

    #[test]
    fn rejects_wrong_roots_and_shapes() {
        let t = Topics::default();
        for topic in [
            "",
            "kubetwin/v1",
            "kubetwin/v1/",
            "kubetwin/v2/d1/presence",
            "kubetwin/v10/d1/presence",
            "kubetwin/v1d1/presence",
            "other/kubetwin/v1/d1/presence",
            "kubetwin/v1/d1",
            "kubetwin/v1/d1/twin",
            "kubetwin/v1/d1/twin/desired/extra",
            "kubetwin/v1/d1/twin/unknown",
            "kubetwin/v1/d1/presence/",
            "kubetwin/v1/d1/rpc/req/reboot",
            "kubetwin/v1/d1/rpc/res",
            "kubetwin/v1/d1/rpc/res/r1/extra",
            "kubetwin/v1/a/b/presence",
        ] {
            assert_eq!(t.parse(topic), Err(DecodeError::UnknownTopic), "{topic:?}");
        }
        let custom = Topics::new("site-a/kt");
        assert_eq!(custom.parse("kubetwin/v1/d1/presence"), Err(DecodeError::UnknownTopic));
        assert_eq!(
            custom.parse("site-a/kt/d1/presence"),
            Ok(ParsedTopic::Presence { device_id: DeviceId::new("d1").unwrap() })
        );
    }

    #[test]
    fn rejects_bad_ids() {
        let t = Topics::default();
        for topic in [
            "kubetwin/v1//presence",
            "kubetwin/v1/Device1/presence",
            "kubetwin/v1/-d1/twin/reported",
            "kubetwin/v1/d1./twin/get",
            "kubetwin/v1/+/presence",
            "kubetwin/v1/#/twin/desired",
            "kubetwin/v1/d_1/rpc/res/r1",
            "kubetwin/v1/d1/rpc/req/Reboot/r1",
            "kubetwin/v1/d1/rpc/req/reboot/r_1",
            "kubetwin/v1/d1/rpc/req/reboot/",
            "kubetwin/v1/d1/rpc/res/r.1",
            "kubetwin/v1/d1/rpc/res/",
        ] {
            let result = t.parse(topic);
            assert!(matches!(result, Err(DecodeError::InvalidField(_))), "{topic:?}: {result:?}");
        }
        let long_id = "a".repeat(254);
        assert!(matches!(t.parse(&t.presence(&long_id)), Err(DecodeError::InvalidField(_))));
    }
}
