//! `package --push`: the image [`image::build`] made, pushed to a registry
//! over the OCI distribution API, byte for byte, so the manifest digest the
//! registry stores is the one `render` pins in `sha256` (what Istio's agent
//! compares for an `oci://` url).
//!
//! The client is the ORAS project's `oci-client` (what `oras` itself is
//! built on in Rust): it speaks both challenges registries send (HTTP Basic,
//! as the CNCF registry with htpasswd and Harbor's robot accounts do, and the
//! Bearer token flow of Artifact Registry, GHCR, Docker Hub). Credentials are
//! looked up the way `docker login` stores them and Istio's agent reads a
//! pull secret: `auths[<registry host>]` of a Docker config file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::Serialize;

use super::image::{self, Image};

/// How to log in to the registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (a public registry, or one that lets anyone push).
    Anonymous,
    /// A user name and password (or token) for HTTP Basic, or for the
    /// registry's token service.
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => write!(f, "Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// Where the image goes: `REGISTRY/REPOSITORY:TAG`, with or without `oci://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The registry's host (and port), as a pull secret's `auths` key names it.
    pub registry: String,
    /// The repository path inside the registry.
    pub repository: String,
    /// The tag pushed.
    pub tag: String,
}

impl Target {
    /// Reads `oci://REGISTRY/REPOSITORY:TAG`. The registry must be named (a
    /// WasmPlugin's url has no default registry worth guessing), and so must
    /// the tag: the digest is what Istio pins, the tag is what people read.
    pub fn parse(text: &str) -> anyhow::Result<Target> {
        let bare = text.strip_prefix("oci://").unwrap_or(text);
        if bare.contains("://") {
            bail!("{text:?}: a registry reference is REGISTRY/REPOSITORY:TAG (or oci://...), not another URL scheme");
        }
        if bare.contains('@') {
            bail!("{text:?}: push to a tag (REGISTRY/REPOSITORY:TAG); the digest is what the push prints");
        }
        let (registry, rest) = bare
            .split_once('/')
            .with_context(|| format!("{text:?}: name the registry: REGISTRY/REPOSITORY:TAG"))?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            bail!("{text:?}: {registry:?} is not a registry host (e.g. asia-northeast1-docker.pkg.dev, registry.example:5000)");
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => bail!("{text:?}: name the tag: REGISTRY/REPOSITORY:TAG"),
        };
        let reference: Reference = bare
            .parse()
            .with_context(|| format!("{text:?} is not an image reference"))?;
        anyhow::ensure!(
            reference.registry() == registry && reference.repository() == repository,
            "{text:?} is not an image reference"
        );
        Ok(Target {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }

    /// `REGISTRY/REPOSITORY:TAG`.
    pub fn reference(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }

    /// The url a WasmPlugin names: `oci://REGISTRY/REPOSITORY:TAG`.
    pub fn url(&self) -> String {
        format!("oci://{}", self.reference())
    }
}

/// What a push left in the registry.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    /// `oci://REGISTRY/REPOSITORY:TAG`: the WasmPlugin's (or TrafficExtension's) url.
    pub url: String,
    /// The manifest digest the registry serves for the tag (hex): its `sha256`.
    pub sha256: String,
    /// Blobs the registry did not have yet, and the bytes sent for them.
    pub blobs_sent: usize,
    pub bytes_sent: usize,
    /// Blobs it already had (an earlier push of the same layers).
    pub blobs_present: usize,
}

