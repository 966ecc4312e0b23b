//! The mesh's certificates, made at start-up: one CA (the mesh root, as
//! istiod's self-signed root) and a leaf per SPIFFE identity, each with its
//! id as the URI SAN, as Istio's workload certificates carry it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// PEM files of one identity.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub spiffe: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA and the leaves written under a folder.
pub struct Certs {
    pub ca: PathBuf,
    dir: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    count: usize,
}

impl Certs {
    /// A fresh mesh CA in `dir/ca.pem`.
    pub fn new(dir: &Path) -> anyhow::Result<Certs> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "cluster.local");
        dn.push(DnType::CommonName, "hybridmesh replica root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key).context("CA certificate")?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem())?;
        Ok(Certs {
            ca,
            dir: dir.to_path_buf(),
            ca_cert,
            ca_key,
            count: 0,
        })
    }

    /// A workload certificate for `spiffe` (client and server auth), signed by the CA.
    pub fn leaf(&mut self, spiffe: &str) -> anyhow::Result<Leaf> {
        self.count += 1;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(spiffe.try_into()?)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .with_context(|| format!("certificate for {spiffe}"))?;
        let stem = format!("leaf-{}", self.count);
        let cert_path = self.dir.join(format!("{stem}.pem"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(Leaf {
            spiffe: spiffe.to_string(),
            cert: cert_path,
            key: key_path,
        })
    }
}
