//! `package`: the `.wasm` as an OCI image Istio's Wasm image fetcher accepts,
//! written as an OCI image layout (a folder, or a tar of one) for
//! `crane push` / `oras cp`; and `verify`, which reads a layout back the way
//! Istio does.
//!
//! What Istio accepts (istio/istio `pkg/wasm/imagefetcher.go`, `PrepareFetch`
//! and the three `extract*` functions), and so what we write and check:
//!
//! - a Docker schema 2 manifest: the *last* layer must be
//!   `application/vnd.docker.image.rootfs.diff.tar.gzip`;
//! - any other manifest, tried as the **compat** variant first: the *last*
//!   layer must be `application/vnd.oci.image.layer.v1.tar+gzip`, a gzipped tar
//!   holding a file whose base name is `plugin.wasm`;
//! - then as the **OCI artifact** variant: exactly two layers, one of them
//!   `application/vnd.module.wasm.content.layer.v1+wasm` holding the raw
//!   module (Istio's own test pairs it with an
//!   `application/vnd.module.wasm.config.v1+json` layer). A single-layer
//!   artifact (`oras push x plugin.wasm:application/wasm`, or one content
//!   layer) fails both: "number of layers must be 2 but got 1".
//! - then the module must be at least 8 bytes starting with `\0asm`
//!   (`pkg/wasm/cache.go`, `isValidWasmBinary`).
//!
//! Which digest goes in `WasmPlugin.spec.sha256`: for `oci://` urls Istio
//! compares it with the **image manifest digest** — `PrepareFetch` returns
//! `img.Digest()` as `actualDigest`, and `pkg/wasm/cache.go` fails with
//! "module downloaded from ... has checksum ..., which does not match" when
//! it differs from `sha256` — not with the module's own sha256. For
//! `http(s)://` urls it is the sha256 of the downloaded `.wasm`. So `package`
//! prints both, and says which is which.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// Which of Istio's two accepted shapes to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// An ordinary image whose one layer is a tar.gz with `plugin.wasm`.
    Compat,
    /// The Wasm OCI artifact: config + content layers with the module media types.
    Oci,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Compat => "compat",
            Variant::Oci => "oci",
        }
    }
}

/// An image in memory: blobs by digest, the manifest's digest, the tag.
#[derive(Debug, Clone)]
pub struct Image {
    pub variant: Variant,
    pub tag: String,
    pub manifest_digest: String,
    pub wasm_sha256: String,
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub index: Vec<u8>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn descriptor(
    media_type: &str,
    bytes: &[u8],
    annotations: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut d = json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha256_hex(bytes)),
        "size": bytes.len(),
    });
    if let Some(a) = annotations {
        d["annotations"] = a;
    }
    d
}

/// JSON with sorted keys and no whitespace: the same bytes every time.
fn canonical(v: &serde_json::Value) -> Vec<u8> {
    // serde_json's map is a BTreeMap here: keys come out sorted.
    serde_json::to_vec(v).unwrap_or_default()
}

/// `plugin.wasm` in a tar, gzipped, with every varying field fixed (mtime 0,
/// uid/gid 0, mode 0644), so the same module gives the same digest.
fn compat_layer(wasm: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut tar_bytes = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar_bytes);
        let mut header = tar::Header::new_ustar();
        header.set_path("plugin.wasm")?;
        header.set_size(wasm.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, wasm)?;
        builder.finish()?;
    }
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &tar_bytes)?;
    let gzipped = gz.finish()?;
    Ok((tar_bytes, gzipped))
}

