//! (being written)

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease journal {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}
