//! `hybridmesh package`: the filter's `.wasm` as an OCI image Istio's Wasm
//! image fetcher accepts, written as an OCI image layout (folder or tar) for
//! `crane push` / `oras cp` / `skopeo copy`, or pushed to a registry itself
//! (`--push`, [`hybridmesh_ops::deploy::push`]); `--verify` reads one back the
//! way Istio does. See `hybridmesh_ops::deploy::image` for the format and for
//! which digest goes in the WasmPlugin's `sha256`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use hybridmesh_ops::deploy::image::{self, Variant};
use hybridmesh_ops::deploy::push::{self, Credentials, Target};

use super::{Output, Paint};
use crate::Outcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An ordinary OCI image: one tar.gz layer holding plugin.wasm (Istio's
    /// "compat" variant; every registry takes it).
    Compat,
    /// The Wasm OCI artifact: a application/vnd.module.wasm.config.v1+json
    /// layer and the application/vnd.module.wasm.content.layer.v1+wasm layer.
    Oci,
}

/// Package the filter as an OCI image for a WasmPlugin, push it, or verify one.
///
/// Writes an OCI image layout (a folder, or a tar when OUT ends in .tar)
/// and/or pushes the image to a registry (--push), and prints the digest
/// that goes in the WasmPlugin's sha256: for oci:// urls Istio compares the
/// image manifest digest, not the module's sha256.
///
/// --push logs in with the credentials `docker login` stored for the
/// registry ($DOCKER_CONFIG/config.json or ~/.docker/config.json), or with
/// --username and --password-stdin.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh package --push oci://asia-northeast1-docker.pkg.dev/PROJECT/hybridmesh/hybridmesh-filter:0.1.0\n  hybridmesh package --out hybridmesh-image\n  printf %s \"$TOKEN\" | hybridmesh package --push registry.example:5443/hybridmesh/hybridmesh-filter:0.1.0 --username robot --password-stdin --registry-ca ca.pem\n  hybridmesh package --verify hybridmesh-image"
)]
pub struct PackageCommand {
    /// The module (default: the filter this repository builds).
    #[arg(long, value_name = "MODULE.wasm")]
    wasm: Option<PathBuf>,
    /// Where to write the image layout (a folder; a tar when it ends in .tar).
    #[arg(long, value_name = "PATH", required_unless_present_any = ["verify", "push"])]
    out: Option<PathBuf>,
    /// Push the image to REGISTRY/REPOSITORY:TAG (oci:// optional) and
    /// print the url and sha256 a WasmPlugin pins.
    #[arg(long, value_name = "REFERENCE", conflicts_with = "verify")]
    push: Option<String>,
    /// A PEM file of CA certificates the registry's certificate chains to
    /// (a private registry), in addition to the system's.
    #[arg(long, value_name = "CA.pem", requires = "push")]
    registry_ca: Option<PathBuf>,
    /// The user name to push as (instead of the Docker config's).
    #[arg(long, requires_all = ["push", "password_stdin"])]
    username: Option<String>,
    /// Read the password (or token) from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Image format.
    #[arg(long, value_enum, default_value_t = Format::Compat)]
    format: Format,
    /// The tag recorded in the layout (org.opencontainers.image.ref.name;
    /// default 0.1.0); with --verify, the image to check in a layout that holds several.
    #[arg(long)]
    tag: Option<String>,
    /// Read an image layout (folder or tar) and check it as Istio would.
    #[arg(long, value_name = "LAYOUT", conflicts_with_all = ["out", "wasm"])]
    verify: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Serialize)]
struct Report {
    path: String,
    #[serde(flatten)]
    image: image::Verified,
    /// What goes in WasmPlugin.spec.sha256 for an oci:// url.
    sha256_for_oci_url: String,
    /// ... and for an http(s):// url serving the .wasm itself.
    sha256_for_http_url: String,
    /// Where --push put it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pushed: Option<push::Pushed>,
}

