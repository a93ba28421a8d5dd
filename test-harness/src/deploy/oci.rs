//! Reproducible OCI images of the Wasm module, in the shapes Istio's agent accepts, without Docker.
//!
//! Two variants are built, each as its own OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/...`) with exactly one manifest, so `crane push DIR REF` and
//! `skopeo copy oci:DIR ...` take it as a single image:
//!
//! - **image** (the default, what Istio tries first): an OCI image manifest
//!   (`application/vnd.oci.image.manifest.v1+json`) whose single (hence last) layer is an
//!   `application/vnd.oci.image.layer.v1.tar+gzip` holding exactly one regular file, `plugin.wasm`.
//! - **artifact**: the "Wasm artifact" shape, an OCI manifest with exactly two layers, the raw
//!   module (`application/vnd.module.wasm.content.layer.v1+wasm`) and a JSON config
//!   (`application/vnd.module.wasm.config.v1+json`).
//!
//! Everything is deterministic, so the same module always gives the same manifest digest: the tar
//! header is written by hand (mtime 0, uid/gid 0, mode 0644, no user/group names), the gzip header
//! carries no timestamp or file name (OS byte 255, "unknown") and the compression level is fixed,
//! the config has a fixed `created` time, and JSON is written compactly with a fixed field order.
//! (The deflate bytes come from the compressor pinned in Cargo.lock; a different flate2 backend or
//! version could compress differently, so the digest is stable for a given lock file.)
//!
//! Istio compares a WasmPlugin's `sha256` with the image's **manifest** digest, so that is the
//! digest printed for users (as bare hex without the `sha256:` prefix).

use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

// The registry client used to live here; callers still name it through this module.
pub use crate::deploy::registry::{push_http, Reference};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
/// The file name Istio's agent looks for inside the layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// Fixed creation time of every image (the Unix epoch), for reproducibility.
pub const CREATED: &str = "1970-01-01T00:00:00Z";
/// gzip level of the layer; part of the reproducibility contract.
pub const GZIP_LEVEL: u32 = 9;

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Writes `value` in octal, NUL-terminated, right-aligned and zero-padded into `field`.
fn octal(field: &mut [u8], value: u64) -> Result<(), String> {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return Err(format!("{value} does not fit a {digits}-digit tar field"));
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    Ok(())
}

/// A POSIX ustar archive holding one regular file `name` with `data`: mode 0644, uid/gid 0,
/// mtime 0, empty user/group names, followed by the two zero blocks that end an archive.
pub fn tar_single_file(name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    if name.is_empty() || name.len() > 100 || !name.is_ascii() {
        return Err(format!(
            "tar member name {name:?} must be 1..=100 ASCII bytes"
        ));
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644)?; // mode
    octal(&mut h[108..116], 0)?; // uid
    octal(&mut h[116..124], 0)?; // gid
    octal(&mut h[124..136], data.len() as u64)?; // size (11 octal digits: < 8 GiB)
    octal(&mut h[136..148], 0)?; // mtime
    h[156] = b'0'; // typeflag: regular file
    h[257..263].copy_from_slice(b"ustar\0"); // magic
    h[263..265].copy_from_slice(b"00"); // version
                                        // devmajor/devminor, uname/gname and prefix stay NUL (as Python's tarfile writes them).
                                        // Checksum: sum of all header bytes with the checksum field read as spaces; written as six
                                        // octal digits, NUL, space.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let cks = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(cks.as_bytes());

    let padded = data.len().div_ceil(512) * 512;
    let mut out = Vec::with_capacity(512 + padded + 1024);
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(512 + padded + 1024, 0);
    Ok(out)
}

/// gzip with no file name, no comment, mtime 0, OS byte 255 and level [`GZIP_LEVEL`].
pub fn gzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::new(GZIP_LEVEL));
    enc.write_all(data).map_err(|e| format!("gzip: {e}"))?;
    enc.finish().map_err(|e| format!("gzip: {e}"))
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest_of(data),
            size: data.len() as u64,
            annotations: None,
        }
    }
}

/// An OCI image manifest (the fields used here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// Which image shape to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// OCI image whose last layer is a tar+gzip holding `plugin.wasm`.
    Image,
    /// Two-layer Wasm artifact (raw module layer + Wasm config layer).
    Artifact,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Image => "image",
            Variant::Artifact => "artifact",
        }
    }
}

