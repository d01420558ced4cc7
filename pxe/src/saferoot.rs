//! A read-only directory that network clients may read regular files from, and nothing else.
//!
//! Shared by TFTP and HTTP so both apply exactly the same rules to a requested name:
//! - at most [`MAX_PATH_BYTES`] bytes in total and [`MAX_COMPONENT_BYTES`] per component
//!   (NAME_MAX); no NUL byte, no backslash (a Windows-style `..\x` must not be half-understood);
//! - ONE leading `/` is stripped, so `/pxelinux.0` and `pxelinux.0` name the same file (what
//!   tftpd-hpa's `-s` chroot gives; PXE ROMs send both spellings);
//! - `..` anywhere is refused, even when it would stay inside the root; empty components
//!   (`a//b`, `//a`) and `.` components are skipped, as the kernel's own path lookup, nginx and
//!   Apache do (shim over UEFI HTTP boot asks for `/debian-installer/amd64//grubx64.efi`); a
//!   name ending in `/` names a directory and is never served;
//! - symlinks are followed only while they stay inside the root: a link inside the root to a
//!   file inside the root is served, a link to anything outside is refused;
//! - only a regular file is served (a directory, FIFO or device reads as "not found");
//! - a *mount* ([`SafeRoot::with_mount`]) serves another directory, under the same rules, at one
//!   top-level name of the root (what the root itself holds under that name is hidden): files
//!   the agent generates live in its own state directory, the boot root may stay read-only.
//!
//! How symlinks are checked (and why not openat2 alone): the joined path is canonicalized and
//! must still lie under the canonical root. That admits absolute links that point back inside
//! the root (common in boot trees: `pxelinux.0 -> /srv/boot/syslinux/pxelinux.0`), which
//! `openat2(RESOLVE_BENEATH)` on the raw name would refuse. The canonical path has no symlinks
//! left, so it is then opened with `openat2(root_fd, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`:
//! if someone with write access to the root swaps a component for a symlink between the check
//! and the open, the open fails instead of escaping. Kernels without openat2 (ENOSYS, < 5.6) or
//! sandboxes that filter it (EPERM) fall back to `open(O_NOFOLLOW)` and then confirm through
//! `/proc/self/fd/N` that the file actually opened is still inside the root. Opens use
//! O_NONBLOCK so that a FIFO planted in the root can never hang the server.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Longest requested name accepted, in bytes. A classic TFTP RRQ fits in 512 bytes; HTTP
/// paths from firmware are short too. 1024 leaves room without inviting abuse.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest single path component, in bytes (Linux NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a requested name was not served.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("the boot root {path} is unusable: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("empty file name")]
    Empty,
    #[error("file name contains a NUL byte")]
    Nul,
    #[error("file name is {0} bytes, longer than the {MAX_PATH_BYTES}-byte limit")]
    TooLong(usize),
    #[error("a path component is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong,
    #[error("file name contains a backslash")]
    Backslash,
    #[error("file name contains a '..' component")]
    DotDot,
    #[error("file name is not valid UTF-8")]
    NotUtf8,
    #[error("the path leads outside the boot root (symlink)")]
    Escapes,
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
    #[error("permission denied")]
    PermissionDenied,
    #[error("I/O error: {0}")]
    Io(io::Error),
}

impl PathError {
    /// True when the client should be told "not found" (TFTP code 1, HTTP 404) rather than
    /// "access violation" (TFTP code 2, HTTP 403).
    pub fn is_not_found(&self) -> bool {
        matches!(self, PathError::NotFound | PathError::NotAFile)
    }

    /// TFTP error code (RFC 1350): 1 file not found, 2 access violation, 0 otherwise.
    pub fn tftp_code(&self) -> u16 {
        match self {
            PathError::NotFound | PathError::NotAFile => 1,
            PathError::Io(_) | PathError::Root { .. } => 0,
            _ => 2,
        }
    }

    /// HTTP status: 404 not found, 403 refused, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            PathError::NotFound | PathError::NotAFile => 404,
            PathError::Io(_) | PathError::Root { .. } => 500,
            _ => 403,
        }
    }
}

