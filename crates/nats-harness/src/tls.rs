//! Certificates for a nats-server with TLS: a CA, a server certificate for the single node's
//! address, and a client certificate, written as PEM files into a directory of the test's.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The PEM files of one test's certificates.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate that signed the others.
    pub ca: PathBuf,
    /// The server's certificate (for 127.0.0.10 and `localhost`) and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate and key, for servers that verify their clients.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Makes a new CA and the certificates it signs, in `dir`.
    pub fn new(dir: &Path) -> Result<Self, crate::Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "chatroom test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let leaf =
            |names: Vec<String>, usage: ExtendedKeyUsagePurpose| -> Result<(String, String), crate::Error> {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(names)?;
                params.distinguished_name.push(DnType::CommonName, "chatroom test");
                params.extended_key_usages = vec![usage];
                let cert = params.signed_by(&key, &ca)?;
                Ok((cert.pem(), key.serialize_pem()))
            };
        let (server_cert, server_key) =
            leaf(vec!["127.0.0.10".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_cert, client_key) = leaf(vec!["relay.test".into()], ExtendedKeyUsagePurpose::ClientAuth)?;

        let write = |name: &str, pem: &str| -> Result<PathBuf, crate::Error> {
            let path = dir.join(name);
            fs::write(&path, pem)?;
            Ok(path)
        };
        Ok(Self {
            ca: write("ca.pem", &ca.pem())?,
            server_cert: write("server-cert.pem", &server_cert)?,
            server_key: write("server-key.pem", &server_key)?,
            client_cert: write("client-cert.pem", &client_cert)?,
            client_key: write("client-key.pem", &client_key)?,
        })
    }

    /// The server's `tls` block: clients must speak TLS, and with `verify` must present a
    /// certificate the CA signed.
    pub fn server_config(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n}}\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca.display()
        )
    }
}
