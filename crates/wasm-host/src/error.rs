//! The harness's typed errors.
//!
//! A guest trap is never an [`Error`]: it is handled the way Envoy handles it (the plugin's
//! [`FailStrategy`](crate::FailStrategy)) and recorded in [`Plugin::failures`](crate::Plugin::failures).
//! An [`Error`] is a problem a test author has to fix: a module that does not load, a
//! configuration Envoy would refuse to start with, or a call the harness cannot make in
//! the state the test put it in.

use std::fmt;
use std::path::PathBuf;

/// What can go wrong loading a module, building a plugin or driving it.
///
/// # Examples
///
/// The demo filter refuses the configuration `reject`: delivered by ECDS (the default)
/// that leaves a plugin without a filter config; in a static bootstrap Envoy would not
/// start, so the build fails. A [`Stream`](crate::Stream) method's error is an
/// [`anyhow::Error`] holding an `Error`.
///
/// ```
/// use proxy_wasm_host::{ConfigDelivery, Error, Module, Plugin};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let missing = Module::from_file("no/such/filter.wasm").unwrap_err();
/// assert!(matches!(&missing, Error::Read { path, .. } if path.ends_with("filter.wasm")));
///
/// let module = Module::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/filters/demo.wat"))?;
/// let ecds = Plugin::builder(&module).plugin_config(b"reject").build()?;
/// assert!(!ecds.config_accepted());
/// let err = Plugin::builder(&module)
///     .plugin_config(b"reject")
///     .delivery(ConfigDelivery::Static)
///     .identity("demo", "", "")
///     .build()
///     .unwrap_err();
/// assert!(matches!(&err, Error::ConfigRejected { plugin, .. } if plugin == "demo"));
/// assert!(err.to_string().contains("Unable to create Wasm plugin \"demo\""), "{err}");
///
/// // Harness misuse: response headers for a request the filter answered itself.
/// let mut plugin = Plugin::builder(&module).default_cluster("backend").build()?;
/// let mut s = plugin.stream(0);
/// s.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "api"), ("x-deny", "1")], true)?;
/// let err = s.response_headers(&[(":status", "200")], true).unwrap_err();
/// assert!(matches!(err.downcast_ref::<Error>(), Some(Error::Usage(_))), "{err}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The module file could not be read: missing, not a regular file, or
    /// over [`hybridmesh_input::MODULE`]'s limit.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: hybridmesh_input::Error,
    },
    /// The bytes are neither a WebAssembly binary nor valid WAT text.
    Compile {
        /// Where the module came from (a path or `<bytes>`).
        module: String,
        /// The compiler's message.
        message: String,
    },
    /// The module imports functions this host (and Envoy 1.40) does not provide.
    UnknownImports {
        /// Where the module came from.
        module: String,
        /// `module.name` of every unknown import.
        imports: Vec<String>,
    },
    /// The module could not be instantiated or linked: imports with the wrong
    /// signature, an export with the wrong signature, out of instances.
    Instantiate {
        /// Where the module came from.
        module: String,
        /// What failed.
        message: String,
    },
    /// The plugin configuration was rejected by Envoy's configuration canary (the
    /// first `proxy_on_configure` in a throw-away VM returned false or trapped) and the
    /// plugin was delivered in a static bootstrap
    /// ([`ConfigDelivery::Static`](crate::ConfigDelivery::Static)): Envoy 1.40 refuses to
    /// start (`Unable to create Wasm plugin <name>`, exit code 1).
    ConfigRejected {
        /// The plugin name (`plugin_name`).
        plugin: String,
        /// What the canary logged at error or critical level, and its trap if any.
        reasons: Vec<String>,
    },
    /// A call the harness cannot make in this state, e.g. response headers on a stream
    /// whose request was answered locally, or an unknown callout token.
    Usage(String),
    /// A host-side failure (the wasmtime engine, a guest call made with
    /// [`Plugin::call_export`](crate::Plugin::call_export) that trapped).
    Host(String),
    /// The module went past one of the plugin's [`Limits`](crate::Limits) in a way
    /// that stops the run rather than one call (e.g. more ticks than allowed).
    Limit(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read { source, .. } => write!(f, "{source}"),
            Error::Compile { module, message } => {
                write!(f, "failed to compile {module}: {message}")
            }
            Error::UnknownImports { module, imports } => {
                write!(f, "{module}: ")?;
                for (i, import) in imports.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(
                        f,
                        "module imports {import}, which this host does not provide"
                    )?;
                }
                Ok(())
            }
            Error::Instantiate { module, message } => write!(f, "{module}: {message}"),
            Error::ConfigRejected { plugin, reasons } => {
                write!(
                    f,
                    "the plugin configuration was rejected by the configuration canary; \
                     Envoy would not start (Unable to create Wasm plugin {plugin:?})"
                )?;
                for reason in reasons {
                    write!(f, "\n  {reason}")?;
                }
                Ok(())
            }
            Error::Usage(message) | Error::Host(message) | Error::Limit(message) => {
                f.write_str(message)
            }
        }
    }
}

/// Every message is whole (a read error's includes the reader's), so no
/// `source` is given: a chain printer would repeat it.
impl std::error::Error for Error {}

/// `Result` with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A usage error with a message.
pub(crate) fn usage(message: impl Into<String>) -> Error {
    Error::Usage(message.into())
}

/// Fails with a usage error unless `condition` holds.
macro_rules! ensure_usage {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::error::usage(format!($($arg)+)).into());
        }
    };
}
pub(crate) use ensure_usage;