/// A built image: every blob (config, layers, manifest) and the manifest's descriptor.
#[derive(Debug, Clone)]
pub struct Image {
    pub variant: Variant,
    /// (digest, bytes) of the config and layer blobs, in upload order.
    pub blobs: Vec<(String, Vec<u8>)>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl Image {
    /// The bare hex digest to put in a WasmPlugin's `sha256`.
    pub fn wasmplugin_sha256(&self) -> &str {
        self.manifest_digest
            .strip_prefix("sha256:")
            .unwrap_or(&self.manifest_digest)
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| format!("cannot serialise OCI JSON: {e}"))
}

/// Builds the image of `wasm` in the given shape. Pure: the same inputs give the same bytes.
pub fn build(wasm: &[u8], variant: Variant) -> Result<Image, String> {
    let (config, layers) = match variant {
        Variant::Image => {
            let tar = tar_single_file(PLUGIN_FILE, wasm)?;
            let layer = gzip(&tar)?;
            // Keys are written in sorted order so the bytes are the same whether or not serde_json's
            // `preserve_order` feature is enabled somewhere in the dependency graph.
            let config = serde_json::json!({
                "architecture": "wasm",
                "config": {},
                "created": CREATED,
                "history": [{"created": CREATED, "created_by": "meshtrace test-harness image"}],
                "os": "wasip1",
                "rootfs": {"diff_ids": [digest_of(&tar)], "type": "layers"},
            });
            (
                (CONFIG_MEDIA_TYPE, to_json(&config)?),
                vec![(LAYER_MEDIA_TYPE, layer)],
            )
        }
        Variant::Artifact => {
            let config = serde_json::json!({"created": CREATED});
            let config = to_json(&config)?;
            // Istio's agent identifies the two layers by media type; the manifest's config is the
            // same small JSON under the Wasm config media type.
            (
                (WASM_CONFIG_MEDIA_TYPE, config.clone()),
                vec![
                    (WASM_LAYER_MEDIA_TYPE, wasm.to_vec()),
                    (WASM_CONFIG_MEDIA_TYPE, config),
                ],
            )
        }
    };
    let config_desc = Descriptor::of(config.0, &config.1);
    let mut blobs = vec![(config_desc.digest.clone(), config.1)];
    let mut layer_descs = Vec::new();
    for (mt, data) in layers {
        let d = Descriptor::of(mt, &data);
        if !blobs.iter().any(|(dg, _)| *dg == d.digest) {
            blobs.push((d.digest.clone(), data));
        }
        layer_descs.push(d);
    }
    let manifest = to_json(&Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_string(),
        config: config_desc,
        layers: layer_descs,
    })?;
    let manifest_digest = digest_of(&manifest);
    Ok(Image {
        variant,
        blobs,
        manifest,
        manifest_digest,
    })
}

/// Writes `img` as an OCI image layout in `dir` (created if needed). An existing directory must be
/// empty or already an image layout (it has `oci-layout`); its `blobs/` is then replaced.
pub fn write_layout(img: &Image, dir: &Path, tag: &str) -> Result<(), String> {
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .next()
            .is_some();
        if non_empty && !dir.join("oci-layout").is_file() {
            return Err(format!(
                "{} exists, is not empty and is not an OCI image layout; refusing to overwrite",
                dir.display()
            ));
        }
        let blobs = dir.join("blobs");
        if blobs.exists() {
            std::fs::remove_dir_all(&blobs).map_err(|e| io(&blobs, e))?;
        }
    }
    let sha_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&sha_dir).map_err(|e| io(&sha_dir, e))?;
    let write = |p: PathBuf, data: &[u8]| std::fs::write(&p, data).map_err(|e| io(&p, e));
    for (digest, data) in img.blobs.iter().chain(std::iter::once(&(
        img.manifest_digest.clone(),
        img.manifest.clone(),
    ))) {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        write(sha_dir.join(hex), data)?;
    }
    write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut desc = Descriptor::of(MANIFEST_MEDIA_TYPE, &img.manifest);
    desc.annotations = Some(
        [(
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
        )]
        .into(),
    );
    let index = serde_json::json!({
        "manifests": [desc],
        "mediaType": INDEX_MEDIA_TYPE,
        "schemaVersion": 2,
    });
    write(dir.join("index.json"), &to_json(&index)?)
}