/// The boot root, canonicalized once at creation.
#[derive(Debug)]
pub struct SafeRoot {
    root: PathBuf,
    /// The root directory itself, for openat2 relative to it.
    root_dir: OwnedFd,
    /// Top-level names served from another directory.
    mounts: Vec<(String, SafeRoot)>,
}

impl SafeRoot {
    pub fn new(root: &Path) -> Result<SafeRoot, PathError> {
        let root_err = |source| PathError::Root {
            path: root.to_path_buf(),
            source,
        };
        let canonical = root.canonicalize().map_err(root_err)?;
        let c_root = CString::new(canonical.as_os_str().as_bytes())
            .map_err(|_| root_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: c_root is a valid NUL-terminated string; the returned fd is checked.
        let fd = unsafe {
            libc::open(
                c_root.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(root_err(io::Error::last_os_error()));
        }
        // SAFETY: fd is a freshly opened descriptor that nothing else owns.
        let root_dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SafeRoot {
            root: canonical,
            root_dir,
            mounts: Vec::new(),
        })
    }

    /// Serves `dir` at the top-level name `name` (one path component, e.g. `generated`):
    /// `generated/x.ipxe` is `dir/x.ipxe`, checked by the same rules within `dir`.
    pub fn with_mount(mut self, name: &str, dir: &Path) -> Result<SafeRoot, PathError> {
        let single = validate_name(name)?;
        if single.components().count() != 1 {
            return Err(PathError::Root {
                path: dir.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("mount name {name:?} is not one path component"),
                ),
            });
        }
        let mounted = SafeRoot::new(dir)?;
        self.mounts.retain(|(n, _)| n != name);
        self.mounts.push((name.to_string(), mounted));
        Ok(self)
    }

    /// The canonical root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens `requested` for reading if the rules in the module doc allow it. Blocking (file
    /// system calls): async callers run it in `spawn_blocking`.
    pub fn open(&self, requested: &str) -> Result<(File, Metadata), PathError> {
        let relative = validate_name(requested)?;
        if requested.ends_with('/') {
            // "/", "." or "name/": a directory, never served (no listings).
            return Err(PathError::NotAFile);
        }
        self.open_relative(&relative)
    }

    /// `relative` has passed [`validate_name`].
    fn open_relative(&self, relative: &Path) -> Result<(File, Metadata), PathError> {
        if relative.as_os_str().is_empty() {
            return Err(PathError::NotAFile);
        }
        let mut parts = relative.components();
        if let Some(Component::Normal(first)) = parts.next() {
            if let Some((_, mounted)) = self.mounts.iter().find(|(n, _)| first == n.as_str()) {
                return mounted.open_relative(parts.as_path());
            }
        }
        let canonical = self.root.join(relative).canonicalize().map_err(map_io)?;
        let inside = canonical
            .strip_prefix(&self.root)
            .map_err(|_| PathError::Escapes)?;
        if inside.as_os_str().is_empty() {
            // A symlink back to the root itself.
            return Err(PathError::NotAFile);
        }
        let file = self.open_beneath(inside, &canonical)?;
        let meta = file.metadata().map_err(map_io)?;
        if !meta.is_file() {
            return Err(PathError::NotAFile);
        }
        Ok((file, meta))
    }

    fn open_beneath(&self, inside: &Path, canonical: &Path) -> Result<File, PathError> {
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
        let c_inside = CString::new(inside.as_os_str().as_bytes()).map_err(|_| PathError::Nul)?;
        // SAFETY: open_how is plain data; zeroed is a valid value for every field.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: all pointers are valid for the call; the size matches the struct passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root_dir.as_raw_fd(),
                c_inside.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
            return Ok(unsafe { File::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) => self.open_fallback(canonical, flags),
            // A component became a symlink after the canonical check: a race, refuse.
            Some(libc::ELOOP) | Some(libc::EXDEV) => Err(PathError::Escapes),
            _ => Err(map_io(err)),
        }
    }

