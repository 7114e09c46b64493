//! TLS and credentials for a broker connection.

use std::{path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Why TLS or credentials could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file holds.
        what: &'static str,
        /// Its path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// PEM data is unusable.
    #[error("{what}: {reason}")]
    Pem {
        /// Which PEM data.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// MQTT user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (with per-device identity: the device id).
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// TLS and credentials of a connection.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS client configuration; required for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// User name and password.
    pub credentials: Option<Credentials>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("credentials", &self.credentials)
            .finish()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// A rustls client configuration from PEM files: the CA bundle that signs the broker's
/// certificate and, for mutual TLS, a client certificate chain and its key.
pub fn tls_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, SecurityError> {
    let ca = read("the broker CA file", ca_file)?;
    let client = match client {
        Some((cert, key)) => {
            Some((read("the client certificate", cert)?, read("the client key", key)?))
        }
        None => None,
    };
    tls_config_from_pem(&ca, client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())))
}

/// A rustls client configuration from PEM data in memory (for example certificates a test or
/// the simulator generated).
pub fn tls_config_from_pem(
    ca_pem: &[u8],
    client: Option<(&[u8], &[u8])>,
) -> Result<Arc<rustls::ClientConfig>, SecurityError> {
    let pem_error = |what| {
        move |e: rustls::pki_types::pem::Error| SecurityError::Pem { what, reason: e.to_string() }
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.map_err(pem_error("CA certificate"))?)?;
    }
    if roots.is_empty() {
        return Err(SecurityError::Pem {
            what: "CA bundle",
            reason: "no certificate in it".into(),
        });
    }
    // An explicit provider: the process-wide default may be unset or another one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_error("client certificate"))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(pem_error("client key"))?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let error = tls_config_from_pem(b"not a certificate", None).err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("CA bundle: no certificate in it"));
    }

    #[test]
    fn a_missing_ca_file_names_the_file() {
        let error = tls_config(Path::new("/nonexistent/ca.pem"), None).err().map(|e| e.to_string());
        let error = error.unwrap_or_default();
        assert!(
            error.starts_with("cannot read the broker CA file /nonexistent/ca.pem:"),
            "{error}"
        );
    }

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = Credentials { username: "dev-1".into(), password: "s3cret".into() };
        let printed = format!("{:?}", Security { tls: None, credentials: Some(credentials) });
        assert_eq!(
            printed,
            "Security { tls: false, credentials: Some(Credentials { username: \"dev-1\", .. }) }"
        );
    }
}
