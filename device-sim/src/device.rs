//! The pure per-device state machine: given connections, incoming messages and timers, it
//! decides what to publish and when to persist, without doing any I/O itself.

use std::sync::Arc;
use std::time::Duration;

use kubetwin_protocol::rpc::{CODE_CONFLICT, CODE_NOT_FOUND};
use kubetwin_protocol::timestamp::format_rfc3339;
use kubetwin_protocol::{
    AppliedVersion, Codec, DecodeError, DesiredDocument, EncodeError, FACTORY_RESET_METHOD,
    FirmwareOrder, FirmwareState, KEY_FIRMWARE, KEY_FIRMWARE_VERSION, KEY_LAST_REBOOT, KEY_REBOOT,
    Message, MethodRequest, MethodResponse, MqttVersion, ParsedTopic, Presence, PresenceState,
    REBOOT_METHOD, RebootParams, RebootState, RebootStatus, ReportedFirmware, ReportedMessage,
    ResponseStatus, Topics, apply_reported, should_apply,
};
use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};

use crate::config::Faults;
use crate::ledger::{FirmwareUpdate, Ledger, PendingReboot};

/// Message of the Rejected answer under `--reject-methods`.
pub const REJECT_MESSAGE: &str = "reboot refused by device policy";

/// `setLed {"on": bool}`: answers at once with `{"led": "on"|"off"}`.
pub const SET_LED_METHOD: &str = "setLed";
/// `collectDiagnostics`: accepts, reports 50 % a second later, and a second after that
/// succeeds with a summary of what it collected.
pub const COLLECT_DIAGNOSTICS_METHOD: &str = "collectDiagnostics";
/// Every method the simulator implements, as listed in its presence.
pub const METHODS: [&str; 4] =
    [REBOOT_METHOD, FACTORY_RESET_METHOD, SET_LED_METHOD, COLLECT_DIAGNOSTICS_METHOD];
/// Reported key that marks a factory reset: `{"lastReset": <RFC 3339>}`.
pub const KEY_FACTORY_RESET: &str = "factoryReset";
/// Reported keys only the device itself sets; desired properties with these names are applied
/// (acknowledged) but not copied into the reported properties.
pub const DEVICE_OWNED_KEYS: [&str; 5] =
    [KEY_FIRMWARE_VERSION, KEY_FIRMWARE, KEY_LAST_REBOOT, KEY_REBOOT, KEY_FACTORY_RESET];
/// Time between the steps of a firmware update (verify, apply, reboot).
pub const FIRMWARE_STEP: Duration = Duration::from_secs(1);
/// Seconds a factory reset takes (wiping storage) between accepting and going down.
pub const FACTORY_RESET_SECONDS: u32 = 2;
/// Time between the steps of `collectDiagnostics`.
pub const DIAGNOSTICS_STEP: Duration = Duration::from_secs(1);

/// Settings shared by every device of a fleet.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Topics under the configured root.
    pub topics: Topics,
    /// Payload codec (size limit).
    pub codec: Codec,
    /// Firmware version reported.
    pub firmware: String,
    /// MQTT version of the connections.
    pub mqtt: MqttVersion,
    /// Fault switches.
    pub faults: Faults,
}

/// What kind of message a publication is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubKind {
    /// A presence message (retained).
    Presence,
    /// A reported message.
    Reported,
    /// A method response.
    Response,
}

/// A message to publish (QoS 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// What the message is.
    pub kind: PubKind,
    /// Topic to publish on.
    pub topic: String,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 Correlation Data to attach (responses only).
    pub correlation: Option<Vec<u8>>,
}

/// An incoming MQTT message, with the MQTT 5 properties the device uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    /// Topic it arrived on.
    pub topic: String,
    /// Raw payload.
    pub payload: Vec<u8>,
    /// MQTT 5 Response Topic.
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data.
    pub correlation: Option<Vec<u8>>,
    /// Delivered from the broker's retained store (at subscribe time), not live.
    pub retained: bool,
}

/// Something the runner must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Save the ledger now (before the effects that follow).
    Persist,
    /// Publish a message.
    Publish(Publication),
    /// A message could not be encoded: nothing is published in its place (the runner logs
    /// it; for example a reported document grown past the payload limit).
    Unpublishable(EncodeError),
    /// Go down for a reboot after `delay` (then call [`Device::begin_reboot`]).
    ScheduleReboot {
        /// Wait after accepting.
        delay: Duration,
    },
    /// Resync after `delay` (then call [`Device::resync_due`]); replaces a resync still
    /// waiting.
    ScheduleResync {
        /// Wait after the operator's announcement.
        delay: Duration,
    },
    /// Take the next step of the running method after `delay` (then call
    /// [`Device::method_step_due`]).
    ScheduleMethodStep {
        /// Wait before the step.
        delay: Duration,
    },
    /// Download `url` (then call [`Device::download_finished`] with the body or the error).
    Download {
        /// The image's URL.
        url: String,
    },
    /// Take the next step of the firmware update after `delay` (then call
    /// [`Device::firmware_step_due`]).
    ScheduleFirmwareStep {
        /// Wait before the step.
        delay: Duration,
    },
}

/// What an accepted request makes the device do.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Execution {
    /// Restart after the delay; a factory reset wipes the device's state first.
    Restart {
        /// Wait after accepting.
        delay_seconds: u32,
        /// Wipe state (factoryReset).
        factory_reset: bool,
    },
    /// `setLed`: done at once.
    SetLed {
        /// The LED's new state.
        on: bool,
    },
    /// `collectDiagnostics`: runs in steps.
    Diagnostics,
}

/// A method that runs in steps (`collectDiagnostics`), in this boot only.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RunningMethod {
    request_id: String,
    response_topic: Option<String>,
    correlation: Option<Vec<u8>>,
    /// Steps taken so far.
    steps: u8,
}

/// One simulated device: the ledger plus the per-boot counters.
#[derive(Debug)]
pub struct Device {
    id: String,
    shared: Arc<Shared>,
    ledger: Ledger,
    conn: u64,
    seq: u64,
    boot_started: String,
    full_sent: bool,
    finishing: Option<PendingReboot>,
    telemetry: u64,
    /// The operator session seen first in this boot (or since the last resync).
    operator_session: Option<String>,
    /// A method running in steps.
    running: Option<RunningMethod>,
}

/// Key of the load-mode telemetry counter in the reported properties.
pub const KEY_TELEMETRY: &str = "telemetry";

/// How many of the latest answers a resync sends again.
pub const RESYNC_ANSWERS: usize = 8;

