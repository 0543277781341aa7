//! The file-system calls durability rests on, in one place: writing a segment, fsyncing a file and a
//! directory, and replacing a small file atomically. The log makes them through [`Storage`], a seam
//! that lets tests make exactly one of them fail; everything else uses the plain functions.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The calls whose failure the log has to survive. [`OsStorage`] makes them for real; a test can wrap
/// it and fail one, the way a dying disk or a full one would.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Appends `buf` to a segment.
    fn write(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        file.write_all(buf)
    }

    /// Flushes a segment's data to stable storage.
    fn sync_file(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    /// Flushes a directory's entries (a created, renamed or removed file) to stable storage.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

impl Storage for OsStorage {}

/// fsyncs a directory, so that files created, renamed or removed in it stay so after a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash, or a power cut once this returns, leaves the new
/// content: written to a temporary file beside it, fsynced, renamed over it, and the directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let mut f = File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomically_replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state.json"]);
    }
}
