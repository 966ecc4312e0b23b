//! The one way hybridmesh reads a file it is given.
//!
//! Every path a command takes (a module, a scenario, a mesh description, a plugin
//! config, a manifest, an image layout's files) is read through [`read`] or
//! [`read_text`]:
//!
//! * `-` is standard input; anything else must be a regular file (a link is
//!   followed and judged by what it leads to). A device, FIFO, socket or folder
//!   is refused before a byte is read: `/dev/zero` would never end.
//! * The file's size is checked against a [`Limit`] before reading, and the read
//!   itself stops one byte past the limit (a file may grow, standard input has
//!   no size), so memory is bounded by the limit whatever is named.
//! * Errors name the path, the limit and why the limit is what it is.
//!
//! Streaming readers (a log `trace` follows) use [`open`], which applies the same
//! file-type check and leaves the size to the caller.
//!
//! What is read is printed through [`printable`]: names, paths and log fields
//! with their control characters escaped, so input cannot paint the terminal.

mod printable;

pub use printable::{is_control, printable, printable_lines, xml};

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How much of one input is read, and why that much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// At most this many bytes.
    pub bytes: u64,
    /// What the input is expected to be, for the message (`a mesh description`).
    pub what: &'static str,
    /// Why the limit is where it is.
    pub why: &'static str,
}

/// Text inputs: manifests, plugin configs, scenarios, mesh descriptions, image
/// indexes. They are kilobytes; a Kubernetes object is at most 1.5 MiB (etcd's
/// request limit).
pub const TEXT: Limit = Limit {
    bytes: 64 << 20,
    what: "a manifest, config, scenario or mesh description",
    why: "these are kilobytes",
};

/// A Wasm module: Istio's agent refuses a module larger than 256 MiB
/// (`ISTIO_WASM_MAX_BINARY_SIZE_BYTES`, pilot/pkg/features/pilot.go).
pub const MODULE: Limit = Limit {
    bytes: 256 << 20,
    what: "a Wasm module",
    why: "Istio's agent refuses a module over 256 MiB (ISTIO_WASM_MAX_BINARY_SIZE_BYTES)",
};

/// Why an input was not read.
#[derive(Debug)]
pub enum Error {
    /// The path names something other than a regular file.
    NotAFile { path: PathBuf, kind: &'static str },
    /// Larger than the limit (`size` is what the file system says, or `None`
    /// when the read itself went past the limit).
    TooLarge {
        path: PathBuf,
        size: Option<u64>,
        limit: Limit,
    },
    /// Not UTF-8 text ([`read_text`]).
    NotText { path: PathBuf, offset: usize },
    /// The file system's own error.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the file does not exist (a caller may treat it as absent).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::NotAFile { path, .. }
            | Error::TooLarge { path, .. }
            | Error::NotText { path, .. }
            | Error::Io { path, .. } => path,
        }
    }
}

/// How a path is shown: `-` is `(stdin)`.
pub fn display(path: &Path) -> String {
    if is_stdin(path) {
        "(stdin)".to_owned()
    } else {
        path.display().to_string()
    }
}

/// A limit as a person reads it: `64 MiB` when whole MiB, else bytes.
pub fn limit_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotAFile { path, kind } => write!(
                f,
                "{}: is {kind}, not a regular file (not read; give a file, or - for standard input)",
                display(path)
            ),
            Error::TooLarge { path, size, limit } => {
                let size = match size {
                    Some(size) => format!("{}, ", mib_or_bytes(*size)),
                    None => String::new(),
                };
                write!(
                    f,
                    "{}: {size}larger than {}, the limit for {} (not read: {})",
                    display(path),
                    limit_text(limit.bytes),
                    limit.what,
                    limit.why
                )
            }
            Error::NotText { path, offset } => write!(
                f,
                "{}: not UTF-8 text (invalid byte at offset {offset})",
                display(path)
            ),
            Error::Io { path, source } => write!(f, "cannot read {}: {source}", display(path)),
        }
    }
}

fn mib_or_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{bytes} bytes")
    }
}

/// The message says everything, the file system's own error included, so no
/// `source` is given (a chain printer would repeat it).
impl std::error::Error for Error {}

/// Whether `path` means standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn kind(file_type: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a folder")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Opens `path` for reading if it is a regular file (links followed), and says
/// how large it is. Not for `-`.
pub fn open(path: &Path) -> Result<(File, u64), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Judge the path before opening it: opening a FIFO blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(io)?;
    if let Some(kind) = kind(meta.file_type()) {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let file = File::open(path).map_err(io)?;
    // The file opened may not be the one judged (replaced in between): judge it again.
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = kind(meta.file_type()) {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok((file, meta.len()))
}

/// Reads `path` whole (`-`: standard input), refusing anything but a regular file
/// and anything over `limit`.
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    if is_stdin(path) {
        std::io::stdin()
            .lock()
            .take(limit.bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    } else {
        let (file, size) = open(path)?;
        if size > limit.bytes {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                size: Some(size),
                limit,
            });
        }
        bytes.reserve(usize::try_from(size).unwrap_or(0));
        file.take(limit.bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    }
    if bytes.len() as u64 > limit.bytes {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size: None,
            limit,
        });
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, limit: Limit) -> Result<String, Error> {
    let bytes = read(path, limit)?;
    String::from_utf8(bytes).map_err(|e| Error::NotText {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limit = Limit {
        bytes: 8,
        what: "a test input",
        why: "tests are small",
    };

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hybridmesh-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_device_is_refused_before_reading() {
        let e = read(Path::new("/dev/zero"), TEXT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: is a character device, not a regular file (not read; give a file, or - for standard input)"
        );
    }

    #[test]
    fn a_link_is_judged_by_what_it_leads_to() {
        let link = temp("zero-link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read(&link, TEXT),
            Err(Error::NotAFile {
                kind: "a character device",
                ..
            })
        ));
    }

    #[test]
    fn a_folder_is_refused() {
        let e = read(&std::env::temp_dir(), TEXT).unwrap_err();
        assert!(
            e.to_string().contains("is a folder, not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused_with_its_size_and_the_reason() {
        let path = temp("nine");
        std::fs::write(&path, b"123456789").unwrap();
        let e = read(&path, SMALL).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: 9 bytes, larger than 8 bytes, the limit for a test input (not read: tests are small)",
                path.display()
            )
        );
        std::fs::write(&path, b"12345678").unwrap();
        assert_eq!(read(&path, SMALL).unwrap(), b"12345678");
    }

    #[test]
    fn a_sparse_file_is_refused_by_its_size_unread() {
        let path = temp("sparse");
        let file = File::create(&path).unwrap();
        file.set_len(3 << 30).unwrap();
        let e = read(&path, TEXT).unwrap_err();
        assert!(
            e.to_string().contains("3072.0 MiB, larger than 64 MiB"),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn text_that_is_not_utf8_names_the_offset() {
        let path = temp("latin1");
        std::fs::write(&path, b"ab\xffc").unwrap();
        let e = read_text(&path, TEXT).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("not UTF-8 text (invalid byte at offset 2)"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = read(Path::new("/nonexistent/x.yaml"), TEXT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read /nonexistent/x.yaml: No such file or directory (os error 2)"
        );
    }
}
