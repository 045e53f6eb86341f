//! A local socket between duet processes of one user: a Unix stream socket in the config
//! directory (private: the directory is 0700). A Windows port gives this module a twin
//! (a named pipe).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A listening local socket, removed when dropped.
pub struct LocalListener {
    listener: UnixListener,
    path: PathBuf,
}

impl LocalListener {
    /// Listen at `path`, unless another live process does; a socket file left by a process
    /// that died is replaced. `Ok(None)`: someone else listens there.
    pub fn bind(path: &Path) -> io::Result<Option<LocalListener>> {
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if UnixStream::connect(path).is_ok() {
                    return Ok(None);
                }
                // Nobody answers: a stale file from a process that was killed.
                std::fs::remove_file(path)?;
                UnixListener::bind(path)?
            }
            Err(e) => return Err(e),
        };
        listener.set_nonblocking(true)?;
        Ok(Some(LocalListener {
            listener,
            path: path.to_owned(),
        }))
    }

    /// A waiting connection, if any (never blocks). Accepted streams block, with `timeout`
    /// on reads and writes.
    pub fn accept(&self, timeout: Duration) -> io::Result<Option<UnixStream>> {
        match self.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                Ok(Some(stream))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Readable when a connection waits.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connect to a listening local socket; `Ok(None)` when nobody listens at `path`.
pub fn connect(path: &Path, timeout: Duration) -> io::Result<Option<UnixStream>> {
    match UnixStream::connect(path) {
        Ok(stream) => {
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Ok(Some(stream))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
