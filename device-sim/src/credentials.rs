//! Per-device identity for simulated devices: every device authenticates as itself, either
//! with a password derived from a fleet secret (user name = device id) or with a client
//! certificate whose common name is its device id, minted from a CA the simulator is given.
//!
//! Also writes mosquitto password-file entries for such devices, so a test or a demo can
//! give its broker the same credentials without storing 10,000 passwords anywhere.

use std::{num::NonZeroU32, path::Path, sync::Arc};

use base64::Engine as _;
use kubetwin_mqtt::{Credentials, Security, tls_config_from_pem};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
use ring::{hmac, pbkdf2, rand::SecureRandom};

/// Iterations of mosquitto's `$7$` password hash (PBKDF2-HMAC-SHA512), as `mosquitto_passwd`
/// writes them.
pub const MOSQUITTO_ITERATIONS: u32 = 101;
/// Bytes of salt in a `$7$` hash.
pub const SALT_BYTES: usize = 12;
/// Bytes of a `$7$` hash.
pub const HASH_BYTES: usize = 64;

/// Why credentials could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
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
    /// The secret is too short to derive passwords from.
    #[error("the device password secret must have at least 16 bytes")]
    WeakSecret,
    /// Certificate generation failed.
    #[error("device certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(#[from] kubetwin_mqtt::SecurityError),
    /// The system's random source failed.
    #[error("no randomness for a salt")]
    Random,
}

/// The password of `device_id` under the fleet `secret`: HMAC-SHA256 of the id, base64url.
/// Anyone holding the secret can compute any device's password, so it belongs to whoever
/// provisions devices (here: the simulator and the broker's password file).
pub fn derive_password(secret: &[u8], device_id: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, format!("kubetwin device password\0{device_id}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
}

/// A mosquitto password-file line for `user` with `password`, hashed the way
/// `mosquitto_passwd` does (`$7$`: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt).
pub fn mosquitto_password_line(
    user: &str,
    password: &str,
    random: &dyn SecureRandom,
) -> Result<String, CredentialsError> {
    Ok(password_line_with_salt(user, password, &salt(random)?))
}

fn password_line_with_salt(user: &str, password: &str, salt: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let hash = password_hash(password, salt);
    format!("{user}:$7${MOSQUITTO_ITERATIONS}${}${}", b64.encode(salt), b64.encode(hash))
}

/// mosquitto's password hash (PBKDF2-HMAC-SHA512, [`MOSQUITTO_ITERATIONS`], 64 bytes) of
/// `password` with `salt`, as its password file and its dynamic-security plugin store it.
pub fn password_hash(password: &str, salt: &[u8]) -> [u8; HASH_BYTES] {
    let mut hash = [0u8; HASH_BYTES];
    let iterations = NonZeroU32::new(MOSQUITTO_ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA512, iterations, salt, password.as_bytes(), &mut hash);
    hash
}

/// A fresh random salt of the length mosquitto uses.
pub fn salt(random: &dyn SecureRandom) -> Result<[u8; SALT_BYTES], CredentialsError> {
    let mut salt = [0u8; SALT_BYTES];
    random.fill(&mut salt).map_err(|_| CredentialsError::Random)?;
    Ok(salt)
}

/// Password-file lines for every device id, with passwords derived from `secret`.
pub fn device_password_lines(secret: &[u8], ids: &[String]) -> Result<String, CredentialsError> {
    let random = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(ids.len() * 140);
    for id in ids {
        out.push_str(&mosquitto_password_line(id, &derive_password(secret, id), &random)?);
        out.push('\n');
    }
    Ok(out)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|source| CredentialsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// How every device of a fleet proves who it is.
pub enum DeviceIdentity {
    /// No credentials (a broker that allows anonymous clients).
    Anonymous,
    /// User name = device id, password derived from a fleet secret.
    Password {
        /// The fleet secret.
        secret: Vec<u8>,
    },
    /// A client certificate with common name = device id, minted from a CA.
    Certificate {
        /// The CA that issues device certificates.
        issuer: Box<Issuer<'static, KeyPair>>,
    },
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Anonymous => "Anonymous",
            Self::Password { .. } => "Password",
            Self::Certificate { .. } => "Certificate",
        })
    }
}

impl DeviceIdentity {
    /// Passwords derived from the secret in `path` (at least 16 bytes).
    pub fn password_from(path: &Path) -> Result<Self, CredentialsError> {
        let secret = read("the device password secret", path)?;
        let secret = secret.trim_ascii().to_vec();
        if secret.len() < 16 {
            return Err(CredentialsError::WeakSecret);
        }
        Ok(Self::Password { secret })
    }

