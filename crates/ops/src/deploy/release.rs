//! The release path as one step (`hybridmesh release`, `scripts/release`):
//! the `.wasm` packaged as an OCI image, its digest pinned in the mesh
//! description, `wasmplugin/` rendered from it, every overlay validated
//! against the image. `--check` does all of it in memory and says what
//! differs from the committed tree.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::image::{self, Variant};
use super::istio::IstioVersion;
use super::locate::line_of;
use super::mesh::MeshDescription;
use super::render::{self, RenderedFile, Which};
use super::{checks, mesh_check, validate};

/// `text` with `image.sha256` set to `digest`: the value on its line is
/// replaced, with the lines of a value written over several (a block scalar
/// `|`/`>`, a folded plain or quoted scalar); comments, layout and line endings
/// (LF or CRLF) kept. Without one, a `sha256:` line is added under `image.url`.
pub fn pin_sha256(text: &str, digest: &str) -> anyhow::Result<String> {
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let found = |path: &str| {
        line_of(text, path).filter(|n| {
            lines.get(n - 1).is_some_and(|l| {
                l.trim_start()
                    .starts_with(path.rsplit('.').next().unwrap_or(""))
            })
        })
    };
    if let Some(n) = found("image.sha256") {
        let line = &lines[n - 1];
        let indent = line[..line.len() - line.trim_start().len()].to_string();
        // Keep a trailing comment.
        let comment = line
            .split_once(" #")
            .map(|(_, c)| format!(" #{c}"))
            .unwrap_or_default();
        lines[n - 1] = format!("{indent}sha256: {digest}{comment}");
        // The value's other lines: every following line more indented than
        // the key (blank ones inside it too).
        let mut end = n;
        while end < lines.len() {
            let next = &lines[end];
            let deeper = next.len() - next.trim_start().len() > indent.len();
            if next.trim().is_empty() || deeper {
                end += 1;
            } else {
                break;
            }
        }
        // Blank lines after the value are the file's, not the value's.
        while end > n && lines[end - 1].trim().is_empty() {
            end -= 1;
        }
        lines.drain(n..end);
    } else if let Some(n) = found("image.url") {
        let line = &lines[n - 1];
        let indent = line[..line.len() - line.trim_start().len()].to_string();
        lines.insert(n, format!("{indent}sha256: {digest}"));
    } else {
        anyhow::bail!("no image.url to pin a digest under (a flow-style image: {{...}} is not edited; write it as a block)");
    }
    let mut out = lines.join(newline);
    if text.ends_with('\n') {
        out.push_str(newline);
    }
    Ok(out)
}

/// What a release is made from.
pub struct Inputs<'a> {
    pub wasm: &'a [u8],
    /// The mesh description's path (as the rendered headers name it) and text.
    pub mesh_path: &'a Path,
    pub mesh_text: &'a str,
    pub tag: &'a str,
}

/// A release computed in memory.
pub struct Release {
    pub image: image::Image,
    pub verified: image::Verified,
    /// The digest pinned (the manifest digest for oci:// urls).
    pub sha256: String,
    /// The description with that digest.
    pub mesh_text: String,
    pub files: Vec<RenderedFile>,
    /// The control plane the files are for (the description's `istio`).
    pub istio: IstioVersion,
    /// The description's `image.url`, where the image is pushed.
    pub url: String,
}

/// Packages, pins and renders; refuses a description `validate` refuses.
pub fn prepare(i: &Inputs) -> anyhow::Result<Result<Release, Vec<mesh_check::Problem>>> {
    let img = image::build(i.wasm, Variant::Compat, i.tag)?;
    let verified = image::verify_image(&img)?;
    let mesh = match MeshDescription::from_yaml(i.mesh_text) {
        Ok(m) => m,
        Err(p) => return Ok(Err(p)),
    };
    let sha256 = image::expected_sha256(&mesh.image.url, &verified).0;
    let mesh_text = pin_sha256(i.mesh_text, &sha256)
        .with_context(|| format!("cannot pin the digest in {}", i.mesh_path.display()))?;
    let mesh = match MeshDescription::from_yaml(&mesh_text) {
        Ok(m) => m,
        Err(p) => return Ok(Err(p)),
    };
    let problems = mesh_check::check(&mesh, &mesh_text);
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let files = render::render(&mesh, &Which::All, &i.mesh_path.display().to_string())?;
    Ok(Ok(Release {
        image: img,
        verified,
        sha256,
        mesh_text,
        files,
        istio: mesh.istio_version(),
        url: mesh.image.url.clone(),
    }))
}

/// Every overlay under `out` validated against the release's image:
/// (kustomization, failures as text).
pub fn validate_overlays(out: &Path, r: &Release) -> Vec<(PathBuf, Vec<String>)> {
    let module = checks::Module::from_image(&r.verified);
    let mut result = Vec::new();
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(out.join("overlays"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("kustomization.yaml"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    overlays.sort();
    for k in overlays {
        let report = validate::validate_paths(std::slice::from_ref(&k), Some(&module), r.istio);
        let mut failures: Vec<String> = report
            .findings
            .iter()
            .filter(|f| !f.ok)
            .flat_map(|f| {
                f.errors
                    .iter()
                    .map(move |e| format!("{}: {}: {e}", f.file, f.what))
            })
            .collect();
        failures.extend(report.unreadable);
        result.push((k, failures));
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pinning_replaces_the_value_and_keeps_the_rest() {
        let text = "# head\nimage:\n  url: oci://x/y:1\n  sha256: abc  # old\n  pullPolicy: IfNotPresent\nclusters: []\n";
        assert_eq!(
            pin_sha256(text, "def").unwrap(),
            "# head\nimage:\n  url: oci://x/y:1\n  sha256: def # old\n  pullPolicy: IfNotPresent\nclusters: []\n"
        );
        let text = "image:\n  url: oci://x/y:1\nclusters: []\n";
        assert_eq!(
            pin_sha256(text, "def").unwrap(),
            "image:\n  url: oci://x/y:1\n  sha256: def\nclusters: []\n"
        );
        assert!(pin_sha256("image: {url: oci://x}\n", "d").is_err());
    }

    #[test]
    fn a_value_over_several_lines_is_replaced_whole() {
        // A block scalar, as `validate` accepts it (was: its lines left behind,
        // and the edited description refused).
        for value in ["|\n    abc\n", ">-\n    abc\n\n    def\n", "\n    abc\n"] {
            let text = format!("image:\n  url: oci://x/y:1\n  sha256: {value}  pullPolicy: Always\n\nclusters: []\n");
            assert_eq!(
                pin_sha256(&text, "def").unwrap(),
                "image:\n  url: oci://x/y:1\n  sha256: def\n  pullPolicy: Always\n\nclusters: []\n",
                "{value:?}"
            );
        }
    }

    #[test]
    fn crlf_line_endings_are_kept() {
        let text = "image:\r\n  url: oci://x/y:1\r\n  sha256: abc\r\nclusters: []\r\n";
        assert_eq!(
            pin_sha256(text, "def").unwrap(),
            "image:\r\n  url: oci://x/y:1\r\n  sha256: def\r\nclusters: []\r\n"
        );
    }
}
