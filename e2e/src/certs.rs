//! The PKI of a test control plane: one CA, serving and client certificates, and the
//! service-account signing key.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Result, io_context};

/// A certificate and its private key, PEM encoded.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// Every certificate and key a test control plane needs.
#[derive(Debug)]
pub struct Pki {
    /// The cluster CA (also the client CA).
    pub ca: CertPair,
    /// kube-apiserver's serving certificate.
    pub apiserver: CertPair,
    /// Client certificate of the admin user (group `system:masters`).
    pub admin: CertPair,
    /// Client certificate of kube-controller-manager.
    pub controller_manager: CertPair,
    /// Key pair that signs service-account tokens (PEM private key).
    pub service_account_key_pem: String,
    /// Its public key (PEM).
    pub service_account_pub_pem: String,
}

impl Pki {
    /// Generates a fresh PKI for an API server reachable at 127.0.0.1.
    pub fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "kubetwin-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = CertPair { cert_pem: ca_cert.pem(), key_pem: ca_key.serialize_pem() };
        let issuer = Issuer::new(ca_params, ca_key);

        let apiserver = leaf(
            &issuer,
            "kube-apiserver",
            None,
            &[
                "127.0.0.1",
                "10.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = leaf(
            &issuer,
            "kubetwin-admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let controller_manager = leaf(
            &issuer,
            "system:kube-controller-manager",
            None,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let sa_key = KeyPair::generate()?;
        Ok(Self {
            ca,
            apiserver,
            admin,
            controller_manager,
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_pub_pem: sa_key.public_key_pem(),
        })
    }

    /// Writes the files the control plane reads into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<()> {
        let files = [
            ("ca.crt", &self.ca.cert_pem),
            ("ca.key", &self.ca.key_pem),
            ("apiserver.crt", &self.apiserver.cert_pem),
            ("apiserver.key", &self.apiserver.key_pem),
            ("sa.key", &self.service_account_key_pem),
            ("sa.pub", &self.service_account_pub_pem),
        ];
        for (name, content) in files {
            let path = dir.join(name);
            fs::write(&path, content).map_err(io_context(format!("writing {}", path.display())))?;
        }
        Ok(())
    }
}

/// The PEM files of a broker with mutual TLS.
#[derive(Clone, Debug)]
pub struct BrokerTls {
    /// CA that signs the broker's and the clients' certificates (and issues device
    /// certificates: its key is `ca_key`).
    pub ca: PathBuf,
    /// The CA's private key.
    pub ca_key: PathBuf,
    /// The broker's serving certificate (for 127.0.0.1 and localhost).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate the broker accepts.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// Generates a CA, a server certificate for 127.0.0.1 and a client certificate for an MQTT
/// broker with mutual TLS, and writes them into `dir`.
pub fn write_broker_tls(dir: &Path) -> Result<BrokerTls> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "kubetwin-test-broker-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let server = leaf(
        &issuer,
        "mosquitto",
        None,
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let client =
        leaf(&issuer, "kubetwin-operator", None, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    let files = [
        ("broker-ca.crt", ca_cert.pem()),
        ("broker-ca.key", ca_key_pem),
        ("broker.crt", server.cert_pem),
        ("broker.key", server.key_pem),
        ("client.crt", client.cert_pem),
        ("client.key", client.key_pem),
    ];
    for (name, content) in files {
        let path = dir.join(name);
        fs::write(&path, content).map_err(io_context(format!("writing {}", path.display())))?;
    }
    Ok(BrokerTls {
        ca: dir.join("broker-ca.crt"),
        ca_key: dir.join("broker-ca.key"),
        server_cert: dir.join("broker.crt"),
        server_key: dir.join("broker.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    })
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertPair> {
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        params.distinguished_name.push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}
