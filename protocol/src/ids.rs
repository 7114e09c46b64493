//! Validation of the ids that appear in topics and payloads: device ids, method names and
//! request ids.

use std::{borrow::Borrow, fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DecodeError;

/// Longest device id (a Kubernetes DNS subdomain name).
pub const MAX_DEVICE_ID_LEN: usize = 253;
/// Longest method name.
pub const MAX_METHOD_LEN: usize = 64;
/// Longest request id.
pub const MAX_REQUEST_ID_LEN: usize = 64;

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Whether `id` is a valid device id: 1..=253 of `[a-z0-9.-]`, starting and ending with `[a-z0-9]`.
pub fn is_valid_device_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) if bytes.len() <= MAX_DEVICE_ID_LEN => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && bytes.iter().all(|&c| is_lower_alnum(c) || c == b'-' || c == b'.')
        }
        _ => false,
    }
}

/// Whether `method` is a valid method name: `[a-z][a-zA-Z0-9_-]{0,63}`.
pub fn is_valid_method(method: &str) -> bool {
    let bytes = method.as_bytes();
    match bytes.first() {
        Some(first) if bytes.len() <= MAX_METHOD_LEN => {
            first.is_ascii_lowercase()
                && bytes.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        }
        _ => false,
    }
}

/// Whether `id` is a valid request id: 1..=64 of `[A-Za-z0-9-]` (Kubernetes uids qualify).
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// Checks a device id, failing with [`DecodeError::InvalidField`].
pub fn validate_device_id(id: &str) -> Result<(), DecodeError> {
    if is_valid_device_id(id) {
        Ok(())
    } else {
        Err(DecodeError::InvalidField(format!(
            "device id {id:?} is not 1-253 of [a-z0-9.-] starting and ending with [a-z0-9]"
        )))
    }
}

/// Checks a method name, failing with [`DecodeError::InvalidField`].
pub fn validate_method(method: &str) -> Result<(), DecodeError> {
    if is_valid_method(method) {
        Ok(())
    } else {
        Err(DecodeError::InvalidField(format!(
            "method {method:?} does not match [a-z][a-zA-Z0-9_-]{{0,63}}"
        )))
    }
}

/// Checks a request id, failing with [`DecodeError::InvalidField`].
pub fn validate_request_id(id: &str) -> Result<(), DecodeError> {
    if is_valid_request_id(id) {
        Ok(())
    } else {
        Err(DecodeError::InvalidField(format!("request id {id:?} is not 1-64 of [A-Za-z0-9-]")))
    }
}

/// Defines a validated, cheaply cloned id type around `Arc<str>`.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $validate:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `id` and wraps it.
            pub fn new(id: &str) -> Result<Self, DecodeError> {
                $validate(id)?;
                Ok(Self(Arc::from(id)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = DecodeError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::new(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A device id that passed [`validate_device_id`]: the `{id}` level of every topic.
    DeviceId,
    validate_device_id
);

id_type!(
    /// A request id that passed [`validate_request_id`]: a request object's uid.
    RequestId,
    validate_request_id
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        for ok in ["a", "0", "plant-1.sensor-42", "default.thermostat", &"a".repeat(253)] {
            assert!(is_valid_device_id(ok), "{ok:?} should be valid");
            assert_eq!(validate_device_id(ok), Ok(()));
        }
        for bad in [
            "",
            "-a",
            "a-",
            ".a",
            "a.",
            "A",
            "a_b",
            "a/b",
            "a+b",
            "a#",
            "ä",
            " a",
            &"a".repeat(254),
        ] {
            assert!(!is_valid_device_id(bad), "{bad:?} should be invalid");
            assert_eq!(validate_device_id(bad).map_err(|e| e.reason()), Err("invalid"));
        }
    }

    #[test]
    fn methods() {
        for ok in ["reboot", "r", "setLed", "get_config-2", &format!("a{}", "b".repeat(63))] {
            assert!(is_valid_method(ok), "{ok:?} should be valid");
            assert_eq!(validate_method(ok), Ok(()));
        }
        for bad in [
            "",
            "Reboot",
            "1reboot",
            "-x",
            "re boot",
            "re/boot",
            "re.boot",
            &format!("a{}", "b".repeat(64)),
        ] {
            assert!(!is_valid_method(bad), "{bad:?} should be invalid");
            assert!(validate_method(bad).is_err());
        }
    }

    #[test]
    fn id_types_accept_only_valid_ids_and_compare_with_strings() {
        let device = DeviceId::new("plant-1.sensor-42").expect("valid");
        assert_eq!(device, "plant-1.sensor-42");
        assert_eq!(device.to_string(), "plant-1.sensor-42");
        assert_eq!(format!("{device:?}"), "\"plant-1.sensor-42\"");
        assert_eq!(DeviceId::new("Bad_Id").map_err(|e| e.reason()), Err("invalid"));
        assert_eq!(RequestId::new("a/b").map_err(|e| e.reason()), Err("invalid"));
        let json = serde_json::to_string(&device).expect("serializes");
        assert_eq!(json, "\"plant-1.sensor-42\"");
        assert_eq!(serde_json::from_str::<DeviceId>(&json).ok(), Some(device));
        assert!(serde_json::from_str::<DeviceId>("\"UPPER\"").is_err());
    }

    #[test]
    fn request_ids() {
        for ok in ["3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d", "A", "-", "req-1", &"x".repeat(64)] {
            assert!(is_valid_request_id(ok), "{ok:?} should be valid");
            assert_eq!(validate_request_id(ok), Ok(()));
        }
        for bad in ["", "a_b", "a/b", "a.b", "a+", "#", &"x".repeat(65)] {
            assert!(!is_valid_request_id(bad), "{bad:?} should be invalid");
            assert!(validate_request_id(bad).is_err());
        }
    }
}
