//! `hybridmesh render`: the manifests of `wasmplugin/` from one mesh
//! description (`examples/deploy.yaml`): for one cluster or all.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

use hybridmesh_ops::deploy::codes::Code;
use hybridmesh_ops::deploy::istio::IstioVersion;
use hybridmesh_ops::deploy::render::{self, Which};
use hybridmesh_ops::deploy::{existing, image, mesh_check, validate, yaml, MeshDescription};

use super::Paint;
use crate::Outcome;

/// Render the WasmPlugins, DestinationRules and VirtualServices from a mesh
/// description.
///
/// With --out, writes the kustomize tree (base/, overlays/<cluster>/,
/// meshconfig-stats.yaml); without it, prints what `kubectl apply -k
/// overlays/<cluster>` applies. --check compares instead of writing (exit 1
/// on a difference).
#[derive(Parser)]
#[command(
    after_help = "Examples:\n  hybridmesh render examples/deploy.yaml --out wasmplugin\n  hybridmesh render examples/deploy.yaml --out wasmplugin --check\n  hybridmesh render examples/deploy.yaml --cluster anthos\n  hybridmesh render examples/deploy.yaml --image hybridmesh-image --out /tmp/wasmplugin\n  kubectl --context anthos get dr,vs -A -o yaml > anthos-rules.yaml\n  hybridmesh render examples/deploy.yaml --existing anthos-rules.yaml --out wasmplugin\n  hybridmesh render examples/deploy.yaml --istio 1.13 --out wasmplugin-asm-1.13"
)]
pub struct RenderCommand {
    /// The mesh description.
    #[arg(value_name = "MESH.yaml")]
    mesh: PathBuf,
    /// One cluster (default: all).
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// Write the tree under this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// With --out: compare with what is there; change nothing.
    #[arg(long, requires = "out")]
    check: bool,
    /// Take the sha256 from this packaged image (OCI layout folder or tar)
    /// instead of the description: the manifest digest for oci:// urls, the
    /// module's sha256 for http(s):// urls.
    #[arg(long, value_name = "LAYOUT")]
    image: Option<PathBuf>,
    /// DestinationRules and VirtualServices already in the cluster (manifests, or
    /// `kubectl get dr,vs -A -o yaml`; repeatable): one for a host the mesh
    /// description steers is merged into what is rendered, or the render is refused
    /// with the reason.
    #[arg(long, value_name = "FILE")]
    existing: Vec<PathBuf>,
    /// The Istio version of the control planes (the oldest, if the clusters
    /// differ), e.g. 1.13 for ASM 1.13: what it cannot apply is left out or
    /// refused, with the reason, and the output is checked against its schemas.
    /// Overrides the description's `istio`.
    #[arg(long, value_name = "1.MINOR", value_parser = IstioVersion::parse)]
    istio: Option<IstioVersion>,
}

impl RenderCommand {
    pub fn execute(self) -> anyhow::Result<Outcome> {
        let bytes = validate::read_input(&self.mesh)?;
        let source = self.mesh.display().to_string();
        let p = Paint::stdout();
        let refuse = |problems: &[mesh_check::Problem]| -> anyhow::Result<Outcome> {
            println!("{} {source}: mesh description", p.red("FAIL"));
            for e in problems {
                println!("    {e}");
            }
            println!("nothing rendered: `hybridmesh validate {source}` checks the description");
            Ok(Outcome::Failed)
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                return refuse(&[mesh_check::Problem {
                    code: Code::Syntax,
                    path: String::new(),
                    message: format!(
                        "not UTF-8 text (byte offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                    line: None,
                }])
            }
        };
        let mut mesh = match MeshDescription::from_yaml(&text) {
            Ok(m) => m,
            Err(problems) => return refuse(&problems),
        };
        if let Some(m) = self.istio.and_then(|v| v.minor) {
            mesh.istio = Some(format!("1.{m}"));
        }
        if let Some(layout) = &self.image {
            let v = image::verify(layout, None)
                .with_context(|| format!("--image {}", layout.display()))?;
            mesh.image.sha256 = image::expected_sha256(&mesh.image.url, &v).0;
        }
        // Render refuses what validate refuses: the same checks, on the
        // description's own lines.
        let (problems, checked) = mesh_check::check_and_render(&mesh, &text);
        if !problems.is_empty() {
            return refuse(&problems);
        }
        let which = match &self.cluster {
            Some(c) => Which::Cluster(c.clone()),
            None => Which::All,
        };
        let mut rules = Vec::new();
        for path in &self.existing {
            match existing::read(path) {
                Ok(r) => rules.extend(r),
                Err(existing::ReadError::Io(e)) => return Err(e),
                Err(existing::ReadError::Content(message)) => {
                    println!(
                        "{} --existing {}",
                        p.red("FAIL"),
                        hybridmesh_input::printable_lines(&message)
                    );
                    println!("nothing rendered");
                    return Ok(Outcome::Failed);
                }
            }
        }
        // The rules the check rendered are the output, unless existing ones
        // are merged into them.
        let (rules_text, merged) = match checked {
            Some(t) if rules.is_empty() => (t, render::RulesText::unmerged(&mesh)),
            _ => render::RulesText::render(&mesh, &rules),
        };
        // Notes go where the manifests do not: stderr when they are printed.
        for note in &merged.notes {
            if self.out.is_some() {
                println!("{} {note}", p.yellow("note"));
            } else {
                eprintln!("note: {note}");
            }
        }
        if !merged.problems.is_empty() {
            for problem in &merged.problems {
                println!("{} {problem}", p.red("FAIL"));
            }
            println!("nothing rendered: an existing rule cannot be merged (see above)");
            return Ok(Outcome::Failed);
        }
        let Some(out) = &self.out else {
            let clusters = which.clusters(&mesh)?;
            // What `kubectl apply -k overlays/<cluster>` applies: the rules
            // (the same in every cluster, written once), then its plugins.
            let mut stdout = std::io::stdout().lock();
            for c in clusters {
                let plugins = yaml::documents(&render::wasm_plugins(&mesh, c));
                let head = format!("# kubectl apply -k wasmplugin/overlays/{c}  (cluster {c})\n");
                let rules = rules_text
                    .destination_rules
                    .iter()
                    .chain(&rules_text.virtual_services);
                for part in std::iter::once(&head).chain(rules).chain([&plugins]) {
                    stdout
                        .write_all(part.as_bytes())
                        .map_err(super::stdout_error)?;
                }
            }
            stdout.flush().map_err(super::stdout_error)?;
            return Ok(Outcome::Passed);
        };
        let files = render::render_files(&mesh, &which, &source, rules_text)?;
        if self.check {
            let diffs = render::differences(out, &files);
            if diffs.is_empty() {
                println!(
                    "{} {} file(s) under {} are the render output of {source}",
                    p.green("ok"),
                    files.len(),
                    out.display()
                );
                return Ok(Outcome::Passed);
            }
            for d in &diffs {
                println!("{} {d}", p.red("FAIL"));
            }
            println!(
                "render again: hybridmesh render {source} --out {}",
                out.display()
            );
            return Ok(Outcome::Failed);
        }
        render::write(out, &files)?;
        for f in &files {
            println!("wrote {}", out.join(&f.path).display());
        }
        Ok(Outcome::Passed)
    }
}
