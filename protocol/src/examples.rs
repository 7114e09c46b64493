//! Canonical example payloads, shared by the tests and checked against `docs/protocol.md`.

/// Device id used in the examples.
pub const DEVICE_ID: &str = "plant-1.sensor-42";
/// Request id used in the examples (a RebootRequest uid).
pub const REQUEST_ID: &str = "3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d";
/// Device uid (the epoch) used in the examples.
pub const EPOCH: &str = "6f1c2e4a-8d3b-4c5e-9f70-1a2b3c4d5e6f";

/// `twin/desired`.
pub const DESIRED: &str = r#"{
  "v": 1,
  "epoch": "6f1c2e4a-8d3b-4c5e-9f70-1a2b3c4d5e6f",
  "version": 3,
  "issuedAt": "2025-05-01T12:00:00Z",
  "desired": {
    "telemetryIntervalSeconds": 30,
    "led": { "color": "green", "blink": false }
  }
}"#;

/// `twin/reported`, a patch acknowledging desired version 3.
pub const REPORTED_PATCH: &str = r#"{
  "v": 1,
  "boot": 7,
  "seq": 12,
  "full": false,
  "applied": { "epoch": "6f1c2e4a-8d3b-4c5e-9f70-1a2b3c4d5e6f", "version": 3 },
  "ts": "2025-05-01T12:00:01Z",
  "reported": {
    "telemetryIntervalSeconds": 30,
    "led": { "color": "green" },
    "lastError": null
  }
}"#;

/// `twin/reported`, the patch before a reboot.
pub const REPORTED_REBOOTING: &str = r#"{
  "v": 1,
  "boot": 7,
  "seq": 14,
  "full": false,
  "ts": "2025-05-01T12:01:05Z",
  "reported": {
    "reboot": { "status": "rebooting", "requestId": "3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d" }
  }
}"#;

/// `twin/reported`, the first (full) message of the new boot after a reboot.
pub const REPORTED_FULL: &str = r#"{
  "v": 1,
  "boot": 8,
  "seq": 1,
  "full": true,
  "applied": { "epoch": "6f1c2e4a-8d3b-4c5e-9f70-1a2b3c4d5e6f", "version": 3 },
  "ts": "2025-05-01T12:01:12Z",
  "reported": {
    "firmwareVersion": "1.4.2",
    "lastReboot": "2025-05-01T12:01:10Z",
    "reboot": { "status": "done", "requestId": "3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d" },
    "telemetryIntervalSeconds": 30,
    "led": { "color": "green" }
  }
}"#;

/// `twin/get`.
pub const GET: &str = r#"{ "v": 1 }"#;

/// `rpc/req/reboot/{requestId}`.
pub const REQUEST: &str = r#"{
  "v": 1,
  "id": "3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d",
  "method": "reboot",
  "params": { "delaySeconds": 5 },
  "issuedAt": "2025-05-01T12:01:00Z",
  "expiresAt": "2025-05-01T12:01:30Z"
}"#;

/// `rpc/res/{requestId}`, Accepted.
pub const RESPONSE_ACCEPTED: &str = r#"{
  "v": 1,
  "id": "3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d",
  "seq": 13,
  "status": "Accepted",
  "code": 202,
  "message": "rebooting in 5s",
  "boot": 7,
  "ts": "2025-05-01T12:01:00Z"
}"#;

/// `rpc/res/{requestId}`, Succeeded after the reboot.
pub const RESPONSE_SUCCEEDED: &str = r#"{
  "v": 1,
  "id": "3b9f0c1e-2d4a-4f6b-8c7d-9e0f1a2b3c4d",
  "seq": 2,
  "status": "Succeeded",
  "code": 200,
  "progress": 100,
  "message": "rebooted",
  "boot": 8,
  "ts": "2025-05-01T12:01:12Z"
}"#;

/// `rpc/res/{requestId}`, Expired (another request, delivered too late).
pub const RESPONSE_EXPIRED: &str = r#"{
  "v": 1,
  "id": "7d1e5c2a-4b3f-4e8d-9a6c-5f4e3d2c1b0a",
  "seq": 3,
  "status": "Expired",
  "code": 410,
  "message": "expired at 2025-05-01T12:01:40Z",
  "boot": 8
}"#;

/// `presence`, online.
pub const PRESENCE_ONLINE: &str = r#"{
  "v": 1,
  "state": "online",
  "boot": 8,
  "conn": 1,
  "ts": "2025-05-01T12:01:11Z",
  "firmware": "1.4.2",
  "methods": ["reboot", "factoryReset", "setLed", "collectDiagnostics"],
  "mqtt": "5",
  "reason": "connected"
}"#;

/// `presence`, graceful offline before a reboot.
pub const PRESENCE_OFFLINE: &str = r#"{
  "v": 1,
  "state": "offline",
  "boot": 7,
  "conn": 2,
  "ts": "2025-05-01T12:01:06Z",
  "reason": "reboot"
}"#;

