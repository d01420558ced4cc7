//! Disk files at a path the user chose (`disk = { path = "/abs/…" }`), through `qemu-img`
//! (package qemu-utils): new images and overlays on a template. An existing file is never
//! overwritten. Disks without a path are storage volumes instead (`storage`): libvirtd makes
//! those, where its QEMU user can reach them.

use std::path::Path;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub(super) enum DiskError {
    #[error("{0} already exists: not overwriting a disk image")]
    Exists(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("qemu-img {args} failed: {message} (is package qemu-utils installed?)")]
    QemuImg { args: String, message: String },
}

fn qemu_img(args: &[&str]) -> Result<String, DiskError> {
    let shown = args.join(" ");
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| DiskError::QemuImg {
            args: shown.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(DiskError::QemuImg {
            args: shown,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn prepare(path: &Path) -> Result<String, DiskError> {
    let shown = path.display().to_string();
    if path.exists() {
        return Err(DiskError::Exists(shown));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DiskError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(shown)
}

/// A new empty image.
pub(super) fn create(path: &Path, format: &str, size_bytes: u64) -> Result<(), DiskError> {
    let p = prepare(path)?;
    qemu_img(&["create", "-q", "-f", format, &p, &size_bytes.to_string()]).map(|_| ())
}

/// A qcow2 overlay on `backing` (whose format qemu-img is told, so it never probes a raw image);
/// `size_bytes` grows the overlay beyond the backing image's size.
pub(super) fn overlay(
    path: &Path,
    backing: &Path,
    size_bytes: Option<u64>,
) -> Result<(), DiskError> {
    let p = prepare(path)?;
    let b = backing.display().to_string();
    let fmt = format_of(backing)?;
    let size = size_bytes.map(|s| s.to_string());
    let mut args = vec!["create", "-q", "-f", "qcow2", "-b", &b, "-F", &fmt, &p];
    if let Some(s) = &size {
        args.push(s);
    }
    qemu_img(&args).map(|_| ())
}

/// The image's format as qemu-img detects it.
pub(super) fn format_of(path: &Path) -> Result<String, DiskError> {
    let p = path.display().to_string();
    let out = qemu_img(&["info", "--output", "json", "-U", &p])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| DiskError::QemuImg {
        args: format!("info {p}"),
        message: e.to_string(),
    })?;
    Ok(v["format"].as_str().unwrap_or("raw").to_string())
}
