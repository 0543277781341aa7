//! What guards a log directory: an exclusive lock, so that two processes never append to one log,
//! and a data-format marker, so that a directory written under other rules is refused rather than
//! silently mixed.
//!
//! | format | change |
//! | --- | --- |
//! | 1 | (no marker) the first releases |
//! | 2 | series keys escape `\`, so that two different series can no longer share a key and id (a series whose measurement, tag key or tag value contains a backslash gets a new id) |

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::durable;
use crate::error::LogError;

/// The format this version writes.
pub const FORMAT: u32 = 2;
const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "LOCK";

/// Takes the directory's lock, held until the returned file is dropped (or the process dies: the
/// kernel releases it, so a `kill -9` leaves no stale lock behind). A lock still held is tried again
/// for a second: a child process forked by this one holds a copy of the descriptor until it runs its
/// program, so a log just dropped can look locked for that long.
pub(crate) fn lock(dir: &Path) -> Result<File, LogError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(LogError::io(&path))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(TryLockError::WouldBlock) => return Err(LogError::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(LogError::io(&path)(e)),
        }
    }
}

/// Checks the directory's format marker, writing it to a new directory. A directory that holds a log
/// but no marker was written by format 1: refused unless `upgrade` (`log.upgrade_from_format_1`).
pub(crate) fn check_format(dir: &Path, had_segments: bool, upgrade: bool) -> Result<(), LogError> {
    let path = dir.join(FORMAT_FILE);
    let found = match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Err(LogError::Format { path, message: format!("unreadable format marker {:?}", text.trim()) });
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(LogError::io(&path)(e)),
    };
    match found {
        Some(FORMAT) => Ok(()),
        Some(n) => Err(LogError::Format {
            path,
            message: format!("data format {n}, but this Yaffle reads format {FORMAT}: run a Yaffle of that format"),
        }),
        None if had_segments && !upgrade => Err(LogError::Format {
            path,
            message: format!(
                "no format marker: the log was written before data format {FORMAT}, in which series keys \
                 containing a backslash hash differently; set log.upgrade_from_format_1 = true to take it \
                 over (such series continue under new ids, their older points keep the old ones)"
            ),
        }),
        None => durable::write_atomically(&path, format!("{FORMAT}\n").as_bytes()).map_err(LogError::io(&path)),
    }
}
