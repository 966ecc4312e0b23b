//! `kubectl`, run with a time bound; JSON back, its own error message kept.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// How long one API request may take (`--request-timeout`).
pub const REQUEST_TIMEOUT: &str = "10s";

/// The kubectl to run and the kubeconfig it reads.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: Option<PathBuf>,
}

impl Kubectl {
    /// `$HYBRIDMESH_KUBECTL`, else `kubectl` on the `PATH`; `kubeconfig`
    /// (else kubectl's own default: `$KUBECONFIG`, `~/.kube/config`).
    pub fn new(kubeconfig: Option<&Path>) -> anyhow::Result<Kubectl> {
        let bin = match std::env::var_os("HYBRIDMESH_KUBECTL") {
            Some(p) => PathBuf::from(p),
            None => which("kubectl").context(
                "kubectl is not on the PATH: install it (https://kubernetes.io/docs/tasks/tools/) \
                 or name it with HYBRIDMESH_KUBECTL",
            )?,
        };
        Ok(Kubectl {
            bin,
            kubeconfig: kubeconfig.map(Path::to_path_buf),
        })
    }

    fn command(&self, context: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.bin);
        if let Some(k) = &self.kubeconfig {
            cmd.arg("--kubeconfig").arg(k);
        }
        if let Some(c) = context {
            cmd.arg("--context").arg(c);
        }
        cmd.arg(format!("--request-timeout={REQUEST_TIMEOUT}"));
        cmd
    }

    /// The kubeconfig's contexts, in its order.
    pub fn contexts(&self) -> anyhow::Result<Vec<String>> {
        let out = self.run(None, &["config", "get-contexts", "-o", "name"])?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// `kubectl ARGS` in `context`: its standard output, or an error with
    /// kubectl's own message.
    pub fn run(&self, context: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(context)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!("kubectl {}: {}", args.join(" "), err.trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl get ARGS -o json` in `context`; `None` when the object does
    /// not exist (NotFound), an error for anything else.
    pub fn get(&self, context: &str, args: &[&str]) -> anyhow::Result<Option<Value>> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        match self.run(Some(context), &all) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text)
                    .context("kubectl printed something that is not JSON")?,
            )),
            Err(e) if format!("{e}").contains("(NotFound)") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The items of `kubectl get KIND ... -o json` (a list); empty when the
    /// kind itself is not served.
    pub fn list(&self, context: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        match self.get(context, args) {
            Ok(v) => Ok(v
                .and_then(|v| v["items"].as_array().cloned())
                .unwrap_or_default()),
            Err(e) if format!("{e}").contains("the server doesn't have a resource type") => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }
}

/// `name` on the `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