/// `presence`, the Last Will registered at CONNECT.
pub const PRESENCE_LAST_WILL: &str = r#"{
  "v": 1,
  "state": "offline",
  "boot": 7,
  "conn": 2,
  "reason": "lost"
}"#;

/// `_operator/session`.
pub const SESSION: &str = r#"{
  "v": 1,
  "session": "7d2a9c4e-51f0-4b8e-a3c6-0e9b8d7f6a51",
  "issuedAt": "2025-05-01T12:00:00Z",
  "resyncWithinMs": 2000
}"#;

/// `rpc/req/collectDiagnostics/{requestId}`: a named method with params.
pub const REQUEST_NAMED: &str = r#"{
  "v": 1,
  "id": "5a8e2f1c-7b3d-4c6a-9e0f-2d1c4b3a5e6f",
  "method": "collectDiagnostics",
  "params": { "level": "full" },
  "issuedAt": "2025-05-01T12:05:00Z",
  "expiresAt": "2025-05-01T12:05:30Z"
}"#;

/// `rpc/res/{requestId}`, InProgress with a percentage.
pub const RESPONSE_IN_PROGRESS: &str = r#"{
  "v": 1,
  "id": "5a8e2f1c-7b3d-4c6a-9e0f-2d1c4b3a5e6f",
  "seq": 21,
  "status": "InProgress",
  "code": 202,
  "progress": 50,
  "message": "collecting logs",
  "boot": 8,
  "ts": "2025-05-01T12:05:02Z"
}"#;

/// `rpc/res/{requestId}`, Succeeded with the method's result.
pub const RESPONSE_RESULT: &str = r#"{
  "v": 1,
  "id": "5a8e2f1c-7b3d-4c6a-9e0f-2d1c4b3a5e6f",
  "seq": 22,
  "status": "Succeeded",
  "code": 200,
  "message": "diagnostics collected",
  "payload": { "files": 3, "boot": 8 },
  "boot": 8,
  "ts": "2025-05-01T12:05:03Z"
}"#;

/// `twin/reported`, the first (full) message after a factory reset: nothing applied, only
/// what the device has by itself, and the reset's mark.
pub const REPORTED_AFTER_RESET: &str = r#"{
  "v": 1,
  "boot": 9,
  "seq": 1,
  "full": true,
  "ts": "2025-05-01T12:10:07Z",
  "reported": {
    "firmwareVersion": "1.4.2",
    "lastReboot": "2025-05-01T12:10:05Z",
    "reboot": { "status": "done", "requestId": "9c4b2a1d-3e5f-4a6b-8c7d-0e1f2a3b4c5d" },
    "factoryReset": { "lastReset": "2025-05-01T12:10:05Z" }
  }
}"#;

/// `twin/desired` with a firmware order.
pub const DESIRED_FIRMWARE: &str = r#"{
  "v": 1,
  "epoch": "6f1c2e4a-8d3b-4c5e-9f70-1a2b3c4d5e6f",
  "version": 4,
  "issuedAt": "2025-05-01T13:00:00Z",
  "desired": { "telemetryIntervalSeconds": 30 },
  "firmware": {
    "version": "1.5.0",
    "url": "http://firmware.plant-1.example/gw/1.5.0.bin",
    "sha256": "9f2c4b1a7e3d5c6b8a0f1e2d3c4b5a69788f7e6d5c4b3a291807f6e5d4c3b2a1",
    "sizeBytes": 4194304
  }
}"#;

/// `twin/reported`, a firmware download under way.
pub const REPORTED_FIRMWARE: &str = r#"{
  "v": 1,
  "boot": 7,
  "seq": 40,
  "full": false,
  "ts": "2025-05-01T13:00:04Z",
  "reported": {
    "firmware": {
      "current": "1.4.2",
      "target": "1.5.0",
      "state": "downloading",
      "progress": 40,
      "committed": true
    }
  }
}"#;

/// Every example with the message kind it is (`Message::KIND`).
pub const ALL: [(&str, &str); 19] = [
    ("desired", DESIRED),
    ("reported", REPORTED_PATCH),
    ("reported", REPORTED_REBOOTING),
    ("reported", REPORTED_FULL),
    ("get", GET),
    ("request", REQUEST),
    ("response", RESPONSE_ACCEPTED),
    ("response", RESPONSE_SUCCEEDED),
    ("response", RESPONSE_EXPIRED),
    ("presence", PRESENCE_ONLINE),
    ("presence", PRESENCE_OFFLINE),
    ("presence", PRESENCE_LAST_WILL),
    ("session", SESSION),
    ("request", REQUEST_NAMED),
    ("response", RESPONSE_IN_PROGRESS),
    ("response", RESPONSE_RESULT),
    ("reported", REPORTED_AFTER_RESET),
    ("desired", DESIRED_FIRMWARE),
    ("reported", REPORTED_FIRMWARE),
];
