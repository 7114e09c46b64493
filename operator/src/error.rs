//! Errors of the operator.

/// Everything that can go wrong in a reconcile or at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A Kubernetes API call got no answer in time (a dead connection; the call is retried
    /// with the reconcile).
    #[error("kubernetes API: no answer within {}s", .0.as_secs())]
    NoAnswer(std::time::Duration),
    /// A status document could not be serialized.
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A device's reported properties, kept as text in the fleet index, did not read back
    /// (a bug: the index wrote the text it reads).
    #[error("reading a device's reported properties back: {0}")]
    Reported(#[source] ReadBackError),
    /// A cached Device did not read back (a bug: the cache wrote the text it reads).
    #[error("reading a cached Device back: {0}")]
    CachedDevice(#[source] ReadBackError),
    /// An MQTT message could not be encoded.
    #[error("encoding an MQTT message: {0}")]
    Encode(#[from] kubetwin_protocol::EncodeError),
    /// An MQTT publish could not be handed to the connection.
    #[error("MQTT publish: {0}")]
    Publish(#[from] kubetwin_mqtt::ClientError),
    /// The MQTT connection took no new request for this long: its outgoing side is stalled
    /// (the reconcile fails and is retried, rather than waiting without end).
    #[error(
        "MQTT publish: the connection took no new request within {}s; its outgoing side is stalled",
        .0.as_secs()
    )]
    PublishStalled(std::time::Duration),
    /// A device position cannot be shown in the API.
    #[error("device position: {0}")]
    Cursor(#[from] kubetwin_api::CursorOutOfRange),
    /// The object lacks a field the API server always sets (name, namespace, uid).
    #[error("object is missing {0}")]
    MissingField(&'static str),
    /// An object holds a value admission should have refused (for example a selector that
    /// does not parse).
    #[error("invalid object: {0}")]
    Invalid(String),
    /// A setting is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The operating system's random source failed.
    #[error("the system random source failed")]
    Random,
    /// Leader election failed.
    #[error("leader election: {0}")]
    LeaderElection(String),
    /// The kubetwin CRDs are not installed in the cluster.
    #[error(
        "the kubetwin CRDs are not installed ({0}): apply crds/ or install the Helm chart first"
    )]
    CrdsMissing(String),
}

/// Result type of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why text the operator keeps does not read back (a cached Device in `twin::cache`, a device's
/// reported properties in `fleet::compact`): a bug of that module, which wrote what it reads.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// The compressed text does not decompress.
    #[error("the cached text does not decompress: {0}")]
    Decompress(#[from] lz4_flex::block::DecompressError),
    /// The decompressed text is not UTF-8.
    #[error("the cached text is not UTF-8: {0}")]
    NotText(#[from] std::string::FromUtf8Error),
    /// The text does not parse as what was asked for.
    #[error("the kept text does not read as asked: {0}")]
    Parse(#[from] serde_json::Error),
}
