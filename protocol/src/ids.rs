//! Validation of the ids that appear in topics and payloads: device ids, method names and
//! request ids.

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