    /// Certificates minted from the CA certificate and key (PEM) in these files.
    pub fn certificates_from(ca_cert: &Path, ca_key: &Path) -> Result<Self, CredentialsError> {
        let cert =
            String::from_utf8_lossy(&read("the device CA certificate", ca_cert)?).into_owned();
        let key = String::from_utf8_lossy(&read("the device CA key", ca_key)?).into_owned();
        let key = KeyPair::from_pem(&key)?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key)?;
        Ok(Self::Certificate { issuer: Box::new(issuer) })
    }

    /// The TLS settings and credentials of `device_id`, on top of `base` (the broker's CA for
    /// TLS, if any).
    pub fn security(
        &self,
        device_id: &str,
        broker_ca_pem: Option<&[u8]>,
    ) -> Result<Security, CredentialsError> {
        match self {
            Self::Anonymous => Ok(Security {
                tls: broker_ca_pem.map(|ca| tls_config_from_pem(ca, None)).transpose()?,
                credentials: None,
            }),
            Self::Password { secret } => Ok(Security {
                tls: broker_ca_pem.map(|ca| tls_config_from_pem(ca, None)).transpose()?,
                credentials: Some(Credentials {
                    username: device_id.to_string(),
                    password: derive_password(secret, device_id),
                }),
            }),
            Self::Certificate { issuer } => {
                let (cert, key) = client_certificate(issuer, device_id)?;
                let tls = match broker_ca_pem {
                    Some(ca) => tls_config_from_pem(ca, Some((cert.as_bytes(), key.as_bytes())))?,
                    None => {
                        return Err(CredentialsError::Tls(kubetwin_mqtt::SecurityError::Pem {
                            what: "broker CA",
                            reason: "certificate identity needs TLS: pass --broker-ca-file".into(),
                        }));
                    }
                };
                Ok(Security { tls: Some(tls), credentials: None })
            }
        }
    }
}

/// A client certificate (PEM) and its key (PEM) for `common_name`, issued by `issuer`.
pub fn client_certificate(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
) -> Result<(String, String), CredentialsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Shares one loaded identity between the device tasks of a fleet.
pub type SharedIdentity = Arc<DeviceIdentity>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_lines_match_what_mosquitto_passwd_writes() {
        // `mosquitto_passwd -c -b pw dev-1 secret` wrote this line (mosquitto 2.0.11).
        let written = "dev-1:$7$101$A8w8dOoIxvvsIduw$63YUflb3zozWnO2qIvnBb0X2M4F2w4Rwd7uEbpIeoO+euAlyjD+5zMkuES+LbiQOEFPN5kOQzbbDlHXwAGftXg==";
        let salt =
            base64::engine::general_purpose::STANDARD.decode("A8w8dOoIxvvsIduw").expect("base64");
        assert_eq!(password_line_with_salt("dev-1", "secret", &salt), written);
    }

    #[test]
    fn each_device_gets_its_own_stable_password() {
        let secret = b"0123456789abcdef-fleet";
        let a = derive_password(secret, "plant.a");
        assert_eq!(a, derive_password(secret, "plant.a"), "stable");
        assert_ne!(a, derive_password(secret, "plant.b"), "per device");
        assert_ne!(a, derive_password(b"another-secret-16bytes", "plant.a"), "per secret");
        assert_eq!(a.len(), 43, "256 bits, base64url without padding");
    }

    #[test]
    fn a_minted_certificate_names_the_device() {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name.push(DnType::CommonName, "test device CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).expect("issuer");
        let (cert, key) = client_certificate(&issuer, "plant.sensor-1").expect("minted");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        let der = base64::engine::general_purpose::STANDARD
            .decode(cert.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .expect("PEM body");
        // The subject's common name, DER-encoded: OID 2.5.4.3, then a UTF8String.
        let mut cn = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 14];
        cn.extend_from_slice(b"plant.sensor-1");
        assert!(der.windows(cn.len()).any(|w| w == cn), "the CN is the device id");
        let identity = DeviceIdentity::Certificate { issuer: Box::new(issuer) };
        let security = identity.security("plant.sensor-1", Some(ca_cert.pem().as_bytes()));
        assert!(security.is_ok_and(|s| s.tls.is_some() && s.credentials.is_none()));
    }
}