    /// Pre-openat2 kernels: O_NOFOLLOW guards the last component, /proc/self/fd tells where the
    /// descriptor really points, which covers a swapped directory component too.
    fn open_fallback(&self, canonical: &Path, flags: libc::c_int) -> Result<File, PathError> {
        let c_path = CString::new(canonical.as_os_str().as_bytes()).map_err(|_| PathError::Nul)?;
        // SAFETY: valid NUL-terminated path; result checked.
        let fd = unsafe { libc::open(c_path.as_ptr(), flags | libc::O_NOFOLLOW) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ELOOP) {
                return Err(PathError::Escapes);
            }
            return Err(map_io(err));
        }
        // SAFETY: fresh descriptor, owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let real = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(map_io)?;
        if !real.starts_with(&self.root) {
            return Err(PathError::Escapes);
        }
        Ok(file)
    }
}

fn map_io(err: io::Error) -> PathError {
    match err.kind() {
        io::ErrorKind::NotFound => PathError::NotFound,
        io::ErrorKind::PermissionDenied => PathError::PermissionDenied,
        _ => match err.raw_os_error() {
            // A path component is a regular file ("a.bin/x").
            Some(libc::ENOTDIR) => PathError::NotFound,
            // Symlink loop.
            Some(libc::ELOOP) => PathError::Escapes,
            Some(libc::ENAMETOOLONG) => PathError::TooLong(0),
            _ => PathError::Io(err),
        },
    }
}

