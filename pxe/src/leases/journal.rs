//! The journal file: replay with truncation to the valid prefix, group-committed appends,
//! compaction by write-new-then-rename.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::codec::{self, Decoded, Format, HEADER_LEN, V4};
use super::{LeaseError, LoadReport};

/// An opened journal, the records it replayed, and what replay found.
pub(crate) type Opened<F> = (Journal<F>, Vec<<F as Format>::Record>, LoadReport);

/// A journal of records of kind `F` (DHCPv4 leases unless said otherwise).
pub(crate) struct Journal<F: Format = V4> {
    path: PathBuf,
    file: File,
    /// Bytes known to be on stable storage: everything before this is valid records.
    durable_len: u64,
    /// Encoded records staged since the last flush.
    pending: Vec<u8>,
    /// A failed write may have left bytes past `durable_len` that could not be cut off yet.
    /// Appending after them could leave complete records of the failed batch behind our new end,
    /// to be replayed later as if they were newest; so no write happens until the cut succeeds.
    tail_unclean: bool,
    /// A compaction renamed the new journal in but the directory fsync failed: until it succeeds
    /// a crash could bring the old journal back, so appends (now going to the new one) are not
    /// acknowledged.
    rename_unsynced: bool,
    format: std::marker::PhantomData<F>,
}

impl<F: Format> Journal<F> {
    /// Opens (creating if needed) the journal and replays it. A torn or corrupt tail is cut off
    /// so that later appends are not hidden behind it.
    pub(crate) fn open(path: &Path) -> Result<Opened<F>, LeaseError> {
        let io_err = |source| LeaseError::io(path, source);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| LeaseError::io(dir, e))?;
                // The new directory's own entry must survive a crash too.
                sync_dir(dir)?;
            }
        }
        // A leftover .tmp is a compaction killed before its rename: the journal itself is still
        // complete, the copy is not trusted.
        let tmp = tmp_path(path);
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::warn!(path = %tmp.display(), "removed unfinished lease compaction"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LeaseError::io(&tmp, e)),
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;

        let mut report = LoadReport::default();
        let mut records = Vec::new();
        if bytes.len() < HEADER_LEN {
            // Empty, or killed while writing the header of a new journal.
            if bytes[..] != codec::header_of::<F>()[..bytes.len()] {
                return Err(LeaseError::NotAJournal {
                    path: path.to_path_buf(),
                });
            }
            report.dropped_bytes = bytes.len() as u64;
            report.version = F::VERSION;
            file.set_len(0).map_err(io_err)?;
            file.write_all_at(&codec::header_of::<F>(), 0)
                .map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            sync_dir(path)?;
            let journal = Journal {
                path: path.to_path_buf(),
                file,
                durable_len: HEADER_LEN as u64,
                pending: Vec::new(),
                tail_unclean: false,
                rename_unsynced: false,
                format: std::marker::PhantomData,
            };
            return Ok((journal, records, report));
        }
        if &bytes[..8] != F::MAGIC {
            return Err(LeaseError::NotAJournal {
                path: path.to_path_buf(),
            });
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        report.version = version;
        if !F::READABLE_VERSIONS.contains(&version) {
            return Err(LeaseError::Version {
                path: path.to_path_buf(),
                found: version,
                supported: F::VERSION,
            });
        }

        let mut pos = HEADER_LEN;
        let mut corrupt = None;
        while pos < bytes.len() {
            match codec::decode_as::<F>(&bytes[pos..]) {
                Decoded::Record(record, used) => {
                    records.push(record);
                    pos += used;
                }
                Decoded::Incomplete => break,
                Decoded::Corrupt(why) => {
                    corrupt = Some(why);
                    break;
                }
            }
        }
        report.records = records.len();
        report.dropped_bytes = (bytes.len() - pos) as u64;
        if report.dropped_bytes > 0 {
            if let Some(why) = corrupt {
                // Keep what we cut for a post-mortem; a torn tail after a crash is normal and
                // not worth a file, a corrupt record in the middle is not.
                let saved = with_suffix(path, ".dropped");
                if let Err(e) = fs::write(&saved, &bytes[pos..]) {
                    tracing::warn!(path = %saved.display(), error = %e, "could not save the dropped journal tail");
                }
                report.corruption = Some(why.to_string());
            }
            tracing::warn!(
                path = %path.display(),
                offset = pos,
                dropped_bytes = report.dropped_bytes,
                reason = corrupt.unwrap_or("torn record at the end"),
                "lease journal: loaded the valid prefix, cutting off the rest"
            );
            file.set_len(pos as u64).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        let journal = Journal {
            path: path.to_path_buf(),
            file,
            durable_len: pos as u64,
            pending: Vec::new(),
            tail_unclean: false,
            rename_unsynced: false,
            format: std::marker::PhantomData,
        };
        Ok((journal, records, report))
    }

    pub(crate) fn stage(&mut self, record: &F::Record) {
        codec::encode_as::<F>(record, &mut self.pending);
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Length of the file once the pending batch is written.
    pub(crate) fn len(&self) -> u64 {
        self.durable_len + self.pending.len() as u64
    }

    /// Writes the pending batch with one write and one fdatasync. On failure the file is cut back
    /// to its last durable length (so a half-written record never turns valid later) and the
    /// batch is discarded: the caller must not acknowledge anything in it.
    pub(crate) fn flush(&mut self) -> Result<(), LeaseError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.repair() {
            self.pending.clear();
            return Err(e);
        }
        let result = self
            .file
            .write_all_at(&self.pending, self.durable_len)
            .and_then(|()| self.file.sync_data());
        let lost = self.pending.len();
        self.pending.clear();
        match result {
            Ok(()) => {
                self.durable_len += lost as u64;
                Ok(())
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, bytes = lost, "lease journal write failed; batch not acknowledged");
                self.tail_unclean = true;
                if let Err(te) = self.repair() {
                    tracing::warn!(error = %te, "could not cut back a failed journal write; retrying before the next one");
                }
                Err(LeaseError::io(&self.path, e))
            }
        }
    }

    /// Finishes what a failed flush or compaction left undone; Err while it still cannot.
    fn repair(&mut self) -> Result<(), LeaseError> {
        if self.tail_unclean {
            self.file
                .set_len(self.durable_len)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| LeaseError::io(&self.path, e))?;
            self.tail_unclean = false;
        }
        if self.rename_unsynced {
            sync_dir(&self.path)?;
            self.rename_unsynced = false;
        }
        Ok(())
    }

    /// Replaces the journal with one holding exactly `live`. The old journal stays complete and
    /// authoritative until the rename, so a kill at any point loses nothing. Requires an empty
    /// pending batch (call after a successful flush).
    pub(crate) fn compact(
        &mut self,
        live: impl Iterator<Item = F::Record>,
    ) -> Result<(), LeaseError> {
        debug_assert!(self.pending.is_empty());
        self.repair()?;
        let tmp = tmp_path(&self.path);
        let mut buf = codec::header_of::<F>().to_vec();
        for record in live {
            codec::encode_as::<F>(&record, &mut buf);
        }
        let written = (|| {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            Ok::<File, io::Error>(f)
        })();
        let new_file = match written {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(LeaseError::io(&tmp, e));
            }
        };
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            LeaseError::io(&self.path, e)
        })?;
        // The handle we wrote through is now the journal, whatever happens next.
        self.file = new_file;
        self.durable_len = buf.len() as u64;
        self.tail_unclean = false;
        self.rename_unsynced = true;
        self.repair()
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Makes a create or rename in the journal's directory durable.
fn sync_dir(path: &Path) -> Result<(), LeaseError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LeaseError::io(dir, e))
}
