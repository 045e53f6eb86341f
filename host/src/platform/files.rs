//! Files only their owner can read (the process's file creation mask, the repair of a file
//! that others can read), and why a file cannot be written (a read-only file system, no
//! permission, no space left).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::Mode;

/// Permission bits for the group and for others.
const OTHERS: u32 = 0o077;

/// From now on, create every file and directory for the owner alone: a umask of 0o077
/// takes the group's and others' bits off whatever mode a creator asks for (SQLite asks
/// 0644 for its database, journal and shared-memory files). Call before any thread starts:
/// the mask is the whole process's.
pub fn create_private() {
    rustix::process::umask(Mode::from_raw_mode(OTHERS));
}

/// If the file at `path` gives the group or others any permission, take it away (leaving
/// the owner's bits) and return the mode it had; `Ok(None)` if it was private or does not
/// exist.
pub fn make_private(path: &Path) -> io::Result<Option<u32>> {
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if mode & OTHERS == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))?;
    Ok(Some(mode))
}

/// `Ok` if this process may write to `path` (a file, or a directory to create files in):
/// `access(2)`, which also reports a read-only file system (`ReadOnlyFilesystem`) to root.
pub fn check_writable(path: &Path) -> io::Result<()> {
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK).map_err(io::Error::from)
}

/// Bytes an unprivileged user can still write on the file system that holds `path`.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let stats = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_file_others_can_read_is_made_private_and_a_private_one_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("duet-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(make_private(&path).unwrap(), Some(0o644));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(make_private(&path).unwrap(), None);
        assert_eq!(make_private(&dir.join("missing")).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
