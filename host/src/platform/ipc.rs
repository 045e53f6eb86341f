//! A local socket between duet processes of one user, in the config directory.
//!
//! Unix: a Unix stream socket at the path (private: the directory is 0700).
//!
//! Windows: a TCP listener on 127.0.0.1, since `WSAPoll` waits on sockets only and Rust's
//! std has no Unix sockets there. The file at the path holds `PORT TOKEN`: the token is
//! random, and a connection must send it as its first line before anything else is read,
//! so only someone who can read the (private) config directory can talk to duet.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wait::{AsWaitHandle, WaitHandle};

#[cfg(unix)]
pub use std::os::unix::net::UnixStream as LocalStream;

#[cfg(windows)]
pub use std::net::TcpStream as LocalStream;

#[cfg(unix)]
use std::os::unix::net::UnixListener as Listener;

#[cfg(windows)]
use std::net::TcpListener as Listener;

/// A listening local socket, removed when dropped.
pub struct LocalListener {
    listener: Listener,
    path: PathBuf,
    /// What a connection must send first (Windows).
    #[cfg(windows)]
    token: String,
}

impl LocalListener {
    /// Listen at `path`, unless another live process does; a socket file left by a process
    /// that died is replaced. `Ok(None)`: someone else listens there.
    #[cfg(unix)]
    pub fn bind(path: &Path) -> io::Result<Option<LocalListener>> {
        let listener = match Listener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if LocalStream::connect(path).is_ok() {
                    return Ok(None);
                }
                // Nobody answers: a stale file from a process that was killed.
                std::fs::remove_file(path)?;
                Listener::bind(path)?
            }
            Err(e) => return Err(e),
        };
        listener.set_nonblocking(true)?;
        Ok(Some(LocalListener {
            listener,
            path: path.to_owned(),
        }))
    }

    /// Listen on a loopback port named in the file at `path`, unless a live process
    /// already answers on the port the file names. `Ok(None)`: someone else listens.
    #[cfg(windows)]
    pub fn bind(path: &Path) -> io::Result<Option<LocalListener>> {
        if let Some((port, _)) = windows::read_address(path) {
            let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
            if LocalStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return Ok(None);
            }
        }
        let listener = Listener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let token = windows::new_token()?;
        windows::write_address(path, listener.local_addr()?.port(), &token)?;
        Ok(Some(LocalListener {
            listener,
            path: path.to_owned(),
            token,
        }))
    }

    /// A waiting connection, if any (never blocks). Accepted streams block, with `timeout`
    /// on reads and writes.
    pub fn accept(&self, timeout: Duration) -> io::Result<Option<LocalStream>> {
        match self.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                #[cfg(windows)]
                if !windows::token_matches(&stream, &self.token) {
                    return Ok(None);
                }
                Ok(Some(stream))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Readable when a connection waits.
    pub fn wait_handle(&self) -> WaitHandle<'_> {
        self.listener.wait_handle()
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connect to a listening local socket; `Ok(None)` when nobody listens at `path`.
pub fn connect(path: &Path, timeout: Duration) -> io::Result<Option<LocalStream>> {
    match open(path, timeout) {
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

#[cfg(unix)]
fn open(path: &Path, _timeout: Duration) -> io::Result<LocalStream> {
    LocalStream::connect(path)
}

#[cfg(windows)]
fn open(path: &Path, timeout: Duration) -> io::Result<LocalStream> {
    use std::io::Write;
    let (port, token) = windows::read_address(path)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no local socket"))?;
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    let mut stream = LocalStream::connect_timeout(&addr, timeout)?;
    stream.write_all(format!("{token}\n").as_bytes())?;
    Ok(stream)
}

#[cfg(windows)]
mod windows {
    use std::io::{self, Read};
    use std::net::TcpStream;
    use std::path::Path;

    /// The longest first line taken as a token.
    const MAX_TOKEN_LINE: usize = 80;

    /// 128 random bits, in hex.
    pub fn new_token() -> io::Result<String> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The port and token in the file at `path`, if it holds them.
    pub fn read_address(path: &Path) -> Option<(u16, String)> {
        let text = std::fs::read_to_string(path).ok()?;
        let (port, token) = text.trim().split_once(' ')?;
        Some((port.parse().ok()?, token.to_owned()))
    }

    /// Write `PORT TOKEN` to `path`, whole: readers never see half of it.
    pub fn write_address(path: &Path, port: u16, token: &str) -> io::Result<()> {
        let temp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&temp, format!("{port} {token}\n"))?;
        std::fs::rename(&temp, path)
    }

    /// Whether the connection's first line is `token` (read byte by byte, so nothing after
    /// it is consumed).
    pub fn token_matches(mut stream: &TcpStream, token: &str) -> bool {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < MAX_TOKEN_LINE {
            match stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => return line == token.as_bytes(),
                Ok(1) => line.push(byte[0]),
                _ => return false,
            }
        }
        false
    }
}