impl Device {
    /// A device with its persisted ledger (not booted yet: call [`Device::start_boot`]).
    pub fn new(id: impl Into<String>, shared: Arc<Shared>, mut ledger: Ledger) -> Self {
        ledger.telemetry = None;
        Self {
            id: id.into(),
            shared,
            ledger,
            conn: 0,
            seq: 0,
            boot_started: String::new(),
            full_sent: false,
            finishing: None,
            telemetry: 0,
            operator_session: None,
            running: None,
        }
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The persisted state.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Current boot counter.
    pub fn boot(&self) -> u64 {
        self.ledger.boot
    }

    /// Current connection counter within the boot.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Last sequence number used within the boot.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether an accepted reboot is waiting to go down.
    pub fn reboot_pending(&self) -> bool {
        self.ledger.pending_reboot.is_some()
    }

    /// Starts a new boot at `now_ms`: boot + 1, conn 1, seq restarting. A reboot accepted in
    /// the previous boot completes in this one. The caller persists the ledger afterwards.
    pub fn start_boot(&mut self, now_ms: i64) {
        self.ledger.boot += 1;
        self.conn = 1;
        self.seq = 0;
        self.full_sent = false;
        self.operator_session = None;
        self.running = None;
        let now = format_rfc3339(now_ms);
        self.boot_into_firmware();
        if let Some(pending) = self.ledger.pending_reboot.take() {
            if pending.factory_reset {
                // Factory state: nothing configured, nothing applied; the retained desired
                // document is applied again once the device subscribes.
                self.ledger.properties = Map::new();
                self.ledger.applied = None;
                self.ledger.last_factory_reset = Some(now.clone());
            }
            self.ledger.reboot =
                Some(RebootState::new(RebootStatus::Done, pending.request_id.clone()));
            self.ledger.last_reboot = Some(now.clone());
            self.finishing = Some(pending);
        }
        self.boot_started = self.ledger.last_reboot.clone().unwrap_or(now);
    }

    /// Counts a new connection within the boot (after a lost or dropped one).
    pub fn next_connection(&mut self) {
        self.conn += 1;
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn presence(&self, state: PresenceState, reason: &str, ts: bool) -> Presence {
        let mut presence = Presence::new(state, self.ledger.boot, self.conn);
        presence.reason = Some(reason.to_owned());
        if ts {
            presence.ts = Some(kubetwin_protocol::timestamp::now_rfc3339());
        }
        presence
    }

    fn publication<M: Message>(
        &self,
        kind: PubKind,
        topic: String,
        message: &M,
    ) -> Result<Publication, EncodeError> {
        Ok(Publication {
            kind,
            topic,
            payload: self.shared.codec.encode(message)?,
            retain: M::RETAINED,
            correlation: None,
        })
    }

    /// The Last Will of the current connection: retained offline presence, reason `lost`.
    pub fn will(&self) -> Result<Publication, EncodeError> {
        let presence = self.presence(PresenceState::Offline, "lost", false);
        self.publication(PubKind::Presence, self.shared.topics.presence(&self.id), &presence)
    }

    /// A retained offline presence before a planned disconnect (`reboot`, `shutdown`).
    pub fn offline(&self, reason: &str) -> Result<Publication, EncodeError> {
        let presence = self.presence(PresenceState::Offline, reason, true);
        self.publication(PubKind::Presence, self.shared.topics.presence(&self.id), &presence)
    }

    /// The topic filters to subscribe to after every ConnAck.
    pub fn subscriptions(&self) -> Vec<String> {
        self.shared.topics.device_subscriptions(&self.id)
    }

    /// After a ConnAck (and the subscriptions): online presence; on the first connection of a
    /// boot a full report and the `Succeeded` answer of a reboot that led to this boot; on a
    /// later connection (the previous one was lost, with whatever was in flight) a resync.
    pub fn on_connected(&mut self) -> Vec<Effect> {
        if self.full_sent {
            return self.resync();
        }
        let mut effects = vec![publish(self.online_presence())];
        self.full_sent = true;
        effects.push(publish(self.full_report()));
        if let Some(pending) = self.finishing.take() {
            let mut response = self.response(&pending.request_id, ResponseStatus::Succeeded);
            response.progress = Some(100);
            response.message = Some(
                if pending.factory_reset { "reset to factory state" } else { "rebooted" }.into(),
            );
            self.ledger.recent.record(response.clone());
            info!(device = %self.id, request = %pending.request_id, boot = self.ledger.boot, "reboot succeeded");
            effects.push(Effect::Persist);
            effects.push(publish(self.response_publication(
                &response,
                pending.response_topic.as_deref(),
                pending.correlation_data,
            )));
        }
        effects
    }

    /// The retained online presence of this connection.
    fn online_presence(&self) -> Result<Publication, EncodeError> {
        let mut presence = self.presence(PresenceState::Online, "connected", true);
        presence.firmware = Some(self.current_firmware());
        presence.methods = METHODS.iter().map(|m| (*m).to_owned()).collect();
        presence.mqtt = Some(self.shared.mqtt);
        self.publication(PubKind::Presence, self.shared.topics.presence(&self.id), &presence)
    }

    /// The online presence of this connection, a full report and the latest answers again
    /// (protocol 5.5): what an operator that lost messages needs to know the device's state.
    /// With `--no-resync`, the presence only (as before resyncs existed).
    fn resync(&mut self) -> Vec<Effect> {
        if self.shared.faults.no_resync {
            return vec![publish(self.online_presence())];
        }
        let mut effects = vec![publish(self.online_presence()), publish(self.full_report())];
        let answers: Vec<MethodResponse> =
            self.ledger.recent.newest(RESYNC_ANSWERS).cloned().collect();
        for answer in answers {
            effects.push(publish(self.response_publication(&answer, None, None)));
        }
        effects
    }

    fn full_report(&mut self) -> Result<Publication, EncodeError> {
        let mut reported = self.ledger.properties.clone();
        reported.insert(KEY_FIRMWARE_VERSION.into(), Value::String(self.current_firmware()));
        reported.insert(KEY_FIRMWARE.into(), self.firmware_block().to_value());
        reported.insert(KEY_LAST_REBOOT.into(), Value::String(self.boot_started.clone()));
        if let Some(reboot) = &self.ledger.reboot {
            reported.insert(KEY_REBOOT.into(), reboot.to_value());
        }
        if let Some(at) = &self.ledger.last_factory_reset {
            reported.insert(KEY_FACTORY_RESET.into(), json!({ "lastReset": at }));
        }
        if self.telemetry > 0 {
            reported.insert(KEY_TELEMETRY.into(), json!({ "counter": self.telemetry }));
        }
        let seq = self.next_seq();
        let mut message = ReportedMessage::full(self.ledger.boot, seq, reported);
        message.applied = self.ledger.applied.clone();
        message.ts = Some(kubetwin_protocol::timestamp::now_rfc3339());
        self.reported(message)
    }

    /// Encodes a reported message and records it in the ledger as sent.
    fn reported(&mut self, message: ReportedMessage) -> Result<Publication, EncodeError> {
        let publication =
            self.publication(PubKind::Reported, self.shared.topics.reported(&self.id), &message)?;
        apply_reported(&mut self.ledger.reported, &message);
        self.ledger.last_reported = Some((message.boot, message.seq));
        Ok(publication)
    }

    fn patch(
        &mut self,
        reported: Map<String, Value>,
        applied: Option<AppliedVersion>,
    ) -> Result<Publication, EncodeError> {
        let seq = self.next_seq();
        let mut message = ReportedMessage::patch(self.ledger.boot, seq, reported);
        message.applied = applied;
        message.ts = Some(kubetwin_protocol::timestamp::now_rfc3339());
        self.reported(message)
    }

    /// A load-mode telemetry patch `{"telemetry": {"counter": n}}`.
    pub fn telemetry(&mut self) -> Result<Publication, EncodeError> {
        self.telemetry += 1;
        self.ledger.telemetry = Some(self.telemetry);
        let mut reported = Map::new();
        reported.insert(KEY_TELEMETRY.into(), json!({ "counter": self.telemetry }));
        self.patch(reported, None)
    }

    fn response(&mut self, request_id: &str, status: ResponseStatus) -> MethodResponse {
        let seq = self.next_seq();
        let mut response = MethodResponse::new(request_id, status, self.ledger.boot, seq);
        response.ts = Some(kubetwin_protocol::timestamp::now_rfc3339());
        response
    }

    fn response_publication(
        &self,
        response: &MethodResponse,
        response_topic: Option<&str>,
        correlation: Option<Vec<u8>>,
    ) -> Result<Publication, EncodeError> {
        let v5 = self.shared.mqtt == MqttVersion::V5;
        let topic = response_topic
            .filter(|t| v5 && !t.is_empty() && !t.contains(['+', '#']))
            .map_or_else(|| self.shared.topics.response(&self.id, &response.id), str::to_owned);
        let mut publication = self.publication(PubKind::Response, topic, response)?;
        publication.correlation = correlation.filter(|_| v5);
        Ok(publication)
    }

    /// Handles an incoming message at `now_ms` (Unix milliseconds).
    pub fn handle(&mut self, msg: &Incoming, now_ms: i64) -> Vec<Effect> {
        if msg.topic == self.shared.topics.operator_session() {
            return self.on_operator_session(msg);
        }
        let parsed = match self.shared.topics.parse(&msg.topic) {
            Ok(parsed) if parsed.device_id().as_str() == self.id => parsed,
            Ok(_) | Err(_) => {
                debug!(device = %self.id, topic = %msg.topic, "dropped message on a foreign topic");
                return Vec::new();
            }
        };
        match &parsed {
            ParsedTopic::Desired { .. } => {
                match self.shared.codec.decode_for::<DesiredDocument>(&parsed, &msg.payload) {
                    Ok(doc) => self.on_desired(doc),
                    Err(e) => {
                        drop_log(&self.id, &msg.topic, &e);
                        Vec::new()
                    }
                }
            }
            ParsedTopic::Request { .. } => {
                match self.shared.codec.decode_for::<MethodRequest>(&parsed, &msg.payload) {
                    Ok(request) => self.on_request(&request, msg, now_ms),
                    Err(e) => {
                        drop_log(&self.id, &msg.topic, &e);
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        }
    }

    /// The operator announced its session. A session other than the one seen before in this
    /// boot, or a new one announced live while connected, means an operator that may have lost
    /// what this device sent: send a full report and the latest answers again. A retained
    /// session seen first needs nothing, as it was in place before this boot's full report.
    fn on_operator_session(&mut self, msg: &Incoming) -> Vec<Effect> {
        let announcement = match self.shared.codec.decode_session(&msg.payload) {
            Ok(announcement) => announcement,
            Err(e) => {
                drop_log(&self.id, &msg.topic, &e);
                return Vec::new();
            }
        };
        let resync = match &self.operator_session {
            Some(seen) => *seen != announcement.session,
            None => !msg.retained,
        } && !self.shared.faults.no_resync;
        let delay = Duration::from_millis(announcement.resync_delay_ms(&self.id));
        self.operator_session = Some(announcement.session);
        if !resync || !self.full_sent {
            // Before the first connection's full report there is nothing to send again.
            return Vec::new();
        }
        info!(device = %self.id, boot = self.ledger.boot, ?delay, "new operator session: resyncing");
        vec![Effect::ScheduleResync { delay }]
    }

    /// A scheduled resync is due: presence, full report and latest answers (nothing before the
    /// first full report of the boot, which the connection sends anyway).
    pub fn resync_due(&mut self) -> Vec<Effect> {
        if !self.full_sent {
            return Vec::new();
        }
        self.resync()
    }

    fn on_desired(&mut self, doc: DesiredDocument) -> Vec<Effect> {
        if !should_apply(self.ledger.applied.as_ref(), &doc) {
            debug!(device = %self.id, epoch = %doc.epoch, version = doc.version, "desired already applied");
            return Vec::new();
        }
        let applied = AppliedVersion::of(&doc);
        // Keys the device owns (its firmware, its reboots) are never taken from desired: a
        // desired firmwareVersion does not install anything.
        let properties: Map<String, Value> = doc
            .desired
            .into_iter()
            .filter(|(key, _)| !DEVICE_OWNED_KEYS.contains(&key.as_str()))
            .collect();
        let mut reported = properties.clone();
        for key in self.ledger.properties.keys() {
            if !reported.contains_key(key) {
                reported.insert(key.clone(), Value::Null);
            }
        }
        debug!(device = %self.id, epoch = %doc.epoch, version = doc.version, "applied desired");
        self.ledger.properties = properties;
        self.ledger.applied = Some(applied.clone());
        let publication = self.patch(reported, Some(applied));
        let mut effects = vec![Effect::Persist, publish(publication)];
        if let Some(order) = doc.firmware {
            effects.extend(self.start_firmware(order));
        }
        effects
    }

    /// Firmware version running now.
    fn current_firmware(&self) -> String {
        self.ledger.firmware_current.clone().unwrap_or_else(|| self.shared.firmware.clone())
    }

    /// The reported `firmware` block.
    fn firmware_block(&self) -> ReportedFirmware {
        let update = self.ledger.firmware_update.as_ref();
        ReportedFirmware {
            current: self.current_firmware(),
            target: update.map(|u| u.order.version.clone()),
            state: update.map_or(FirmwareState::Idle, |u| u.state),
            progress: update.and_then(|u| u.progress),
            code: update.and_then(|u| u.code),
            message: update.and_then(|u| u.message.clone()),
            // The simulator marks an image good as soon as it booted.
            committed: true,
        }
    }

    /// A patch with the firmware block, after saving the ledger. Fields the block no longer
    /// has are sent as null: the patch is a JSON merge patch, which keeps absent keys.
    fn firmware_report(&mut self) -> Vec<Effect> {
        let mut block = self.firmware_block().to_value();
        if let Value::Object(fields) = &mut block {
            for key in ["target", "progress", "code", "message"] {
                fields.entry(key).or_insert(Value::Null);
            }
        }
        let mut reported = Map::new();
        reported.insert(KEY_FIRMWARE.into(), block);
        vec![Effect::Persist, publish(self.patch(reported, None))]
    }

    /// Moves the update to `state`.
    fn firmware_to(&mut self, state: FirmwareState, code: Option<u16>, message: Option<String>) {
        if let Some(update) = self.ledger.firmware_update.as_mut() {
            update.state = state;
            update.progress = None;
            update.code = code;
            update.message = message;
        }
    }

    /// A firmware order from the desired document: starts an update unless the device runs
    /// that version already or has handled this very order (a re-applied document never
    /// restarts an update).
    fn start_firmware(&mut self, order: FirmwareOrder) -> Vec<Effect> {
        if order.version == self.current_firmware()
            || self.ledger.firmware_update.as_ref().is_some_and(|u| u.order == order)
        {
            return Vec::new();
        }
        info!(device = %self.id, version = %order.version, url = %order.url, "firmware update started");
        let url = order.url.clone();
        self.ledger.firmware_update = Some(FirmwareUpdate {
            order,
            state: FirmwareState::Downloading,
            progress: Some(0),
            code: None,
            message: None,
            digest: None,
        });
        let mut effects = self.firmware_report();
        if !self.shared.faults.firmware_hang {
            effects.push(Effect::Download { url });
        }
        effects
    }

    /// The download of the current update ended with the image or an error.
    pub fn download_finished(&mut self, result: Result<Vec<u8>, String>) -> Vec<Effect> {
        let corrupt = self.shared.faults.firmware_corrupt;
        let Some(update) = self.ledger.firmware_update.as_mut() else {
            return Vec::new();
        };
        if update.state != FirmwareState::Downloading {
            return Vec::new();
        }
        match result {
            Err(error) => {
                warn!(device = %self.id, %error, "firmware download failed");
                self.firmware_to(
                    FirmwareState::Error,
                    Some(502),
                    Some(format!("download failed: {error}")),
                );
                self.firmware_report()
            }
            Ok(mut image) => {
                if corrupt {
                    match image.first_mut() {
                        Some(byte) => *byte ^= 0xff,
                        None => image.push(0),
                    }
                }
                let digest = ring::digest::digest(&ring::digest::SHA256, &image);
                let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                update.digest = Some(hex);
                self.firmware_to(FirmwareState::Verifying, None, None);
                let mut effects = self.firmware_report();
                effects.push(Effect::ScheduleFirmwareStep { delay: FIRMWARE_STEP });
                effects
            }
        }
    }

    /// The next step of the update: verify the checksum, apply, then reboot into the image.
    pub fn firmware_step_due(&mut self) -> Vec<Effect> {
        let Some(update) = self.ledger.firmware_update.clone() else {
            return Vec::new();
        };
        match update.state {
            FirmwareState::Verifying
                if update.digest.as_deref() != Some(update.order.sha256.as_str()) =>
            {
                let got = update.digest.unwrap_or_default();
                let message =
                    format!("checksum mismatch: expected {}, got {got}", update.order.sha256);
                warn!(device = %self.id, %message, "firmware image refused");
                self.firmware_to(FirmwareState::Error, Some(400), Some(message));
                self.firmware_report()
            }
            FirmwareState::Verifying => {
                self.firmware_to(FirmwareState::Applying, None, None);
                let mut effects = self.firmware_report();
                effects.push(Effect::ScheduleFirmwareStep { delay: FIRMWARE_STEP });
                effects
            }
            FirmwareState::Applying => {
                self.firmware_to(FirmwareState::Rebooting, None, None);
                let mut effects = self.firmware_report();
                effects.push(Effect::ScheduleReboot { delay: FIRMWARE_STEP });
                effects
            }
            _ => Vec::new(),
        }
    }

    /// At boot: an update that was rebooting into its image now runs it, or (a bad image)
    /// went back to the old one.
    fn boot_into_firmware(&mut self) {
        let Some(update) = self.ledger.firmware_update.clone() else {
            return;
        };
        if update.state != FirmwareState::Rebooting {
            return;
        }
        let old = self.current_firmware();
        if self.shared.faults.firmware_bad_image {
            let message =
                format!("the image {} did not boot; running {old} again", update.order.version);
            self.firmware_to(FirmwareState::Rolledback, Some(500), Some(message));
        } else {
            self.ledger.firmware_current = Some(update.order.version.clone());
            let message = format!("updated from {old} to {}", update.order.version);
            self.firmware_to(FirmwareState::Idle, Some(200), Some(message));
        }
    }

    fn on_request(&mut self, request: &MethodRequest, msg: &Incoming, now_ms: i64) -> Vec<Effect> {
        let reply_topic = msg.response_topic.as_deref();
        let correlation = msg.correlation.clone();
        // 1. Repeat: answer from memory, never execute again.
        if let Some(last) = self.ledger.recent.last_response(&request.id) {
            debug!(device = %self.id, request = %request.id, status = ?last.status, "repeated request");
            let last = last.clone();
            return vec![publish(self.response_publication(&last, reply_topic, correlation))];
        }
        if self.ledger.was_executed(&request.id) {
            debug!(device = %self.id, request = %request.id, "executed request without a remembered answer; ignored");
            return Vec::new();
        }
        if self.shared.faults.never_answer {
            debug!(device = %self.id, request = %request.id, "ignoring request (--never-answer)");
            return Vec::new();
        }
        if self.ledger.injected_failures < self.shared.faults.fail_first_requests {
            self.ledger.injected_failures += 1;
            let mut response = self.response(&request.id, ResponseStatus::Failed);
            response.code = 500;
            response.message = Some(format!(
                "injected failure {} of {} (--fail-first-requests)",
                self.ledger.injected_failures, self.shared.faults.fail_first_requests
            ));
            info!(device = %self.id, request = %request.id, "answered Failed on purpose");
            return self.reply(response, msg);
        }
        let (status, code, message) = match self.check_request(request, now_ms) {
            Ok(Execution::Restart { delay_seconds, factory_reset }) => {
                return self.accept_restart(request, delay_seconds, factory_reset, msg);
            }
            Ok(Execution::SetLed { on }) => return self.set_led(request, on, msg),
            Ok(Execution::Diagnostics) => return self.start_diagnostics(request, msg),
            Err(refusal) => refusal,
        };
        let mut response = self.response(&request.id, status);
        response.code = code;
        response.message = Some(message);
        info!(device = %self.id, request = %request.id, status = ?status, code, "answered request");
        self.reply(response, msg)
    }

    /// Decides whether a new request is executed (and how) or refused (status, code, message).
    fn check_request(
        &self,
        request: &MethodRequest,
        now_ms: i64,
    ) -> Result<Execution, (ResponseStatus, u16, String)> {
        let rejected = |code: u16, message: String| (ResponseStatus::Rejected, code, message);
        if self.shared.faults.reject_methods {
            return Err(rejected(CODE_CONFLICT, REJECT_MESSAGE.to_owned()));
        }
        if request.is_expired(now_ms) {
            return Err((
                ResponseStatus::Expired,
                ResponseStatus::Expired.default_code(),
                format!("expired at {}", request.expires_at),
            ));
        }
        let bad_params = ResponseStatus::Rejected.default_code();
        let execution = match request.method.as_str() {
            REBOOT_METHOD => {
                let params = RebootParams::from_params(&request.params)
                    .map_err(|e| rejected(bad_params, e.to_string()))?;
                Execution::Restart { delay_seconds: params.delay_seconds, factory_reset: false }
            }
            FACTORY_RESET_METHOD => {
                Execution::Restart { delay_seconds: FACTORY_RESET_SECONDS, factory_reset: true }
            }
            SET_LED_METHOD => match request.params.get("on") {
                Some(Value::Bool(on)) => Execution::SetLed { on: *on },
                _ => {
                    return Err(rejected(
                        bad_params,
                        "setLed needs params {\"on\": true|false}".into(),
                    ));
                }
            },
            COLLECT_DIAGNOSTICS_METHOD => Execution::Diagnostics,
            other => return Err(rejected(CODE_NOT_FOUND, format!("unknown method {other}"))),
        };
        let restart_pending = self.ledger.pending_reboot.is_some() || self.finishing.is_some();
        if restart_pending || self.running.is_some() {
            let what = if restart_pending { "a restart" } else { "a method" };
            return Err(rejected(CODE_CONFLICT, format!("busy: {what} is already in progress")));
        }
        Ok(execution)
    }

    fn accept_restart(
        &mut self,
        request: &MethodRequest,
        delay_seconds: u32,
        factory_reset: bool,
        msg: &Incoming,
    ) -> Vec<Effect> {
        self.ledger.executed.push(request.id.clone());
        let pending = PendingReboot {
            request_id: request.id.clone(),
            response_topic: msg.response_topic.clone(),
            correlation_data: msg.correlation.clone(),
            factory_reset,
        };
        self.ledger.pending_reboot = Some(pending);
        let mut response = self.response(&request.id, ResponseStatus::Accepted);
        response.message = Some(if factory_reset {
            "resetting to factory state".to_owned()
        } else {
            format!("rebooting in {delay_seconds}s")
        });
        info!(device = %self.id, request = %request.id, delay_seconds, factory_reset, "restart accepted");
        let mut effects = self.reply(response, msg);
        effects
            .push(Effect::ScheduleReboot { delay: Duration::from_secs(u64::from(delay_seconds)) });
        effects
    }

    /// Records `response` as the last answer to its request and publishes it (after the ledger
    /// is saved) to the reply topic of `msg`.
    fn reply(&mut self, response: MethodResponse, msg: &Incoming) -> Vec<Effect> {
        self.ledger.recent.record(response.clone());
        let publication = self.response_publication(
            &response,
            msg.response_topic.as_deref(),
            msg.correlation.clone(),
        );
        vec![Effect::Persist, publish(publication)]
    }

    /// `setLed`: executed and answered at once, with the new state as the result.
    fn set_led(&mut self, request: &MethodRequest, on: bool, msg: &Incoming) -> Vec<Effect> {
        self.ledger.executed.push(request.id.clone());
        let state = if on { "on" } else { "off" };
        let mut response = self.response(&request.id, ResponseStatus::Succeeded);
        response.message = Some(format!("LED {state}"));
        response.payload = Some(json!({ "led": state }));
        info!(device = %self.id, request = %request.id, state, "LED set");
        self.reply(response, msg)
    }

    /// `collectDiagnostics`: accepted now, then [`Device::method_step_due`] twice.
    fn start_diagnostics(&mut self, request: &MethodRequest, msg: &Incoming) -> Vec<Effect> {
        self.ledger.executed.push(request.id.clone());
        self.running = Some(RunningMethod {
            request_id: request.id.clone(),
            response_topic: msg.response_topic.clone(),
            correlation: msg.correlation.clone(),
            steps: 0,
        });
        let mut response = self.response(&request.id, ResponseStatus::Accepted);
        response.message = Some("collecting diagnostics".into());
        info!(device = %self.id, request = %request.id, "diagnostics started");
        let mut effects = self.reply(response, msg);
        effects.push(Effect::ScheduleMethodStep { delay: DIAGNOSTICS_STEP });
        effects
    }

    /// The next step of the running method: 50 % with a message, then the final answer with
    /// the result.
    pub fn method_step_due(&mut self) -> Vec<Effect> {
        let Some(mut running) = self.running.take() else {
            return Vec::new();
        };
        running.steps += 1;
        let (mut response, next) = if running.steps == 1 {
            let mut response = self.response(&running.request_id, ResponseStatus::InProgress);
            response.progress = Some(50);
            response.message = Some("collecting logs".into());
            (response, Some(Effect::ScheduleMethodStep { delay: DIAGNOSTICS_STEP }))
        } else {
            let mut response = self.response(&running.request_id, ResponseStatus::Succeeded);
            response.message = Some("diagnostics collected".into());
            response.payload = Some(json!({ "files": 3, "boot": self.ledger.boot }));
            (response, None)
        };
        response.ts = Some(kubetwin_protocol::timestamp::now_rfc3339());
        self.ledger.recent.record(response.clone());
        let publication = self.response_publication(
            &response,
            running.response_topic.as_deref(),
            running.correlation.clone(),
        );
        let mut effects = vec![Effect::Persist, publish(publication)];
        if let Some(next) = next {
            self.running = Some(running);
            effects.push(next);
        }
        effects
    }

    /// After the reboot delay: report `rebooting` and publish the offline presence (reason
    /// `reboot`); the runner then disconnects cleanly.
    pub fn begin_reboot(&mut self) -> Vec<Effect> {
        let Some(pending) = &self.ledger.pending_reboot else {
            let into_firmware = self
                .ledger
                .firmware_update
                .as_ref()
                .is_some_and(|u| u.state == FirmwareState::Rebooting);
            return if into_firmware {
                info!(device = %self.id, boot = self.ledger.boot, "going down to boot the new firmware");
                vec![Effect::Persist, publish(self.offline("firmware"))]
            } else {
                Vec::new()
            };
        };
        let state = RebootState::new(RebootStatus::Rebooting, pending.request_id.clone());
        info!(device = %self.id, request = %state.request_id, boot = self.ledger.boot, "going down for reboot");
        let mut reported = Map::new();
        reported.insert(KEY_REBOOT.into(), state.to_value());
        self.ledger.reboot = Some(state);
        let report = self.patch(reported, None);
        vec![Effect::Persist, publish(report), publish(self.offline("reboot"))]
    }
}

/// The effect of publishing `publication`, or of failing to encode it.
fn publish(publication: Result<Publication, EncodeError>) -> Effect {
    match publication {
        Ok(publication) => Effect::Publish(publication),
        Err(error) => Effect::Unpublishable(error),
    }
}

fn drop_log(id: &str, topic: &str, error: &DecodeError) {
    debug!(device = %id, topic, reason = error.reason(), %error, "dropped message");
}

#[cfg(test)]
mod tests {
    use kubetwin_protocol::timestamp::parse_rfc3339;
    use kubetwin_protocol::{PresenceState, RecentRequests};
    use serde_json::json;

    use super::*;

    const NOW: &str = "2025-05-01T12:01:00Z";

    fn shared(mqtt: MqttVersion, faults: Faults) -> Arc<Shared> {
        Arc::new(Shared {
            topics: Topics::default(),
            codec: Codec::default(),
            firmware: "1.0.0".into(),
            mqtt,
            faults,
        })
    }

    fn now() -> i64 {
        parse_rfc3339(NOW).unwrap()
    }

    fn booted(mqtt: MqttVersion, faults: Faults) -> Device {
        let mut device = Device::new("dev-1", shared(mqtt, faults), Ledger::default());
        device.start_boot(now());
        device
    }

    fn publications(effects: &[Effect]) -> Vec<&Publication> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn request_msg(id: &str, method: &str, params: Value, expires: &str) -> Incoming {
        let Value::Object(params) = params else { panic!("params not an object") };
        let req = MethodRequest::new(id, method, params, "2025-05-01T12:00:00Z", expires);
        Incoming {
            topic: Topics::default().request("dev-1", method, id),
            payload: Codec::default().encode(&req).unwrap(),
            response_topic: Some(format!("kubetwin/v1/dev-1/rpc/res/{id}")),
            correlation: Some(id.as_bytes().to_vec()),
            retained: false,
        }
    }

    fn desired_msg(doc: &DesiredDocument) -> Incoming {
        Incoming {
            topic: Topics::default().desired("dev-1"),
            payload: Codec::default().encode(doc).unwrap(),
            ..Incoming::default()
        }
    }

    fn reboot_msg(id: &str, delay: u32) -> Incoming {
        request_msg(id, "reboot", json!({"delaySeconds": delay}), "2025-05-01T12:05:00Z")
    }

    fn response_of(p: &Publication) -> MethodResponse {
        assert_eq!(p.kind, PubKind::Response);
        Codec::default().decode_response(&p.payload).unwrap()
    }

    fn reported_of(p: &Publication) -> ReportedMessage {
        assert_eq!(p.kind, PubKind::Reported);
        Codec::default().decode_reported(&p.payload).unwrap()
    }

    fn presence_of(p: &Publication) -> Presence {
        assert_eq!(p.kind, PubKind::Presence);
        assert!(p.retain);
        Codec::default().decode_presence(&p.payload).unwrap()
    }

    #[test]
    fn boots_count_up_and_reset_counters() {
        let mut device = Device::new(
            "dev-1",
            shared(MqttVersion::V5, Faults::default()),
            Ledger { boot: 4, ..Ledger::default() },
        );
        device.start_boot(now());
        assert_eq!((device.boot(), device.conn(), device.seq()), (5, 1, 0));
        device.next_connection();
        assert_eq!(device.conn(), 2);
        let will = presence_of(&device.will().unwrap());
        assert_eq!(will.state, PresenceState::Offline);
        assert_eq!((will.boot, will.conn), (5, 2));
        assert_eq!(will.reason.as_deref(), Some("lost"));
        assert_eq!(will.ts, None);
        assert_eq!(device.will().unwrap().topic, "kubetwin/v1/dev-1/presence");
    }

    #[test]
    fn first_connection_publishes_presence_and_full_report() {
        let mut device = booted(MqttVersion::V311, Faults::default());
        let effects = device.on_connected();
        let pubs = publications(&effects);
        assert_eq!(pubs.len(), 2);
        let online = presence_of(pubs[0]);
        assert_eq!(online.state, PresenceState::Online);
        assert_eq!((online.boot, online.conn), (1, 1));
        assert_eq!(online.methods, METHODS.map(str::to_owned).to_vec());
        assert_eq!(online.mqtt, Some(MqttVersion::V311));
        assert_eq!(online.firmware.as_deref(), Some("1.0.0"));
        let full = reported_of(pubs[1]);
        assert!(full.full);
        assert_eq!((full.boot, full.seq), (1, 1));
        assert_eq!(full.reported["firmwareVersion"], json!("1.0.0"));
        assert_eq!(full.reported["lastReboot"], json!(NOW));
        assert!(!full.reported.contains_key("reboot"));
        assert_eq!(full.applied, None);
        assert!(!pubs[1].retain);
        assert_eq!(device.ledger().last_reported, Some((1, 1)));
        assert_eq!(device.ledger().reported, full.reported);
        // A reconnect within the boot follows a lost connection: presence and a resync (a
        // full report; no answers to repeat yet).
        device.next_connection();
        let again = device.on_connected();
        assert_eq!(publications(&again).len(), 2);
        assert_eq!(presence_of(publications(&again)[0]).conn, 2);
        let resync = reported_of(publications(&again)[1]);
        assert!(resync.full);
        assert_eq!((resync.boot, resync.seq), (1, 2));
        assert_eq!(resync.reported, full.reported);
        assert_eq!(
            device.subscriptions(),
            vec![
                "kubetwin/v1/dev-1/twin/desired",
                "kubetwin/v1/dev-1/rpc/req/#",
                "kubetwin/v1/_operator/session"
            ]
        );
    }

    fn session_announcement(session: &str) -> kubetwin_protocol::OperatorSession {
        let mut announcement = kubetwin_protocol::OperatorSession::new(session, NOW);
        announcement.resync_within_ms = Some(1000);
        announcement
    }

    fn session_msg(session: &str, retained: bool) -> Incoming {
        let announcement = session_announcement(session);
        Incoming {
            topic: Topics::default().operator_session(),
            payload: Codec::default().encode(&announcement).unwrap(),
            retained,
            ..Incoming::default()
        }
    }

    #[test]
    fn a_new_operator_session_gets_a_full_report_and_the_latest_answers() {
        let mut device = booted(MqttVersion::V311, Faults::default());
        // Seen before the first full report: nothing to send again yet.
        assert!(device.handle(&session_msg("s0", false), now()).is_empty());
        device.on_connected();
        device.handle(&reboot_msg("r1", 5), now());
        let table: [(&str, bool, bool); 5] = [
            // (session, retained, resync)
            ("s0", true, false), // the session already seen, replayed on a new subscription
            ("s0", false, false), // the same session repeated live
            ("s1", false, true), // a new session: the operator may have lost something
            ("s1", true, false), // and replayed later: already handled
            ("s2", true, true),  // a session that changed while the device was away
        ];
        for (session, retained, resync) in table {
            let effects = device.handle(&session_msg(session, retained), now());
            if !resync {
                assert!(effects.is_empty(), "{session} retained={retained}: {effects:?}");
                continue;
            }
            // Spread by the announcement: 1000 ms asked, this device's moment within it.
            let delay =
                Duration::from_millis(session_announcement(session).resync_delay_ms("dev-1"));
            assert_eq!(effects, [Effect::ScheduleResync { delay }]);
            assert!(delay < Duration::from_secs(1));
            let effects = device.resync_due();
            let pubs = publications(&effects);
            assert_eq!(pubs.len(), 3, "{session}: presence, a full report and the one answer");
            let online = presence_of(pubs[0]);
            assert_eq!((online.state, online.boot, online.conn), (PresenceState::Online, 1, 1));
            let full = reported_of(pubs[1]);
            assert!(full.full);
            assert_eq!(full.boot, 1);
            assert_eq!(full.reported["firmwareVersion"], json!("1.0.0"));
            assert!(full.seq > 2, "a new seq of the boot, so the operator accepts it");
            let answer = response_of(pubs[2]);
            assert_eq!((answer.id.as_str(), answer.status), ("r1", ResponseStatus::Accepted));
            // The answer is sent again as it was: same cursor, so the operator sees a duplicate.
            assert_eq!((answer.boot, answer.seq), (1, 2));
            assert_eq!(pubs[2].topic, "kubetwin/v1/dev-1/rpc/res/r1");
        }
    }

    #[test]
    fn a_retained_session_seen_first_needs_no_resync_but_a_live_one_does() {
        // Retained, first in the boot: it existed before this boot's full report.
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        assert!(device.handle(&session_msg("s0", true), now()).is_empty());
        // Live, first in the boot (the device resumed a session, so nothing was replayed):
        // the operator started after the full report.
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        let scheduled = device.handle(&session_msg("s0", false), now());
        assert!(matches!(scheduled[..], [Effect::ScheduleResync { .. }]));
        let effects = device.resync_due();
        assert_eq!(publications(&effects).len(), 2, "presence and a full report, no answers yet");
        assert!(reported_of(publications(&effects)[1]).full);
        // A new boot forgets the session: its own full report covers it.
        device.start_boot(now());
        device.on_connected();
        assert!(device.handle(&session_msg("s0", true), now()).is_empty());
        // A malformed announcement is dropped.
        let garbage = Incoming { payload: b"{".to_vec(), ..session_msg("s9", false) };
        assert!(device.handle(&garbage, now()).is_empty());
    }

    #[test]
    fn desired_is_applied_once_and_reported() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        let mut desired = Map::new();
        desired.insert("led".into(), json!({"color": "green"}));
        desired.insert("interval".into(), json!(30));
        let doc = DesiredDocument::new("e1", 3, "2025-05-01T12:00:00Z", desired);
        let msg = desired_msg(&doc);
        let effects = device.handle(&msg, now());
        assert_eq!(effects[0], Effect::Persist);
        let patch = reported_of(publications(&effects)[0]);
        assert!(!patch.full);
        assert_eq!(patch.seq, 2);
        assert_eq!(
            patch.applied,
            Some(AppliedVersion { epoch: "e1".into(), version: 3, revision: 0 })
        );
        assert_eq!(
            Value::Object(patch.reported.clone()),
            json!({"led": {"color": "green"}, "interval": 30})
        );
        assert_eq!(device.ledger().applied.as_ref().map(|a| a.version), Some(3));
        // Retained re-delivery: ignored.
        assert!(device.handle(&msg, now()).is_empty());
        // A newer version without `interval` deletes it from reported.
        let mut desired = Map::new();
        desired.insert("led".into(), json!({"color": "red"}));
        let doc = DesiredDocument::new("e1", 4, "2025-05-01T12:00:00Z", desired);
        let msg = Incoming { payload: Codec::default().encode(&doc).unwrap(), ..msg };
        let patch = reported_of(publications(&device.handle(&msg, now()))[0]);
        assert_eq!(
            Value::Object(patch.reported),
            json!({"led": {"color": "red"}, "interval": null})
        );
        // The ledger holds the merge of everything reported: the null deleted `interval`.
        assert_eq!(device.ledger().reported.get("interval"), None);
        assert_eq!(device.ledger().reported["led"], json!({"color": "red"}));
        assert_eq!(device.ledger().reported["firmwareVersion"], json!("1.0.0"));
        assert_eq!(device.ledger().last_reported, Some((1, 3)));
        // Garbage and cleared retained messages are dropped.
        let empty = Incoming { payload: Vec::new(), ..msg.clone() };
        assert!(device.handle(&empty, now()).is_empty());
        let garbage = Incoming { payload: b"{".to_vec(), ..msg };
        assert!(device.handle(&garbage, now()).is_empty());
    }

    #[test]
    fn reboot_is_accepted_then_succeeds_in_the_next_boot() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        let effects = device.handle(&reboot_msg("r1", 5), now());
        assert_eq!(effects.len(), 3);
        // Persist comes first: the id is recorded before anything is published.
        assert_eq!(effects[0], Effect::Persist);
        assert_eq!(device.ledger().executed, vec!["r1".to_owned()]);
        let accepted_pub = publications(&effects)[0];
        assert_eq!(accepted_pub.topic, "kubetwin/v1/dev-1/rpc/res/r1");
        assert_eq!(accepted_pub.correlation.as_deref(), Some(&b"r1"[..]));
        let accepted = response_of(accepted_pub);
        assert_eq!(accepted.status, ResponseStatus::Accepted);
        assert_eq!(accepted.code, 202);
        assert_eq!((accepted.boot, accepted.seq), (1, 2));
        assert_eq!(accepted.message.as_deref(), Some("rebooting in 5s"));
        assert_eq!(effects[2], Effect::ScheduleReboot { delay: Duration::from_secs(5) });
        assert!(device.reboot_pending());

        // Same request again while pending: the Accepted answer, unchanged.
        let repeat = device.handle(&reboot_msg("r1", 5), now());
        assert_eq!(repeat.len(), 1);
        assert_eq!(response_of(publications(&repeat)[0]), accepted);
        // Another reboot while pending: busy.
        let busy = device.handle(&reboot_msg("r2", 0), now());
        let busy = response_of(publications(&busy)[0]);
        assert_eq!((busy.status, busy.code), (ResponseStatus::Rejected, 409));

        let down = device.begin_reboot();
        assert_eq!(down[0], Effect::Persist);
        let pubs = publications(&down);
        let rebooting = reported_of(pubs[0]);
        assert_eq!(rebooting.reported["reboot"], json!({"status": "rebooting", "requestId": "r1"}));
        let offline = presence_of(pubs[1]);
        assert_eq!(offline.state, PresenceState::Offline);
        assert_eq!(offline.reason.as_deref(), Some("reboot"));
        assert_eq!((offline.boot, offline.conn), (1, 1));

        let later = now() + 7_000;
        device.start_boot(later);
        assert_eq!((device.boot(), device.conn()), (2, 1));
        assert!(!device.reboot_pending());
        let up = device.on_connected();
        let pubs = publications(&up);
        assert_eq!(pubs.len(), 3);
        assert_eq!(presence_of(pubs[0]).boot, 2);
        let full = reported_of(pubs[1]);
        assert!(full.full);
        assert_eq!((full.boot, full.seq), (2, 1));
        assert_eq!(full.reported["reboot"], json!({"status": "done", "requestId": "r1"}));
        assert_eq!(full.reported["lastReboot"], json!(format_rfc3339(later)));
        let done = response_of(pubs[2]);
        assert_eq!(pubs[2].correlation.as_deref(), Some(&b"r1"[..]));
        assert_eq!((done.status, done.code), (ResponseStatus::Succeeded, 200));
        assert_eq!((done.boot, done.seq), (2, 2));
        assert_eq!(done.progress, Some(100));
        assert!(up.contains(&Effect::Persist));
        assert_eq!(device.ledger().last_reboot, Some(format_rfc3339(later)));

        // After the reboot, the repeated request gets Succeeded and is not executed again.
        let repeat = device.handle(&reboot_msg("r1", 5), now());
        assert_eq!(repeat.len(), 1);
        assert_eq!(response_of(publications(&repeat)[0]), done);
        assert_eq!(device.ledger().executed, vec!["r1".to_owned()]);
    }

    #[test]
    fn restart_keeps_last_reboot_and_request_memory() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        device.handle(&reboot_msg("r1", 0), now());
        device.begin_reboot();
        device.start_boot(now() + 1000);
        device.on_connected();
        // A new process with the same ledger.
        let mut restarted = Device::new(
            "dev-1",
            shared(MqttVersion::V5, Faults::default()),
            device.ledger().clone(),
        );
        restarted.start_boot(now() + 60_000);
        assert_eq!(restarted.boot(), 3);
        let pubs = restarted.on_connected();
        let full = reported_of(publications(&pubs)[1]);
        assert_eq!(full.reported["lastReboot"], json!(format_rfc3339(now() + 1000)));
        assert_eq!(full.reported["reboot"], json!({"status": "done", "requestId": "r1"}));
        let repeat = restarted.handle(&reboot_msg("r1", 0), now());
        assert_eq!(response_of(publications(&repeat)[0]).status, ResponseStatus::Succeeded);
    }

    #[test]
    fn refusals() {
        let mut device = booted(MqttVersion::V311, Faults::default());
        device.on_connected();
        let expired =
            device.handle(&request_msg("r1", "reboot", json!({}), "2025-05-01T12:00:30Z"), now());
        let p = publications(&expired)[0];
        // MQTT 3.1.1: the standard topic, no correlation data.
        assert_eq!(p.topic, "kubetwin/v1/dev-1/rpc/res/r1");
        assert_eq!(p.correlation, None);
        let r = response_of(p);
        assert_eq!((r.status, r.code), (ResponseStatus::Expired, 410));
        assert_eq!(r.message.as_deref(), Some("expired at 2025-05-01T12:00:30Z"));

        let unknown =
            device.handle(&request_msg("r2", "identify", json!({}), "2025-05-01T12:05:00Z"), now());
        let r = response_of(publications(&unknown)[0]);
        assert_eq!((r.status, r.code), (ResponseStatus::Rejected, 404));
        assert_eq!(r.message.as_deref(), Some("unknown method identify"));

        let bad = device.handle(
            &request_msg("r3", "reboot", json!({"delaySeconds": "x"}), "2025-05-01T12:05:00Z"),
            now(),
        );
        let r = response_of(publications(&bad)[0]);
        assert_eq!((r.status, r.code), (ResponseStatus::Rejected, 400));

        assert!(device.ledger().executed.is_empty());
        assert!(!device.reboot_pending());
        assert_eq!(device.ledger().recent.len(), 3);
        // Answers are remembered: the expired request repeated later is not re-evaluated.
        let repeat =
            device.handle(&request_msg("r1", "reboot", json!({}), "2025-05-01T12:00:30Z"), now());
        assert_eq!(response_of(publications(&repeat)[0]).status, ResponseStatus::Expired);
    }

    #[test]
    fn a_factory_reset_wipes_what_was_applied_and_marks_the_next_boot() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        let mut properties = Map::new();
        properties.insert("mode".into(), json!("eco"));
        let desired = DesiredDocument::new("uid-1", 3, "2025-05-01T12:00:00Z", properties);
        let message = desired_msg(&desired);
        device.handle(&message, now());
        assert_eq!(device.ledger().properties["mode"], json!("eco"));
        let reset = device
            .handle(&request_msg("f1", "factoryReset", json!({}), "2025-05-01T12:05:00Z"), now());
        let accepted = response_of(publications(&reset)[0]);
        assert_eq!(accepted.status, ResponseStatus::Accepted);
        assert_eq!(accepted.message.as_deref(), Some("resetting to factory state"));
        let wipe = Duration::from_secs(u64::from(FACTORY_RESET_SECONDS));
        assert!(reset.contains(&Effect::ScheduleReboot { delay: wipe }));
        device.begin_reboot();
        let later = now() + 5_000;
        device.start_boot(later);
        assert!(device.ledger().properties.is_empty(), "nothing configured");
        assert_eq!(device.ledger().applied, None, "nothing applied");
        let up = device.on_connected();
        let pubs = publications(&up);
        let full = reported_of(pubs[1]);
        assert_eq!(full.reported.get("mode"), None);
        assert_eq!(full.reported["factoryReset"], json!({"lastReset": format_rfc3339(later)}));
        assert_eq!(full.applied, None);
        let done = response_of(pubs[2]);
        assert_eq!((done.status, done.boot), (ResponseStatus::Succeeded, 2));
        assert_eq!(done.message.as_deref(), Some("reset to factory state"));
        // The retained desired document arrives again and is applied again.
        let again = device.handle(&message, now());
        assert!(!publications(&again).is_empty(), "applied after the reset");
        assert_eq!(device.ledger().executed, vec!["f1".to_owned()]);
    }

    #[test]
    fn plain_methods_answer_with_a_result_and_progress() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        let led = device.handle(
            &request_msg("l1", "setLed", json!({"on": true}), "2025-05-01T12:05:00Z"),
            now(),
        );
        let r = response_of(publications(&led)[0]);
        assert_eq!((r.status, r.code), (ResponseStatus::Succeeded, 200));
        assert_eq!(r.payload, Some(json!({"led": "on"})));
        let bad = device
            .handle(&request_msg("l2", "setLed", json!({"on": 1}), "2025-05-01T12:05:00Z"), now());
        assert_eq!(response_of(publications(&bad)[0]).code, 400);

        let started = device.handle(
            &request_msg("d1", "collectDiagnostics", json!({}), "2025-05-01T12:05:00Z"),
            now(),
        );
        assert_eq!(response_of(publications(&started)[0]).status, ResponseStatus::Accepted);
        assert!(started.contains(&Effect::ScheduleMethodStep { delay: DIAGNOSTICS_STEP }));
        let busy = device.handle(&reboot_msg("r1", 0), now());
        assert_eq!(response_of(publications(&busy)[0]).code, 409, "one thing at a time");
        let half = device.method_step_due();
        let r = response_of(publications(&half)[0]);
        assert_eq!((r.status, r.progress), (ResponseStatus::InProgress, Some(50)));
        assert_eq!(r.message.as_deref(), Some("collecting logs"));
        let done = device.method_step_due();
        let r = response_of(publications(&done)[0]);
        assert_eq!(r.status, ResponseStatus::Succeeded);
        assert_eq!(r.payload, Some(json!({"files": 3, "boot": 1})));
        assert!(!done.iter().any(|e| matches!(e, Effect::ScheduleMethodStep { .. })));
        assert!(device.method_step_due().is_empty(), "nothing runs any more");
        assert_eq!(device.ledger().executed, vec!["l1".to_owned(), "d1".to_owned()]);
    }

