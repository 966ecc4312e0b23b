//! `hybridmesh release`: package the `.wasm`, pin its digest in the mesh
//! description, render `wasmplugin/`, validate every overlay against the
//! image. `scripts/release` builds the `.wasm` first. See
//! `hybridmesh_ops::deploy::release`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

use hybridmesh_ops::deploy::release::{self, Inputs};
use hybridmesh_ops::deploy::{image, render, validate};

use super::Paint;
use crate::Outcome;

/// Package the filter, pin its image digest in the mesh description, render
/// wasmplugin/ and validate every overlay against the image: what an
/// operator applies, made from what this tree builds.
///
/// With --check nothing is written: exit 1, naming what differs and the
/// command that makes it right, when the committed description or
/// wasmplugin/ is not what this .wasm releases.
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  scripts/release                       # builds the .wasm, then runs this\n  hybridmesh release --image hybridmesh-image\n  hybridmesh release --check --wasm target/wasm32-wasip1/wasm/hybridmesh_filter.wasm"
)]
pub struct ReleaseCommand {
    /// The module (default: the filter this repository builds).
    #[arg(long, value_name = "MODULE.wasm")]
    wasm: Option<PathBuf>,
    /// The mesh description; its image.sha256 is rewritten in place.
    #[arg(long, value_name = "MESH.yaml", default_value = "examples/deploy.yaml")]
    mesh: PathBuf,
    /// The kustomize tree to render.
    #[arg(long, value_name = "DIR", default_value = "wasmplugin")]
    out: PathBuf,
    /// Where to write the OCI image layout (push it with crane/oras).
    #[arg(long, value_name = "PATH", default_value = "hybridmesh-image")]
    image: PathBuf,
    /// The tag recorded in the layout.
    #[arg(long, default_value = "0.1.0")]
    tag: String,
    /// Compare with the committed files instead of writing anything.
    #[arg(long)]
    check: bool,
}

impl ReleaseCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let p = Paint::stdout();
        let wasm_path = super::module_path(self.wasm.as_ref())?;
        let wasm = super::read_module(&wasm_path)?;
        let bytes = validate::read_input(&self.mesh)?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{}: not UTF-8 text", self.mesh.display()))?;
        let inputs = Inputs {
            wasm: &wasm,
            mesh_path: &self.mesh,
            mesh_text: &text,
            tag: &self.tag,
        };
        let r = match release::prepare(&inputs)? {
            Ok(r) => r,
            Err(problems) => {
                println!(
                    "{} {}: mesh description",
                    p.red("FAIL"),
                    self.mesh.display()
                );
                for e in &problems {
                    println!("    {e}");
                }
                println!("nothing released");
                return Ok(Outcome::Failed);
            }
        };
        let again = format!(
            "scripts/release (or: hybridmesh release --wasm {} --mesh {} --out {}), then commit {} and {}",
            wasm_path.display(),
            self.mesh.display(),
            self.out.display(),
            self.mesh.display(),
            self.out.display()
        );
        if self.check {
            let mut diffs = Vec::new();
            if r.mesh_text != text {
                diffs.push(format!(
                    "{} pins another image.sha256: this .wasm ({} bytes, sha256 {}) packages to {}",
                    self.mesh.display(),
                    r.verified.wasm_size,
                    r.verified.wasm_sha256,
                    r.sha256
                ));
            }
            diffs.extend(render::differences(&self.out, &r.files));
            if diffs.is_empty() {
                for (k, failures) in release::validate_overlays(&self.out, &r) {
                    diffs.extend(
                        failures
                            .into_iter()
                            .map(|f| format!("{}: {f}", k.display())),
                    );
                }
            }
            if diffs.is_empty() {
                println!(
                    "{} {} and {} are the release of {} (image sha256 {})",
                    p.green("ok"),
                    self.mesh.display(),
                    self.out.display(),
                    wasm_path.display(),
                    r.sha256
                );
                return Ok(Outcome::Passed);
            }
            for d in &diffs {
                println!("{} {d}", p.red("FAIL"));
            }
            println!("release again: {again}");
            return Ok(Outcome::Failed);
        }
        image::write(&r.image, &self.image)?;
        let v = image::verify(&self.image, None)
            .with_context(|| format!("{} does not verify", self.image.display()))?;
        anyhow::ensure!(
            v.manifest_digest == r.verified.manifest_digest,
            "{} verifies with another digest",
            self.image.display()
        );
        println!(
            "{} packaged {} -> {} (manifest sha256:{})",
            p.green("ok"),
            wasm_path.display(),
            self.image.display(),
            r.verified.manifest_digest
        );
        if r.mesh_text != text {
            std::fs::write(&self.mesh, &r.mesh_text)
                .with_context(|| format!("cannot write {}", self.mesh.display()))?;
            println!(
                "{} pinned image.sha256: {} in {}",
                p.green("ok"),
                r.sha256,
                self.mesh.display()
            );
        } else {
            println!(
                "{} {} already pins {}",
                p.green("ok"),
                self.mesh.display(),
                r.sha256
            );
        }
        render::write(&self.out, &r.files)?;
        println!(
            "{} rendered {} file(s) under {}",
            p.green("ok"),
            r.files.len(),
            self.out.display()
        );
        let mut failed = false;
        for (k, failures) in release::validate_overlays(&self.out, &r) {
            if failures.is_empty() {
                println!(
                    "{} {} validates against the image",
                    p.green("ok"),
                    k.display()
                );
            } else {
                failed = true;
                println!("{} {}", p.red("FAIL"), k.display());
                for f in failures {
                    println!("    {f}");
                }
            }
        }
        if failed {
            return Ok(Outcome::Failed);
        }
        println!(
            "push it: hybridmesh package --wasm {} --push {} (or crane push {}); then kubectl apply -k {}/overlays/<cluster>",
            wasm_path.display(),
            r.url,
            self.image.display(),
            self.out.display()
        );
        Ok(Outcome::Passed)
    }
}