/// Applies the name rules (no file system access) and returns the path relative to the root.
pub fn validate_name(requested: &str) -> Result<PathBuf, PathError> {
    if requested.is_empty() {
        return Err(PathError::Empty);
    }
    if requested.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(requested.len()));
    }
    if requested.contains('\0') {
        return Err(PathError::Nul);
    }
    if requested.contains('\\') {
        return Err(PathError::Backslash);
    }
    let stripped = requested.strip_prefix('/').unwrap_or(requested);
    // A trailing '/' (HTTP "/sub/") is allowed; `open` then treats the name as a directory.
    let stripped = stripped.strip_suffix('/').unwrap_or(stripped);
    let mut relative = PathBuf::new();
    if stripped.is_empty() {
        return Ok(relative);
    }
    for part in stripped.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(PathError::DotDot),
            _ if part.len() > MAX_COMPONENT_BYTES => return Err(PathError::ComponentTooLong),
            _ => relative.push(part),
        }
    }
    // Belt and braces: what we built must be a plain relative path of normal components.
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(PathError::DotDot);
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("a.bin"), b"inside").expect("write");
        std::fs::write(root.join("sub/b.bin"), b"nested").expect("write");
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"SECRET").expect("write");
        (dir, root, outside)
    }

    fn read(root: &SafeRoot, name: &str) -> Result<Vec<u8>, PathError> {
        let (mut f, _) = root.open(name)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).map_err(PathError::Io)?;
        Ok(v)
    }

    #[test]
    fn leading_slash_and_plain_name_are_the_same_file() {
        let (_d, root, _) = tree();
        let sr = SafeRoot::new(&root).expect("root");
        assert_eq!(read(&sr, "a.bin").expect("plain"), b"inside");
        assert_eq!(read(&sr, "/a.bin").expect("slash"), b"inside");
        assert_eq!(read(&sr, "./sub/b.bin").expect("dot"), b"nested");
        // Empty components are skipped (shim over HTTP sends `dir//grubx64.efi`).
        assert_eq!(read(&sr, "//a.bin").expect("double slash"), b"inside");
        assert_eq!(read(&sr, "sub//b.bin").expect("inner"), b"nested");
        assert!(matches!(read(&sr, "sub//../a.bin"), Err(PathError::DotDot)));
        assert!(matches!(read(&sr, "a.bin/"), Err(PathError::NotAFile)));
        assert!(matches!(read(&sr, "sub/"), Err(PathError::NotAFile)));
    }

    #[test]
    fn traversal_spellings_are_refused() {
        let (_d, root, _) = tree();
        let sr = SafeRoot::new(&root).expect("root");
        for name in [
            "../secret",
            "sub/../../secret",
            "/../secret",
            "sub/..",
            "..",
            "a/../a.bin",
        ] {
            assert!(matches!(sr.open(name), Err(PathError::DotDot)), "{name}");
        }
        assert!(matches!(sr.open("..\\secret"), Err(PathError::Backslash)));
        assert!(matches!(sr.open("a.bin\0"), Err(PathError::Nul)));
        assert!(matches!(sr.open(""), Err(PathError::Empty)));
        let long = "x".repeat(MAX_PATH_BYTES + 1);
        assert!(matches!(sr.open(&long), Err(PathError::TooLong(_))));
        let long_comp = format!("sub/{}", "y".repeat(MAX_COMPONENT_BYTES + 1));
        assert!(matches!(
            sr.open(&long_comp),
            Err(PathError::ComponentTooLong)
        ));
    }

    #[test]
    fn symlinks_outside_refused_inside_served() {
        let (dir, root, outside) = tree();
        symlink(&outside, root.join("escape")).expect("symlink");
        symlink(dir.path(), root.join("escdir")).expect("symlink");
        symlink("a.bin", root.join("rel-inside")).expect("symlink");
        symlink(root.join("sub/b.bin"), root.join("abs-inside")).expect("symlink");
        symlink("../secret", root.join("sub/up")).expect("symlink");
        let sr = SafeRoot::new(&root).expect("root");
        assert!(matches!(sr.open("escape"), Err(PathError::Escapes)));
        assert!(matches!(sr.open("escdir/secret"), Err(PathError::Escapes)));
        assert!(matches!(sr.open("sub/up"), Err(PathError::NotFound)));
        assert_eq!(read(&sr, "rel-inside").expect("rel"), b"inside");
        assert_eq!(read(&sr, "abs-inside").expect("abs"), b"nested");
    }

    #[test]
    fn directories_fifos_and_missing_files_are_not_found() {
        let (_d, root, _) = tree();
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).expect("cstr");
        // SAFETY: valid path string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let sr = SafeRoot::new(&root).expect("root");
        for name in ["sub", "/", "fifo", "nope", "a.bin/x"] {
            let err = sr.open(name).expect_err(name);
            assert!(err.is_not_found(), "{name}: {err}");
        }
    }

    #[test]
    fn fallback_open_checks_where_the_fd_points() {
        let (_d, root, outside) = tree();
        let sr = SafeRoot::new(&root).expect("root");
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK;
        let canonical = root.canonicalize().expect("canon").join("a.bin");
        assert!(sr.open_fallback(&canonical, flags).is_ok());
        let outside = outside.canonicalize().expect("canon");
        assert!(matches!(
            sr.open_fallback(&outside, flags),
            Err(PathError::Escapes)
        ));
    }

    #[test]
    fn a_mount_serves_its_directory_under_one_name_and_keeps_the_rules() {
        let (d, root, outside) = tree();
        let gen = d.path().join("generated");
        std::fs::create_dir_all(&gen).expect("mkdir");
        std::fs::write(gen.join("n.ipxe"), b"#!ipxe").expect("write");
        // The root's own entry of that name is hidden by the mount.
        std::fs::create_dir_all(root.join("gen")).expect("mkdir");
        std::fs::write(root.join("gen/n.ipxe"), b"shadowed").expect("write");
        symlink(&outside, gen.join("leak")).expect("symlink");
        let sr = SafeRoot::new(&root)
            .expect("root")
            .with_mount("gen", &gen)
            .expect("mount");
        assert_eq!(read(&sr, "gen/n.ipxe").expect("mounted"), b"#!ipxe");
        assert_eq!(read(&sr, "/gen/n.ipxe").expect("slash"), b"#!ipxe");
        assert_eq!(read(&sr, "a.bin").expect("root still served"), b"inside");
        assert!(matches!(read(&sr, "gen/leak"), Err(PathError::Escapes)));
        assert!(matches!(read(&sr, "gen/../a.bin"), Err(PathError::DotDot)));
        assert!(matches!(read(&sr, "gen"), Err(PathError::NotAFile)));
        assert!(matches!(read(&sr, "gen/"), Err(PathError::NotAFile)));
        assert!(matches!(read(&sr, "gen/none"), Err(PathError::NotFound)));
        assert!(SafeRoot::new(&root)
            .expect("root")
            .with_mount("a/b", &gen)
            .is_err());
    }
}