/// Credentials for `registry` from a Docker config file (`docker login`,
/// `crane auth login`, or a pull secret's `.dockerconfigjson`): `auths` by
/// the registry host, `auth` (base64 `user:password`) or `username` and
/// `password`. Anonymous when the file has no entry for it.
pub fn credentials_from_docker_config(text: &str, registry: &str) -> anyhow::Result<Credentials> {
    let v: serde_json::Value = serde_json::from_str(text).context("not a Docker config (JSON)")?;
    let auths = match v.get("auths") {
        Some(serde_json::Value::Object(a)) => a,
        None => return Ok(Credentials::Anonymous),
        Some(_) => bail!("\"auths\" is not an object"),
    };
    // docker login writes the bare host; older clients an https:// URL.
    let entry = auths.iter().find_map(|(k, e)| {
        let host = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        (host == registry).then_some(e)
    });
    let Some(entry) = entry else {
        return Ok(Credentials::Anonymous);
    };
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .with_context(|| format!("auths[{registry:?}].auth is not base64"))?;
        let decoded = String::from_utf8(decoded)
            .with_context(|| format!("auths[{registry:?}].auth is not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .with_context(|| format!("auths[{registry:?}].auth is not base64 of user:password"))?;
        return Ok(Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    match (
        entry.get("username").and_then(|u| u.as_str()),
        entry.get("password").and_then(|p| p.as_str()),
    ) {
        (Some(u), Some(p)) => Ok(Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }),
        _ => bail!("auths[{registry:?}] has neither auth nor username and password"),
    }
}

/// The Docker config file `docker login` writes: `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
}

/// Pushes every blob of `img` the registry lacks, then its manifest under
/// `target`'s tag, and reads the tag back: the registry must serve the very
/// manifest digest `img` has. `ca_pem` adds roots for a registry whose
/// certificate a private CA signed.
pub fn push(
    img: &Image,
    target: &Target,
    credentials: &Credentials,
    ca_pem: Option<&[u8]>,
) -> anyhow::Result<Pushed> {
    // reqwest's rustls has no crypto provider of its own here: ring (already
    // in the tree, and no C toolchain to build), once per process. rustls
    // deprecates it for lacking post-quantum key exchange; aws-lc-rs would
    // bring that at the cost of building aws-lc from C.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = ClientConfig {
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..ClientConfig::default()
    };
    if let Some(pem) = ca_pem {
        anyhow::ensure!(
            String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----"),
            "the registry CA file holds no PEM certificate"
        );
        config.extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: pem.to_vec(),
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the push's I/O runtime")?;
    runtime.block_on(push_async(Client::new(config), img, target, credentials))
}

async fn push_async(
    client: Client,
    img: &Image,
    target: &Target,
    credentials: &Credentials,
) -> anyhow::Result<Pushed> {
    let reference: Reference = target
        .reference()
        .parse()
        .with_context(|| format!("{} is not an image reference", target.reference()))?;
    let auth = match credentials {
        Credentials::Anonymous => RegistryAuth::Anonymous,
        Credentials::Basic { username, password } => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
    };
    let at = target.registry.as_str();
    client
        .auth(&reference, &auth, RegistryOperation::Push)
        .await
        .map_err(|e| explain(e, at))
        .with_context(|| format!("cannot log in to {at} to push"))?;
    let manifest = img
        .blobs
        .get(&img.manifest_digest)
        .context("the image has no manifest blob")?;
    let mut pushed = Pushed {
        url: target.url(),
        sha256: String::new(),
        blobs_sent: 0,
        bytes_sent: 0,
        blobs_present: 0,
    };
    for (hex, bytes) in &img.blobs {
        if *hex == img.manifest_digest {
            continue;
        }
        let digest = format!("sha256:{hex}");
        if client
            .blob_exists(&reference, &digest)
            .await
            .map_err(|e| explain(e, at))?
        {
            pushed.blobs_present += 1;
            continue;
        }
        client
            .push_blob(&reference, bytes.clone(), &digest)
            .await
            .map_err(|e| explain(e, at))
            .with_context(|| format!("cannot push blob {digest} ({} bytes)", bytes.len()))?;
        pushed.blobs_sent += 1;
        pushed.bytes_sent += bytes.len();
    }
    let content_type = reqwest_header(image::OCI_MANIFEST)?;
    client
        .push_manifest_raw(&reference, manifest.clone(), content_type)
        .await
        .map_err(|e| explain(e, at))
        .with_context(|| format!("cannot push the manifest to {}", target.reference()))?;
    // Read the tag back: what a puller resolves is what gets pinned.
    let served = client
        .fetch_manifest_digest(&reference, &auth)
        .await
        .map_err(|e| explain(e, at))
        .with_context(|| format!("cannot read {} back", target.reference()))?;
    let served = served
        .strip_prefix("sha256:")
        .unwrap_or(&served)
        .to_string();
    anyhow::ensure!(
        served == img.manifest_digest,
        "{} serves manifest sha256:{served} after the push, not the image's sha256:{}",
        target.reference(),
        img.manifest_digest
    );
    pushed.sha256 = served;
    Ok(pushed)
}

fn reqwest_header(v: &str) -> anyhow::Result<http::HeaderValue> {
    http::HeaderValue::from_str(v).context("a media type is not a header value")
}

/// The client's error with what usually causes it, and the chain of causes
/// (a TLS failure is three levels down in reqwest's error).
fn explain(e: oci_client::errors::OciDistributionError, registry: &str) -> anyhow::Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    let hint = if text.contains("onnection refused") || text.contains("dns error") {
        format!("\n  nothing answered at {registry}")
    } else if text.contains("UnknownIssuer") || text.contains("certificate") {
        format!("\n  the registry's certificate is not signed by a CA this machine trusts: --registry-ca CA.pem (or SSL_CERT_FILE) names the CA of {registry}")
    } else if text.contains("UNAUTHORIZED")
        || text.contains("nauthorized")
        || text.contains("authentication required")
        || text.contains("status code 401")
    {
        format!("\n  the registry refused the credentials: docker login {registry} (or --username and --password-stdin)")
    } else {
        String::new()
    };
    anyhow::anyhow!("{text}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_registry_repository_and_tag() {
        let t = Target::parse("oci://registry.example:5443/hybridmesh/hybridmesh-filter:0.1.0")
            .unwrap();
        assert_eq!(t.registry, "registry.example:5443");
        assert_eq!(t.repository, "hybridmesh/hybridmesh-filter");
        assert_eq!(t.tag, "0.1.0");
        assert_eq!(
            t.url(),
            "oci://registry.example:5443/hybridmesh/hybridmesh-filter:0.1.0"
        );
        assert_eq!(
            Target::parse("asia-northeast1-docker.pkg.dev/p/r/f:1")
                .unwrap()
                .registry,
            "asia-northeast1-docker.pkg.dev"
        );
        for bad in [
            "hybridmesh/filter:0.1.0",
            "registry.example/filter",
            "registry.example/filter@sha256:00",
            "https://registry.example/filter:1",
            "registry.example:5000/Upper:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn credentials_come_from_auths_by_registry_host() {
        let cfg = r#"{"auths":{"registry.example:5443":{"auth":"aHlicmlkbWVzaDpzM2NyZXQ="},
            "https://other.example/v1/":{"username":"u","password":"p"}}}"#;
        assert_eq!(
            credentials_from_docker_config(cfg, "registry.example:5443").unwrap(),
            Credentials::Basic {
                username: "hybridmesh".into(),
                password: "s3cret".into()
            }
        );
        assert_eq!(
            credentials_from_docker_config(cfg, "other.example").unwrap(),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            credentials_from_docker_config(cfg, "third.example").unwrap(),
            Credentials::Anonymous
        );
        assert!(credentials_from_docker_config(
            r#"{"auths":{"r.example":{"auth":"!!"}}}"#,
            "r.example"
        )
        .is_err());
        assert!(format!(
            "{:?}",
            Credentials::Basic {
                username: "u".into(),
                password: "secret".into()
            }
        )
        .contains("<redacted>"));
    }
}
