//! `hybridmesh package`: the filter's `.wasm` as an OCI image Istio's Wasm
//! image fetcher accepts, written as an OCI image layout (folder or tar) for
//! `crane push` / `oras cp` / `skopeo copy`; `--verify` reads one back the
//! way Istio does. See `hybridmesh_ops::deploy::image` for the format and for
//! which digest goes in the WasmPlugin's `sha256`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use hybridmesh_ops::deploy::image::{self, Variant};

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

/// Package the filter as an OCI image for a WasmPlugin, or verify one.
///
/// Writes an OCI image layout (a folder, or a tar when OUT ends in .tar) and
/// prints the digest that goes in the WasmPlugin's sha256: for oci:// urls
/// Istio compares the image manifest digest, not the module's sha256.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh package --out hybridmesh-image\n  crane push hybridmesh-image asia-northeast1-docker.pkg.dev/PROJECT/hybridmesh/hybridmesh-filter:0.1.0\n  oras cp --from-oci-layout hybridmesh-image:0.1.0 REGISTRY/hybridmesh/hybridmesh-filter:0.1.0\n  hybridmesh package --verify hybridmesh-image"
)]
pub struct PackageCommand {
    /// The module (default: the filter this repository builds).
    #[arg(long, value_name = "MODULE.wasm")]
    wasm: Option<PathBuf>,
    /// Where to write the image layout (a folder; a tar when it ends in .tar).
    #[arg(long, value_name = "PATH", required_unless_present = "verify")]
    out: Option<PathBuf>,
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
    #[arg(long, value_enum, default_value_t = Output::Text)]
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
}

impl PackageCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let p = Paint::stdout();
        if let Some(layout) = &self.verify {
            // Not there is an I/O error (exit 2), not a layout that fails (exit 1).
            std::fs::metadata(layout)
                .with_context(|| format!("cannot read {}", layout.display()))?;
        }
        let (path, verified) = match &self.verify {
            Some(layout) => match image::verify(layout, self.tag.as_deref()) {
                Ok(v) => (layout.clone(), v),
                Err(e) => {
                    if self.output == Output::Json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&serde_json::json!({
                                "path": layout.display().to_string(),
                                "ok": false,
                                "error": format!("{e:#}"),
                            }))?
                        );
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
                let out = self.out.clone().context("--out is required")?;
                let wasm_path = self.wasm.clone().unwrap_or_else(super::default_wasm);
                let wasm = std::fs::read(&wasm_path).with_context(|| {
                    format!(
                        "cannot read {}\n  build it with: cargo build --profile wasm --target wasm32-wasip1 -p hybridmesh-filter",
                        wasm_path.display()
                    )
                })?;
                super::check_module_bytes(&wasm_path, &wasm)?;
                let variant = match self.format {
                    Format::Compat => Variant::Compat,
                    Format::Oci => Variant::Oci,
                };
                let img = image::build(&wasm, variant, self.tag.as_deref().unwrap_or("0.1.0"))
                    .with_context(|| format!("cannot package {}", wasm_path.display()))?;
                image::write(&img, &out)?;
                // Read back what was written, the way Istio reads it.
                let v = image::verify(&out, None)
                    .with_context(|| format!("{} does not verify", out.display()))?;
                anyhow::ensure!(
                    v.manifest_digest == img.manifest_digest,
                    "{} verifies with another digest",
                    out.display()
                );
                (out, v)
            }
        };
        let report = Report {
            path: path.display().to_string(),
            sha256_for_oci_url: verified.manifest_digest.clone(),
            sha256_for_http_url: verified.wasm_sha256.clone(),
            image: verified,
        };
        match self.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
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
                    report.path,
                    v.variant,
                    v.tag.as_deref().unwrap_or("-")
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
                if self.verify.is_none() {
                    let tag = v.tag.as_deref().unwrap_or("0.1.0");
                    println!();
                    println!("Push it:");
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
}