impl PackageCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let p = Paint::stdout();
        if let Some(layout) = &self.verify {
            // Not there is an I/O error (exit 2), not a layout that fails (exit 1).
            std::fs::metadata(layout)
                .with_context(|| format!("cannot read {}", layout.display()))?;
        }
        let mut pushed = None;
        let (path, verified) = match &self.verify {
            Some(layout) => match image::verify(layout, self.tag.as_deref()) {
                Ok(v) => (layout.clone(), v),
                // A file that cannot be read (not a regular file, too large, no
                // permission) is an I/O error (exit 2), not a layout that fails.
                Err(e) if is_io_error(&e) => return Err(e),
                Err(e) => {
                    if self.output != Output::Text {
                        super::print_data(
                            self.output == Output::Json,
                            &serde_json::json!({
                                "path": layout.display().to_string(),
                                "ok": false,
                                "error": format!("{e:#}"),
                            }),
                        )?;
                    } else {
                        println!("{} {}", p.red("FAIL"), layout.display());
                        for line in format!("{e:#}").lines() {
                            println!("    {line}");
                        }
                    }
                    return Ok(Outcome::Failed);
                }
            },
            None => {
                let wasm_path = super::module_path(self.wasm.as_ref())?;
                let wasm = super::read_module(&wasm_path)?;
                let variant = match self.format {
                    Format::Compat => Variant::Compat,
                    Format::Oci => Variant::Oci,
                };
                let target = self.push.as_deref().map(Target::parse).transpose()?;
                let tag = match (&target, self.tag.as_deref()) {
                    (Some(t), Some(tag)) if t.tag != tag => anyhow::bail!(
                        "--tag {tag} and --push {} name different tags",
                        t.reference()
                    ),
                    (Some(t), _) => t.tag.clone(),
                    (None, tag) => tag.unwrap_or("0.1.0").to_string(),
                };
                let img = image::build(&wasm, variant, &tag)
                    .with_context(|| format!("cannot package {}", wasm_path.display()))?;
                // Checked in memory first: a layout Istio would refuse is never
                // written (was: written, then refused, and left behind).
                let in_memory = image::verify_image(&img)?;
                let v = match &self.out {
                    Some(out) => {
                        image::write(&img, out)?;
                        // Read back what was written, the way Istio reads it.
                        image::verify(out, None)
                            .with_context(|| format!("{} does not verify", out.display()))?
                    }
                    None => in_memory,
                };
                anyhow::ensure!(
                    v.manifest_digest == img.manifest_digest,
                    "the image verifies with another digest"
                );
                if let Some(target) = &target {
                    pushed = Some(self.push_image(&img, target)?);
                }
                let path = match (&self.out, &pushed) {
                    (Some(out), _) => out.clone(),
                    (None, Some(p)) => PathBuf::from(&p.url),
                    (None, None) => anyhow::bail!("--out or --push is required"),
                };
                (path, v)
            }
        };
        let report = Report {
            path: path.display().to_string(),
            pushed,
            sha256_for_oci_url: verified.manifest_digest.clone(),
            sha256_for_http_url: verified.wasm_sha256.clone(),
            image: verified,
        };
        match self.output {
            Output::Json | Output::Yaml => super::print_data(self.output == Output::Json, &report)?,
            _ => {
                let v = &report.image;
                let action = if self.verify.is_some() {
                    "verified"
                } else {
                    "wrote"
                };
                println!(
                    "{} {action} {} ({} variant, tag {}): Istio's image fetcher accepts it",
                    p.green("ok"),
                    hybridmesh_input::printable(&report.path),
                    v.variant,
                    hybridmesh_input::printable(v.tag.as_deref().unwrap_or("-"))
                );
                println!("  module   {} bytes, sha256 {}", v.wasm_size, v.wasm_sha256);
                println!(
                    "  image    {} bytes, manifest sha256:{}",
                    v.image_size, v.manifest_digest
                );
                println!();
                println!(
                    "For the WasmPlugin (oci:// url: Istio compares the image manifest digest):"
                );
                println!("  sha256: {}", report.sha256_for_oci_url);
                println!(
                    "(for an http(s):// url serving the .wasm itself: sha256: {})",
                    report.sha256_for_http_url
                );
                if let Some(pu) = &report.pushed {
                    println!();
                    println!(
                        "{} pushed {} ({} blob(s), {} bytes sent; {} already there): the registry serves manifest sha256:{}",
                        p.green("ok"),
                        pu.url,
                        pu.blobs_sent,
                        pu.bytes_sent,
                        pu.blobs_present,
                        pu.sha256
                    );
                    println!("For the mesh description (then hybridmesh render):");
                    println!("  image:");
                    println!("    url: {}", pu.url);
                    println!("    sha256: {}", pu.sha256);
                } else if self.verify.is_none() {
                    let tag = v.tag.as_deref().unwrap_or("0.1.0");
                    println!();
                    println!("Push it:");
                    println!(
                        "  hybridmesh package --push oci://REGISTRY/REPOSITORY:{tag}   (docker login's credentials; --registry-ca for a private CA)"
                    );
                    if report.path.ends_with(".tar") {
                        // crane reads a file as a docker tarball: untar it, or use skopeo/oras.
                        println!(
                            "  skopeo copy oci-archive:{}:{tag} docker://REGISTRY/REPOSITORY:{tag}",
                            report.path
                        );
                    } else {
                        println!("  crane push {} REGISTRY/REPOSITORY:{tag}", report.path);
                    }
                    println!(
                        "  oras cp --from-oci-layout {}:{tag} REGISTRY/REPOSITORY:{tag}",
                        report.path
                    );
                }
            }
        }
        Ok(Outcome::Passed)
    }

    fn push_image(&self, img: &image::Image, target: &Target) -> anyhow::Result<push::Pushed> {
        let credentials = match &self.username {
            Some(username) => {
                let mut password = String::new();
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
                    &mut password,
                )
                .context("cannot read the password from standard input")?;
                let password = password.trim_end_matches(['\r', '\n']).to_string();
                anyhow::ensure!(
                    !password.is_empty(),
                    "--password-stdin read an empty password"
                );
                Credentials::Basic {
                    username: username.clone(),
                    password,
                }
            }
            None => match push::docker_config_path().filter(|p| p.exists()) {
                Some(path) => {
                    let bytes = hybridmesh_ops::deploy::validate::read_input(&path)?;
                    let text = String::from_utf8_lossy(&bytes);
                    push::credentials_from_docker_config(&text, &target.registry)
                        .with_context(|| format!("{}", path.display()))?
                }
                None => Credentials::Anonymous,
            },
        };
        let ca = match &self.registry_ca {
            Some(path) => Some(hybridmesh_ops::deploy::validate::read_input(path)?),
            None => None,
        };
        push::push(img, target, &credentials, ca.as_deref())
            .with_context(|| format!("cannot push to {}", target.url()))
    }
}

/// Whether `e` is about reading files rather than what they hold: the bounded
/// reader's refusals and the file system's errors (a layer that inflates too
/// far or ends early is content, not I/O).
fn is_io_error(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    e.chain().any(|c| {
        c.downcast_ref::<hybridmesh_input::Error>().is_some()
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                !matches!(
                    io.kind(),
                    ErrorKind::Other | ErrorKind::InvalidData | ErrorKind::UnexpectedEof
                )
            })
    })
}