/// Reads back the single image of a layout written by [`write_layout`] (or any layout whose
/// `index.json` lists exactly one image manifest), checking every blob's digest.
pub fn read_layout(dir: &Path) -> Result<Image, String> {
    let read = |p: PathBuf| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));
    let blob = |digest: &str| -> Result<Vec<u8>, String> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("unsupported digest {digest}"))?;
        let data = read(dir.join("blobs").join("sha256").join(hex))?;
        if digest_of(&data) != digest {
            return Err(format!("blob {digest} in {} is corrupt", dir.display()));
        }
        Ok(data)
    };
    let index: serde_json::Value = serde_json::from_slice(&read(dir.join("index.json"))?)
        .map_err(|e| format!("{}/index.json: {e}", dir.display()))?;
    let manifests: Vec<Descriptor> = serde_json::from_value(index["manifests"].clone())
        .map_err(|e| format!("{}/index.json manifests: {e}", dir.display()))?;
    let [desc] = manifests.as_slice() else {
        return Err(format!(
            "{}/index.json lists {} manifests; expected exactly one",
            dir.display(),
            manifests.len()
        ));
    };
    let manifest = blob(&desc.digest)?;
    let m: Manifest =
        serde_json::from_slice(&manifest).map_err(|e| format!("manifest {}: {e}", desc.digest))?;
    let variant = if m
        .layers
        .iter()
        .any(|l| l.media_type == WASM_LAYER_MEDIA_TYPE)
    {
        Variant::Artifact
    } else {
        Variant::Image
    };
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for d in std::iter::once(&m.config).chain(&m.layers) {
        if !blobs.iter().any(|(dg, _)| *dg == d.digest) {
            blobs.push((d.digest.clone(), blob(&d.digest)?));
        }
    }
    Ok(Image {
        variant,
        blobs,
        manifest,
        manifest_digest: desc.digest.clone(),
    })
}
/// Lists the members of a tar archive as (name, typeflag, data). Only what the tests need: ustar
/// headers, no PAX/GNU long names (they are reported as members named by their header).
pub fn tar_members(tar: &[u8]) -> Result<Vec<(String, u8, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).trim().to_string()
        };
        let name = field(0..100);
        let size = u64::from_str_radix(&field(124..136), 8)
            .map_err(|_| format!("bad tar size field at offset {off}"))?
            as usize;
        let start = off + 512;
        let data = tar
            .get(start..start + size)
            .ok_or("tar member runs past the end")?
            .to_vec();
        out.push((name, h[156], data));
        off = start + size.div_ceil(512) * 512;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    const GOLDEN_CONFIG: &str = r#"{"architecture":"wasm","config":{},"created":"1970-01-01T00:00:00Z","history":[{"created":"1970-01-01T00:00:00Z","created_by":"meshtrace test-harness image"}],"os":"wasip1","rootfs":{"diff_ids":["sha256:cc975da3c74781f96793984bca5ce4e32ed9cf5f51894ac3aa7b6efdb5d0bf13"],"type":"layers"}}"#;
    const GOLDEN_IMAGE_DIGEST: &str =
        "sha256:8d530e2bf63b37dbab9e56fb2517e172fc5b4044ac7bfa71d0c0932df91c26c8";
    const GOLDEN_ARTIFACT_DIGEST: &str =
        "sha256:d10e0d17311ef4641f25d2d90c895c85364c27697ce33e0497d1020c016c79f4";

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest_of(b"").len(), 7 + 64);
    }

    #[test]
    fn tar_header_is_fixed_and_valid() {
        let t = tar_single_file("plugin.wasm", b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(t.len(), 512 + 512 + 1024);
        assert_eq!(&t[..11], b"plugin.wasm");
        assert_eq!(&t[100..108], b"0000644\0");
        assert_eq!(&t[108..116], b"0000000\0");
        assert_eq!(&t[116..124], b"0000000\0");
        assert_eq!(&t[124..136], b"00000000010\0");
        assert_eq!(&t[136..148], b"00000000000\0");
        assert_eq!(t[156], b'0');
        assert_eq!(&t[257..265], b"ustar\x0000");
        // Checksum: recomputed with the field as spaces.
        let mut h = t[..512].to_vec();
        let stored = u64::from_str_radix(std::str::from_utf8(&t[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u64::from(b)).sum::<u64>());
        assert_eq!(&t[154..156], b"\0 ");
        assert_eq!(&t[512..520], b"\0asm\x01\0\0\0");
        assert!(t[520..].iter().all(|&b| b == 0));
        let m = tar_members(&t).unwrap();
        assert_eq!(
            m,
            vec![("plugin.wasm".into(), b'0', b"\0asm\x01\0\0\0".to_vec())]
        );
    }

    #[test]
    fn tar_pads_exact_blocks_and_rejects_long_names() {
        assert_eq!(tar_single_file("a", &[7; 512]).unwrap().len(), 512 * 4);
        assert_eq!(tar_single_file("a", &[]).unwrap().len(), 512 * 3);
        assert!(tar_single_file(&"x".repeat(101), b"").is_err());
        assert!(tar_single_file("", b"").is_err());
    }

    #[test]
    fn gzip_header_has_no_time_or_name_and_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let a = gzip(&data).unwrap();
        let b = gzip(&data).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..3], &[0x1f, 0x8b, 8]); // magic, deflate
        assert_eq!(a[3], 0, "no FNAME/FCOMMENT/FEXTRA flags");
        assert_eq!(&a[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(a[9], 255, "OS unknown");
        assert_eq!(gunzip(&a), data);
    }

    #[test]
    fn image_is_reproducible_and_shaped_for_istio() {
        let wasm = b"\0asm\x01\0\0\0fake module".to_vec();
        let a = build(&wasm, Variant::Image).unwrap();
        let b = build(&wasm, Variant::Image).unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.manifest_digest, digest_of(&a.manifest));
        assert_eq!(a.wasmplugin_sha256().len(), 64);
        let m: Manifest = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m.schema_version, 2);
        assert_eq!(m.media_type, MANIFEST_MEDIA_TYPE);
        assert_eq!(m.config.media_type, CONFIG_MEDIA_TYPE);
        let last = m.layers.last().unwrap();
        assert_eq!(last.media_type, LAYER_MEDIA_TYPE);
        let layer = &a.blobs.iter().find(|(d, _)| *d == last.digest).unwrap().1;
        assert_eq!(last.size, layer.len() as u64);
        let tar = gunzip(layer);
        assert_eq!(
            tar_members(&tar).unwrap(),
            vec![(PLUGIN_FILE.to_string(), b'0', wasm.clone())]
        );
        let cfg: serde_json::Value = serde_json::from_slice(
            &a.blobs
                .iter()
                .find(|(d, _)| *d == m.config.digest)
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"][0], digest_of(&tar));
        assert_eq!(cfg["created"], CREATED);
        // A different module gives a different digest.
        let mut other = wasm.clone();
        other.push(0);
        assert_ne!(
            build(&other, Variant::Image).unwrap().manifest_digest,
            a.manifest_digest
        );
    }

    /// Golden values: a change here changes every published digest (e.g. a different deflate
    /// backend or version in Cargo.lock, or a change to the image shape), so it must be deliberate.
    #[test]
    fn golden_digests_of_a_tiny_module() {
        let img = build(b"\0asm\x01\0\0\0", Variant::Image).unwrap();
        // sha256 of the 2048-byte archive Python's `tarfile` (USTAR_FORMAT, mode 0644, mtime 0,
        // uid/gid 0, empty names) writes for the same member, cut before its record padding: an
        // independent implementation agrees byte for byte.
        let tar = tar_single_file(PLUGIN_FILE, b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(
            sha256_hex(&tar),
            "cc975da3c74781f96793984bca5ce4e32ed9cf5f51894ac3aa7b6efdb5d0bf13"
        );
        let cfg = &img.blobs[0].1;
        assert_eq!(std::str::from_utf8(cfg).unwrap(), GOLDEN_CONFIG,);
        assert_eq!(img.manifest_digest, GOLDEN_IMAGE_DIGEST);
        let art = build(b"\0asm\x01\0\0\0", Variant::Artifact).unwrap();
        assert_eq!(art.manifest_digest, GOLDEN_ARTIFACT_DIGEST);
    }

    #[test]
    fn artifact_has_exactly_the_two_wasm_layers() {
        let wasm = b"\0asm\x01\0\0\0".to_vec();
        let a = build(&wasm, Variant::Artifact).unwrap();
        let m: Manifest = serde_json::from_slice(&a.manifest).unwrap();
        let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(types, [WASM_LAYER_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE]);
        assert_eq!(m.layers[0].digest, digest_of(&wasm));
        assert_ne!(
            a.manifest_digest,
            build(&wasm, Variant::Image).unwrap().manifest_digest
        );
    }

    #[test]
    fn layout_round_trips_and_refuses_foreign_dirs() {
        let dir = std::env::temp_dir().join(format!("meshtrace-oci-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let img = build(b"\0asm\x01\0\0\0", Variant::Image).unwrap();
        write_layout(&img, &dir, "latest").unwrap();
        // Rewriting over an existing layout is allowed and drops stale blobs.
        std::fs::write(dir.join("blobs/sha256/stale"), b"x").unwrap();
        write_layout(&img, &dir, "latest").unwrap();
        assert!(!dir.join("blobs/sha256/stale").exists());
        let back = read_layout(&dir).unwrap();
        assert_eq!(back.manifest_digest, img.manifest_digest);
        assert_eq!(back.blobs, img.blobs);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            img.manifest_digest.as_str()
        );
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );
        let foreign = dir.join("blobs");
        assert!(write_layout(&img, &foreign, "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