/// Refuses a tag the OCI distribution spec does not allow
/// (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`): a registry would refuse it too, and
/// it is printed into the push commands `package` suggests.
pub fn check_tag(tag: &str) -> anyhow::Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        });
    anyhow::ensure!(
        ok,
        "tag {}: not a tag (the OCI distribution spec allows [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}})",
        hybridmesh_input::printable(&format!("{:?}", truncate(tag, 80)))
    );
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// Builds the image for `wasm`.
pub fn build(wasm: &[u8], variant: Variant, tag: &str) -> anyhow::Result<Image> {
    check_tag(tag)?;
    anyhow::ensure!(
        is_valid_wasm(wasm),
        "not a WebAssembly module (Istio wants at least 8 bytes starting with \\0asm)"
    );
    let mut blobs = BTreeMap::new();
    let title = |name: &str| Some(json!({"org.opencontainers.image.title": name}));
    let manifest = match variant {
        Variant::Compat => {
            let (tar_bytes, layer) = compat_layer(wasm)?;
            let config = canonical(&json!({
                "architecture": "wasm",
                "os": "wasip1",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar_bytes))]},
            }));
            let m = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(OCI_CONFIG, &config, None),
                "layers": [descriptor(OCI_LAYER_GZIP, &layer, None)],
            });
            blobs.insert(sha256_hex(&config), config);
            blobs.insert(sha256_hex(&layer), layer);
            m
        }
        Variant::Oci => {
            let config = b"{}".to_vec();
            let m = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(WASM_CONFIG, &config, None),
                "layers": [
                    descriptor(WASM_CONFIG, &config, None),
                    descriptor(WASM_LAYER, wasm, title("plugin.wasm")),
                ],
            });
            blobs.insert(sha256_hex(&config), config);
            blobs.insert(sha256_hex(wasm), wasm.to_vec());
            m
        }
    };
    let manifest = canonical(&manifest);
    let manifest_digest = sha256_hex(&manifest);
    let index = canonical(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(
            OCI_MANIFEST,
            &manifest,
            Some(json!({"org.opencontainers.image.ref.name": tag})),
        )],
    }));
    blobs.insert(manifest_digest.clone(), manifest);
    Ok(Image {
        variant,
        tag: tag.to_string(),
        manifest_digest,
        wasm_sha256: sha256_hex(wasm),
        blobs,
        index,
    })
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The layout's files: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
fn layout_files(img: &Image) -> Vec<(String, &[u8])> {
    let mut files: Vec<(String, &[u8])> = vec![
        ("oci-layout".to_string(), OCI_LAYOUT),
        ("index.json".to_string(), &img.index),
    ];
    for (hex, bytes) in &img.blobs {
        files.push((format!("blobs/sha256/{hex}"), bytes));
    }
    files
}

