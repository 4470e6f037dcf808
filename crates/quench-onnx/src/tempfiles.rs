//! The temporary files a save has open, so an interrupted process can
//! remove them.
//!
//! Every file [`crate::save_model`] and [`crate::write_atomic`] create
//! before it is referenced by a finished output (the hidden temporary file
//! of an atomic write, and the freshly named external data file until the
//! model that refers to it is in place) is registered here. The binary's
//! SIGINT/SIGTERM handler calls [`remove_temp_files`], which deletes them
//! and returns with the registry locked, so no rename can complete after
//! it: the handler then exits the process.
//!
//! Invariant: a path leaves the registry in the same critical section as
//! the rename that makes it part of a finished output ([`commit`]), so the
//! handler never deletes a file a finished output refers to.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves the list intact: keep using it.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers `p` as a temporary file to delete on interruption.
pub(crate) fn register(p: &Path) {
    live().push(p.to_path_buf());
}

/// Forgets `p` (after it was removed or became part of an output).
pub(crate) fn forget(p: &Path) {
    live().retain(|x| x != p);
}

/// Runs `step` (a rename that makes registered files part of an output)
/// and forgets `done` in one critical section with respect to
/// [`remove_temp_files`]. `done` is forgotten only if `step` succeeds.
pub(crate) fn commit<T>(
    done: &[&Path],
    step: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut g = live();
    let r = step()?;
    g.retain(|x| !done.contains(&x.as_path()));
    Ok(r)
}

/// Deletes every registered temporary file; returns how many were
/// deleted. For a signal handler about to exit the process: the registry
/// stays locked until the process ends, so no save can finish a rename
/// after this call (later calls from other threads block).
pub fn remove_temp_files() -> usize {
    let g = live();
    let mut n = 0;
    for p in g.iter() {
        if std::fs::remove_file(p).is_ok() {
            n += 1;
        }
    }
    // Keep the lock: the caller exits the process.
    std::mem::forget(g);
    n
}

/// The registered temporary files now (for tests).
pub fn registered_temp_files() -> Vec<PathBuf> {
    live().clone()
}
