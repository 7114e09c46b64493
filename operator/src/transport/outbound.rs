//! What the operator publishes: desired documents (retained) and method requests (with MQTT 5
//! request properties). Encoding failures are errors, never an empty payload: on a retained
//! topic an empty payload would delete the device's desired document.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use kubetwin_mqtt::{Client, Publication, RequestProperties};
use kubetwin_protocol::{
    Codec, DesiredDocument, DeviceId, MethodRequest, OperatorSession, RequestId, Topics,
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{error::Error, telemetry::metrics::Metrics};

/// Longest wait for the connection to take a publication into its request queue. The queue
/// drains as fast as the broker acknowledges, so a wait this long means the outgoing side is
/// stalled; a reconcile (or a shutdown waiting for it) must not wait without end.
const QUEUE_STALL: Duration = Duration::from_secs(30);

/// Publishes the operator's messages; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    topics: Topics,
    codec: Codec,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// A publisher over `client`.
    pub fn new(client: Client, topics: Topics, codec: Codec, metrics: Arc<Metrics>) -> Self {
        Self { client, topics, codec, metrics }
    }

    /// The topics of the contract under the configured root.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Hands `message` to the connection within [`QUEUE_STALL`].
    async fn send(&self, message: Publication) -> Result<(), Error> {
        within_stall(self.client.publish(message)).await
    }

    /// Publishes the retained desired document of `device`.
    pub async fn desired(
        &self,
        device: &DeviceId,
        document: &DesiredDocument,
    ) -> Result<(), Error> {
        let payload = self.codec.encode(document)?;
        let message = Publication::new(self.topics.desired(device.as_str()), payload, true);
        self.send(message).await?;
        self.metrics.published("desired");
        Ok(())
    }

    /// Clears the retained desired document of `device` (an empty retained payload).
    pub async fn clear_desired(&self, device: &DeviceId) -> Result<(), Error> {
        let message = Publication::new(self.topics.desired(device.as_str()), Vec::new(), true);
        self.send(message).await?;
        self.metrics.published("desired-clear");
        Ok(())
    }

    /// Announces a new operator session (retained): every device that sees it sends a full
    /// report and its latest answers again, which recovers whatever this operator may have
    /// lost between the broker's acknowledgement and the status write. Returns the session.
    pub async fn new_session(&self, issued_at: &str, devices: usize) -> Result<String, Error> {
        let session = session_nonce()?;
        let mut announcement = OperatorSession::new(session.clone(), issued_at);
        announcement.resync_within_ms = Some(resync_spread_ms(devices));
        let payload = self.codec.encode(&announcement)?;
        let message = Publication::new(self.topics.operator_session(), payload, true);
        self.send(message).await?;
        self.metrics.published("session");
        Ok(session)
    }

    /// Leaves the broker with a clean DISCONNECT (at shutdown), queued within
    /// [`QUEUE_STALL`]: a stalled connection must not keep a stopping leader from releasing
    /// its Lease.
    pub async fn disconnect(&self) -> Result<(), Error> {
        within_stall(self.client.disconnect()).await
    }

    /// Publishes a method request to `device`; on MQTT 5 with the response topic, the request
    /// id as correlation data and a message expiry of `expiry_seconds`.
    pub async fn request(
        &self,
        device: &DeviceId,
        request_id: &RequestId,
        message: &MethodRequest,
        expiry_seconds: u32,
    ) -> Result<(), Error> {
        let payload = self.codec.encode(message)?;
        let mut publication = Publication::new(
            self.topics.request(device.as_str(), &message.method, request_id.as_str()),
            payload,
            false,
        );
        publication.properties = Some(RequestProperties {
            response_topic: Some(self.topics.response(device.as_str(), request_id.as_str())),
            correlation_data: Some(Bytes::copy_from_slice(request_id.as_str().as_bytes())),
            message_expiry_seconds: Some(expiry_seconds.max(1)),
        });
        self.send(publication).await?;
        self.metrics.published("request");
        Ok(())
    }
}

/// Waits for `queued` (a request handed to the connection) at most [`QUEUE_STALL`].
async fn within_stall(
    queued: impl Future<Output = Result<(), kubetwin_mqtt::ClientError>>,
) -> Result<(), Error> {
    match tokio::time::timeout(QUEUE_STALL, queued).await {
        Ok(queued) => Ok(queued?),
        Err(_) => {
            tracing::error!(waited = ?QUEUE_STALL, "the MQTT connection took no new request; its outgoing side is stalled");
            Err(Error::PublishStalled(QUEUE_STALL))
        }
    }
}

/// Resyncs a second the operator asks a fleet for: every device sends about three messages.
const RESYNCS_PER_SECOND: u64 = 2000;

/// Milliseconds over which `devices` devices should spread their resyncs: at least a second,
/// [`RESYNCS_PER_SECOND`], at most the protocol's limit.
pub fn resync_spread_ms(devices: usize) -> u64 {
    let devices = u64::try_from(devices).unwrap_or(u64::MAX);
    (devices.saturating_mul(1000) / RESYNCS_PER_SECOND)
        .clamp(1000, kubetwin_protocol::message::MAX_RESYNC_WITHIN_MS)
}

/// A random session nonce: 32 hexadecimal digits.
fn session_nonce() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| Error::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resync_spread_grows_with_the_fleet_within_bounds() {
        let table = [(0, 1000), (100, 1000), (2000, 1000), (10_000, 5000), (100_000, 50_000)];
        for (devices, ms) in table {
            assert_eq!(resync_spread_ms(devices), ms, "{devices} devices");
        }
        assert_eq!(resync_spread_ms(usize::MAX), 600_000);
    }

    #[test]
    fn session_nonces_are_valid_ids_and_differ() {
        let a = session_nonce().unwrap();
        let b = session_nonce().unwrap();
        assert_eq!(a.len(), 32);
        assert!(kubetwin_protocol::validate_request_id(&a).is_ok());
        assert_ne!(a, b);
    }
}