/// Writes the layout as a folder, or as a tar when `out` ends in `.tar`.
pub fn write(img: &Image, out: &Path) -> anyhow::Result<()> {
    let files = layout_files(img);
    if out.extension().is_some_and(|e| e == "tar") {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Written beside and renamed into place: a failed write (a full disk)
        // leaves no half tar under the name asked for.
        let partial = out.with_extension(format!("tar.partial-{}", std::process::id()));
        let written = write_tar(&files, &partial).and_then(|()| {
            std::fs::rename(&partial, out)
                .with_context(|| format!("cannot write {}", out.display()))
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        return written;
    }
    std::fs::create_dir_all(out.join("blobs/sha256"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    for (name, bytes) in files {
        let p = out.join(&name);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// The layout as a tar at `out`.
fn write_tar(files: &[(String, &[u8])], out: &Path) -> anyhow::Result<()> {
    let f =
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let mut b = tar::Builder::new(f);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = tar::Header::new_ustar();
        h.set_path(dir)?;
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, std::io::empty())?;
    }
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *bytes)?;
    }
    b.finish()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// What `verify` found: the digests and how Istio would read the image.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// `compat`, `oci` or `docker`.
    pub variant: String,
    pub tag: Option<String>,
    /// The image manifest digest (hex): `sha256` for `oci://` urls.
    pub manifest_digest: String,
    /// The module's sha256 (hex): `sha256` for `http(s)://` urls.
    pub wasm_sha256: String,
    pub wasm_size: usize,
    /// The size of the image: manifest, config and layers.
    pub image_size: usize,
}

/// A layout read into memory (from a folder or a tar).
struct Layout {
    files: BTreeMap<String, Vec<u8>>,
    /// Blobs whose digest was checked: each is hashed once, however many
    /// descriptors name it (was: once per reference; 10,000 layers naming
    /// one 8 MiB blob took 57 s).
    hashed: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl Layout {
    fn read(path: &Path) -> anyhow::Result<Layout> {
        let mut files = BTreeMap::new();
        if path.is_dir() {
            for name in ["oci-layout", "index.json"] {
                match hybridmesh_input::read(&path.join(name), hybridmesh_input::TEXT) {
                    Ok(bytes) => {
                        files.insert(name.to_string(), bytes);
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let blobs = path.join("blobs/sha256");
            let mut total: u64 = 0;
            let entries = match std::fs::read_dir(&blobs) {
                Ok(entries) => Some(entries),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", blobs.display()))
                }
            };
            for e in entries.into_iter().flatten() {
                let e = e.with_context(|| format!("cannot read {}", blobs.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let mut bytes = Vec::new();
                let (file, _) = hybridmesh_input::open(&e.path())?;
                file.take(MAX_LAYOUT + 1 - total)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("cannot read {}", e.path().display()))?;
                total += bytes.len() as u64;
                anyhow::ensure!(
                    total <= MAX_LAYOUT,
                    "{}: the blobs hold more than {} MiB: not an image of a Wasm filter",
                    path.display(),
                    MAX_LAYOUT >> 20
                );
                files.insert(format!("blobs/sha256/{name}"), bytes);
            }
        } else {
            let (f, _) = hybridmesh_input::open(path)?;
            let mut archive = tar::Archive::new(Bounded {
                inner: f,
                left: MAX_LAYOUT,
                what: format!(
                    "the tar holds more than {} MiB: not an image of a Wasm filter",
                    MAX_LAYOUT >> 20
                ),
            });
            for entry in archive.entries().with_context(|| {
                format!("{} is not a tar of an OCI image layout", path.display())
            })? {
                let mut entry = entry.with_context(|| format!("cannot read {}", path.display()))?;
                if entry.header().entry_type() != tar::EntryType::Regular {
                    continue;
                }
                let name = entry
                    .path()
                    .with_context(|| {
                        format!("{}: an entry without a readable name", path.display())
                    })?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("cannot read {} in {}", name, path.display()))?;
                files.insert(name, bytes);
            }
        }
        Ok(Layout {
            files,
            hashed: Default::default(),
        })
    }

    /// A blob by `sha256:<hex>` digest, checked against the digest and size.
    fn blob(&self, desc: &serde_json::Value, what: &str) -> anyhow::Result<&[u8]> {
        let digest = desc["digest"]
            .as_str()
            .with_context(|| format!("{what}: descriptor without a digest"))?;
        let hex = digest
            .strip_prefix("sha256:")
            .with_context(|| format!("{what}: digest {digest:?} is not sha256:<hex>"))?;
        let bytes = self
            .files
            .get(&format!("blobs/sha256/{hex}"))
            .with_context(|| format!("{what}: blob {digest} is missing from blobs/sha256/"))?;
        if !self.hashed.borrow().contains(hex) {
            let actual = sha256_hex(bytes);
            anyhow::ensure!(
                actual == hex,
                "{what}: blob {digest} has sha256 {actual}: the layout is corrupt"
            );
            self.hashed.borrow_mut().insert(hex.to_owned());
        }
        // Go decodes a descriptor's size into an int64: a string, a fraction
        // or a number past 2^63 fails the whole manifest there.
        let size = &desc["size"];
        if !size.is_null() {
            let Some(size) = size.as_i64() else {
                anyhow::bail!(
                    "{what}: descriptor size {size} is not an integer: Istio's fetcher (Go, an int64 field) cannot read this manifest"
                );
            };
            anyhow::ensure!(
                u64::try_from(size).ok() == Some(bytes.len() as u64),
                "{what}: descriptor says {size} bytes, the blob has {}",
                bytes.len()
            );
        }
        Ok(bytes)
    }
}

pub fn is_valid_wasm(b: &[u8]) -> bool {
    b.len() >= 8 && b.starts_with(b"\0asm")
}

/// Reads an image layout and checks it the way Istio's fetcher reads an image.
/// `tag` picks a manifest when the index lists several.
pub fn verify(path: &Path, tag: Option<&str>) -> anyhow::Result<Verified> {
    anyhow::ensure!(path.exists(), "{} does not exist", path.display());
    let layout = Layout::read(path)?;
    verify_layout(&layout, path, tag)
}

/// [`verify`] on an image built in memory, as if written and read back.
pub fn verify_image(img: &Image) -> anyhow::Result<Verified> {
    let layout = Layout {
        files: layout_files(img)
            .into_iter()
            .map(|(name, bytes)| (name, bytes.to_vec()))
            .collect(),
        hashed: Default::default(),
    };
    verify_layout(&layout, Path::new("(in memory)"), None)
}

fn verify_layout(layout: &Layout, path: &Path, tag: Option<&str>) -> anyhow::Result<Verified> {
    let layout_file = layout.files.get("oci-layout").with_context(|| {
        format!(
            "{}: no oci-layout file: not an OCI image layout",
            path.display()
        )
    })?;
    let lv: serde_json::Value =
        serde_json::from_slice(layout_file).context("oci-layout is not JSON")?;
    anyhow::ensure!(
        lv["imageLayoutVersion"].as_str().is_some(),
        "oci-layout: no imageLayoutVersion"
    );
    let index: serde_json::Value = serde_json::from_slice(
        layout
            .files
            .get("index.json")
            .with_context(|| format!("{}: no index.json", path.display()))?,
    )
    .context("index.json is not JSON")?;
    let manifests = index["manifests"]
        .as_array()
        .filter(|m| !m.is_empty())
        .context("index.json lists no manifests")?;
    let ref_name = |d: &serde_json::Value| {
        d["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(str::to_string)
    };
    let desc = match tag {
        Some(t) => manifests
            .iter()
            .find(|d| ref_name(d).as_deref() == Some(t))
            .with_context(|| format!("index.json has no manifest tagged {t:?}"))?,
        None if manifests.len() == 1 => &manifests[0],
        None => anyhow::bail!(
            "index.json lists {} manifests ({}): a layout with one image is expected here (`hybridmesh package --verify LAYOUT --tag TAG` checks one of them)",
            manifests.len(),
            manifests
                .iter()
                .map(|d| ref_name(d).unwrap_or_else(|| "untagged".into()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let desc_type = desc["mediaType"].as_str().unwrap_or_default();
    anyhow::ensure!(
        desc_type != OCI_INDEX && desc_type != DOCKER_MANIFEST_LIST,
        "the tagged descriptor is an image index ({desc_type}): Istio resolves an index to the linux/amd64 image, push the Wasm image manifest itself"
    );
    let manifest_bytes = layout.blob(desc, "manifest")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest_bytes).context("the manifest is not JSON")?;
    let media_type = manifest["mediaType"].as_str().unwrap_or(desc_type);
    anyhow::ensure!(
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST || media_type.is_empty(),
        "manifest media type {media_type:?} is not an image manifest"
    );
    // Every blob the registry would serve is checked, as go-containerregistry does.
    let config_bytes = layout.blob(&manifest["config"], "config")?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let mut layer_bytes = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        layer_bytes.push(layout.blob(l, &format!("layers[{i}]"))?);
    }
    let image_size = manifest_bytes.len()
        + config_bytes.len()
        + layers
            .iter()
            .zip(&layer_bytes)
            .filter(|(l, _)| l["digest"] != manifest["config"]["digest"])
            .map(|(_, b)| b.len())
            .sum::<usize>();
    let layer_type = |i: usize| {
        layers[i]["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let (variant, wasm) = if media_type == DOCKER_MANIFEST {
        let last = layers.len().checked_sub(1).context(
            "could not extract Wasm file from the image as Docker container: number of layers must be greater than zero",
        )?;
        anyhow::ensure!(
            layer_type(last) == DOCKER_LAYER,
            "could not extract Wasm file from the image as Docker container: invalid media type {} (expect {DOCKER_LAYER})",
            layer_type(last)
        );
        ("docker", plugin_wasm_from_targz(layer_bytes[last])?)
    } else {
        let compat = (|| -> anyhow::Result<Vec<u8>> {
            let last = layers
                .len()
                .checked_sub(1)
                .context("number of layers must be greater than zero")?;
            anyhow::ensure!(
                layer_type(last) == OCI_LAYER_GZIP,
                "invalid media type {} (expect {OCI_LAYER_GZIP})",
                layer_type(last)
            );
            plugin_wasm_from_targz(layer_bytes[last])
        })();
        match compat {
            Ok(w) => ("compat", w),
            Err(compat_err) => {
                let oci = (|| -> anyhow::Result<Vec<u8>> {
                    anyhow::ensure!(
                        layers.len() == 2,
                        "number of layers must be 2 but got {}",
                        layers.len()
                    );
                    let i = (0..2)
                        .find(|&i| layer_type(i) == WASM_LAYER)
                        .with_context(|| {
                            format!("could not find the layer of type {WASM_LAYER}")
                        })?;
                    Ok(layer_bytes[i].to_vec())
                })();
                match oci {
                    Ok(w) => ("oci", w),
                    Err(oci_err) => anyhow::bail!(
                        "Istio would reject this image: the given image is in invalid format as an OCI image:\n  could not parse as compat variant: {compat_err:#}\n  could not parse as oci variant: {oci_err:#}"
                    ),
                }
            }
        }
    };
    anyhow::ensure!(
        is_valid_wasm(&wasm),
        "the module in the image is not WebAssembly (Istio: \"fetched Wasm binary ... is invalid\": it wants at least 8 bytes starting with \\0asm)"
    );
    Ok(Verified {
        variant: variant.to_string(),
        tag: ref_name(desc),
        manifest_digest: sha256_hex(manifest_bytes),
        wasm_sha256: sha256_hex(&wasm),
        wasm_size: wasm.len(),
        image_size,
    })
}

/// A layer inflates to at most this, the largest module Istio's agent takes
/// ([`hybridmesh_input::MODULE`]): a crafted layer of a few KiB can inflate to gigabytes.
pub const MAX_INFLATED: u64 = hybridmesh_input::MODULE.bytes;
/// A layout (folder or tar) holds at most this much: blobs are read into memory.
/// One largest module, stored (incompressible), with its manifests and tar headers.
pub const MAX_LAYOUT: u64 = MAX_INFLATED + (16 << 20);

/// A reader that fails, instead of ending, past `left` bytes.
struct Bounded<R> {
    inner: R,
    left: u64,
    what: String,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(self.what.clone()));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The first entry whose base name is `plugin.wasm`, as Istio looks for it.
fn plugin_wasm_from_targz(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let gz = Bounded {
        // Every gzip member, as Go's gzip.Reader reads them (multistream is its default).
        inner: flate2::read::MultiGzDecoder::new(bytes),
        left: MAX_INFLATED,
        what: format!(
            "the layer inflates to more than {} MiB, the largest module Istio's agent takes: not read further",
            MAX_INFLATED >> 20
        ),
    };
    let mut archive = tar::Archive::new(gz);
    let entries = archive.entries().context("the layer is not a tar.gz")?;
    for (i, entry) in entries.enumerate() {
        let mut entry =
            entry.with_context(|| format!("the layer is not a tar.gz (entry {})", i + 1))?;
        let path = entry
            .path()
            .with_context(|| format!("the layer's entry {} has no readable name", i + 1))?
            .into_owned();
        if path.file_name().is_some_and(|n| n == "plugin.wasm") {
            let mut out = Vec::new();
            entry
                .read_to_end(&mut out)
                .with_context(|| format!("cannot read {} from the layer", path.display()))?;
            return Ok(out);
        }
    }
    anyhow::bail!("plugin.wasm not found in the archive")
}

/// The digest a WasmPlugin `sha256` must have for `url`, given what was packaged.
pub fn expected_sha256(url: &str, v: &Verified) -> (String, &'static str) {
    if url.starts_with("http://") || url.starts_with("https://") || url.starts_with("file://") {
        (
            v.wasm_sha256.clone(),
            "the module's sha256 (http(s) and file urls)",
        )
    } else {
        (
            v.manifest_digest.clone(),
            "the image manifest digest (oci urls: Istio compares img.Digest(), pkg/wasm/imagefetcher.go)",
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TINY: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn both_variants_verify_and_are_reproducible() {
        let dir = tempfile_dir();
        for variant in [Variant::Compat, Variant::Oci] {
            let a = build(TINY, variant, "0.1.0").unwrap();
            let b = build(TINY, variant, "0.1.0").unwrap();
            assert_eq!(a.manifest_digest, b.manifest_digest);
            for out in [
                dir.join(variant.name()),
                dir.join(format!("{}.tar", variant.name())),
            ] {
                write(&a, &out).unwrap();
                let v = verify(&out, None).unwrap();
                assert_eq!(v.variant, variant.name());
                assert_eq!(v.manifest_digest, a.manifest_digest);
                assert_eq!(v.wasm_sha256, sha256_hex(TINY));
                assert_eq!(v.tag.as_deref(), Some("0.1.0"));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_layer_of_two_gzip_members_is_read_as_go_reads_it() {
        // The tar in two gzip members (pigz -i, concatenated archives): Go's
        // gzip.Reader reads on into the second member.
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(TINY.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "plugin.wasm", TINY).unwrap();
        let tar = tar.into_inner().unwrap();
        let (first, second) = tar.split_at(300);
        let mut layer = Vec::new();
        for part in [first, second] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, part).unwrap();
            layer.extend(gz.finish().unwrap());
        }
        assert_eq!(plugin_wasm_from_targz(&layer).unwrap(), TINY);
    }

    #[test]
    fn a_descriptor_size_go_cannot_decode_is_refused() {
        let layout = Layout {
            files: [(format!("blobs/sha256/{}", sha256_hex(TINY)), TINY.to_vec())]
                .into_iter()
                .collect(),
            hashed: Default::default(),
        };
        let digest = format!("sha256:{}", sha256_hex(TINY));
        assert!(layout
            .blob(&serde_json::json!({"digest": digest, "size": 8}), "config")
            .is_ok());
        for size in [
            serde_json::json!("8"),
            serde_json::json!(8.5),
            serde_json::json!(1e30),
            serde_json::json!(u64::MAX),
        ] {
            let e = layout
                .blob(
                    &serde_json::json!({"digest": digest, "size": size}),
                    "config",
                )
                .unwrap_err();
            assert!(
                e.to_string()
                    .contains("is not an integer: Istio's fetcher (Go, an int64 field) cannot read this manifest"),
                "{size}: {e}"
            );
        }
    }

    #[test]
    fn tags_follow_the_distribution_spec() {
        for good in ["0.1.0", "v1", "_x", "a-b.c_D"] {
            check_tag(good).unwrap();
        }
        for bad in ["", ".x", "-x", "a\nb", "a\"b", "a:b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
        assert!(build(TINY, Variant::Oci, "a\nb").is_err());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hybridmesh-image-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
