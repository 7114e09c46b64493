//! Errors of the test harness.

/// Errors of the test harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool binary is missing or stale.
    #[error("{0}")]
    MissingTool(String),
    /// A process could not be started or did not become ready.
    #[error("{name} did not start: {reason}\n--- last lines of {log} ---\n{tail}")]
    Startup {
        /// Which process.
        name: String,
        /// What went wrong.
        reason: String,
        /// Path of its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// File system trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Certs(#[from] rcgen::Error),
    /// The Kubernetes client could not be built or a request failed.
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be read.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A kubectl call failed.
    #[error("kubectl {args}: {stderr}")]
    Kubectl {
        /// The arguments given.
        args: String,
        /// What kubectl printed on stderr.
        stderr: String,
    },
}

/// Result type of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an [`std::io::Error`] with what was being done.
pub fn io_context(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