    #[test]
    fn a_desired_firmware_version_is_acknowledged_but_installs_nothing() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        let mut desired = Map::new();
        desired.insert("firmwareVersion".into(), json!("9.9.9"));
        desired.insert("mode".into(), json!("eco"));
        let doc = DesiredDocument::new("e1", 2, "2025-05-01T12:00:00Z", desired);
        let msg = desired_msg(&doc);
        let effects = device.handle(&msg, now());
        let patch = reported_of(publications(&effects)[0]);
        assert_eq!(Value::Object(patch.reported.clone()), json!({"mode": "eco"}));
        assert_eq!(patch.applied.map(|a| a.version), Some(2), "applied all the same");
        device.start_boot(now() + 1000);
        let up = device.on_connected();
        let full = reported_of(publications(&up)[1]);
        assert_eq!(full.reported["firmwareVersion"], json!("1.0.0"), "still its own firmware");
    }

    fn firmware_msg(version: &str, image: &[u8], generation: i64) -> Incoming {
        let digest = ring::digest::digest(&ring::digest::SHA256, image);
        let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let mut doc = DesiredDocument::new("e1", generation, "2025-05-01T12:00:00Z", Map::new());
        doc.firmware = Some(FirmwareOrder {
            version: version.into(),
            url: "http://127.0.0.1:1/fw.bin".into(),
            sha256,
            size_bytes: None,
        });
        desired_msg(&doc)
    }

    fn firmware_reported(effects: &[Effect]) -> ReportedFirmware {
        let patch = reported_of(publications(effects)[0]);
        ReportedFirmware::from_reported(&patch.reported).expect("firmware block")
    }

    #[test]
    fn a_firmware_update_downloads_verifies_applies_and_boots_the_new_image() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        device.on_connected();
        let image = b"image 1.1.0".to_vec();
        let started = device.handle(&firmware_msg("1.1.0", &image, 2), now());
        assert!(started.contains(&Effect::Download { url: "http://127.0.0.1:1/fw.bin".into() }));
        let downloading = firmware_reported(&started[2..]);
        assert_eq!(
            (downloading.state, downloading.target.as_deref()),
            (FirmwareState::Downloading, Some("1.1.0"))
        );
        // The same order again (a re-applied document) starts nothing.
        assert!(
            device
                .handle(&firmware_msg("1.1.0", &image, 3), now())
                .iter()
                .all(|e| !matches!(e, Effect::Download { .. }))
        );
        let verifying = device.download_finished(Ok(image));
        assert_eq!(firmware_reported(&verifying).state, FirmwareState::Verifying);
        let applying = device.firmware_step_due();
        assert_eq!(firmware_reported(&applying).state, FirmwareState::Applying);
        let rebooting = device.firmware_step_due();
        assert_eq!(firmware_reported(&rebooting).state, FirmwareState::Rebooting);
        assert!(rebooting.contains(&Effect::ScheduleReboot { delay: FIRMWARE_STEP }));
        let down = device.begin_reboot();
        assert_eq!(presence_of(publications(&down)[0]).reason.as_deref(), Some("firmware"));
        device.start_boot(now() + 5_000);
        let up = device.on_connected();
        assert_eq!(presence_of(publications(&up)[0]).firmware.as_deref(), Some("1.1.0"));
        let full = reported_of(publications(&up)[1]);
        assert_eq!(full.reported["firmwareVersion"], json!("1.1.0"));
        let block = ReportedFirmware::from_reported(&full.reported).expect("block");
        assert_eq!(
            (block.current.as_str(), block.state, block.code, block.committed),
            ("1.1.0", FirmwareState::Idle, Some(200), true)
        );
    }

    #[test]
    fn corrupt_images_are_refused_and_bad_images_roll_back() {
        let image = b"image 1.1.0".to_vec();
        let mut corrupt =
            booted(MqttVersion::V5, Faults { firmware_corrupt: true, ..Faults::default() });
        corrupt.on_connected();
        corrupt.handle(&firmware_msg("1.1.0", &image, 2), now());
        corrupt.download_finished(Ok(image.clone()));
        let refused = firmware_reported(&corrupt.firmware_step_due());
        assert_eq!((refused.state, refused.code), (FirmwareState::Error, Some(400)));
        assert!(refused.message.is_some_and(|m| m.starts_with("checksum mismatch")));

        let mut bad =
            booted(MqttVersion::V5, Faults { firmware_bad_image: true, ..Faults::default() });
        bad.on_connected();
        bad.handle(&firmware_msg("1.1.0", &image, 2), now());
        bad.download_finished(Ok(image));
        bad.firmware_step_due();
        bad.firmware_step_due();
        bad.begin_reboot();
        bad.start_boot(now() + 5_000);
        let full = reported_of(publications(&bad.on_connected())[1]);
        let block = ReportedFirmware::from_reported(&full.reported).expect("block");
        assert_eq!((block.current.as_str(), block.state), ("1.0.0", FirmwareState::Rolledback));

        let mut hung = booted(MqttVersion::V5, Faults { firmware_hang: true, ..Faults::default() });
        hung.on_connected();
        let effects = hung.handle(&firmware_msg("1.1.0", b"x", 2), now());
        assert!(!effects.iter().any(|e| matches!(e, Effect::Download { .. })), "never downloads");
    }

    #[test]
    fn fault_switches() {
        let mut rejecting =
            booted(MqttVersion::V5, Faults { reject_methods: true, ..Faults::default() });
        let effects = rejecting.handle(&reboot_msg("r1", 0), now());
        let r = response_of(publications(&effects)[0]);
        assert_eq!((r.status, r.code), (ResponseStatus::Rejected, 409));
        assert_eq!(r.message.as_deref(), Some(REJECT_MESSAGE));
        assert!(rejecting.ledger().executed.is_empty());

        let mut silent =
            booted(MqttVersion::V5, Faults { never_answer: true, ..Faults::default() });
        assert!(silent.handle(&reboot_msg("r1", 0), now()).is_empty());
        assert!(silent.ledger().recent.is_empty());
        assert!(silent.ledger().executed.is_empty());

        // The first request fails on purpose; its repeat gets the same answer; the next one
        // (a retry, with a new id) is executed.
        let mut flaky =
            booted(MqttVersion::V5, Faults { fail_first_requests: 1, ..Faults::default() });
        let first = response_of(publications(&flaky.handle(&reboot_msg("r1", 0), now()))[0]);
        assert_eq!((first.status, first.code), (ResponseStatus::Failed, 500));
        let again = response_of(publications(&flaky.handle(&reboot_msg("r1", 0), now()))[0]);
        assert_eq!(again.status, ResponseStatus::Failed, "a repeat is answered from memory");
        assert!(flaky.ledger().executed.is_empty());
        let retry = response_of(publications(&flaky.handle(&reboot_msg("r2", 0), now()))[0]);
        assert_eq!(retry.status, ResponseStatus::Accepted);
        assert_eq!(flaky.ledger().executed, ["r2"]);
    }

    #[test]
    fn executed_but_forgotten_request_is_never_run_again() {
        let mut device = Device::new(
            "dev-1",
            shared(MqttVersion::V5, Faults::default()),
            Ledger {
                executed: vec!["old".into()],
                recent: RecentRequests::new(1),
                ..Ledger::default()
            },
        );
        device.start_boot(now());
        assert!(device.handle(&reboot_msg("old", 0), now()).is_empty());
        assert!(!device.reboot_pending());
    }

    #[test]
    fn foreign_topics_and_other_v5_reply_topics() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        let mut msg = reboot_msg("r1", 0);
        msg.topic = Topics::default().request("dev-2", "reboot", "r1");
        assert!(device.handle(&msg, now()).is_empty());
        let mut msg = reboot_msg("r1", 0);
        msg.response_topic = Some("replies/r1".into());
        let effects = device.handle(&msg, now());
        assert_eq!(publications(&effects)[0].topic, "replies/r1");
        let mut msg = reboot_msg("r2", 0);
        msg.response_topic = None;
        msg.correlation = None;
        let effects = device.handle(&msg, now());
        let p = publications(&effects)[0];
        assert_eq!(p.topic, "kubetwin/v1/dev-1/rpc/res/r2");
        assert_eq!(p.correlation, None);
    }

    #[test]
    fn telemetry_patches_count_up() {
        let mut device = booted(MqttVersion::V5, Faults::default());
        let first = reported_of(&device.telemetry().unwrap());
        let second = reported_of(&device.telemetry().unwrap());
        assert_eq!(first.reported["telemetry"], json!({"counter": 1}));
        assert_eq!(second.reported["telemetry"], json!({"counter": 2}));
        assert_eq!((first.seq, second.seq), (1, 2));
        assert!(!second.full);
        assert_eq!(device.ledger().telemetry, Some(2), "saved with the ledger");
    }
}
