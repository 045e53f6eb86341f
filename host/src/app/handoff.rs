//! Hand-off between duet processes of one identity.
//!
//! Two sessions with one peer cannot both be that peer's session: the peer's duet keeps
//! one session per key, so a one-shot `duet send` started next to an open `duet chat` with
//! the same peer would take the peer's session over (its temporary port becomes "the
//! peer"), and the chat would be cut off. Instead, a running chat or listen offers a local
//! socket in the config directory ([`SOCKET_FILE`]); `duet send` hands its text (and
//! `send --file` its file) there when the running duet talks to the same peer, and reports
//! what that duet reports. When no duet runs, or it talks to someone else, `send` opens its
//! own session as before.
//!
//! The exchange, over a private local socket ([`crate::platform::ipc`]: a Unix stream socket
//! in the 0700 config directory; on Windows loopback TCP that first takes a token):
//!
//! ```text
//! send → running duet   duet-handoff 1\n  PEER-KEY (base64)\n  LENGTH\n  TEXT (LENGTH bytes)
//! running duet → send   queued N\n  then, per message, delivered\n or failed REASON\n
//!                       or, instead of all that: refused REASON\n
//! send → running duet   duet-handoff 1\n  PEER-KEY\n  file\n  LENGTH\n  PATH (LENGTH bytes)
//! running duet → send   queued 1\n  progress BYTES\n ...  then delivered\n (the peer saved
//!                       it), failed REASON\n or notsaved REASON\n (the peer refused or
//!                       could not save it); or, instead: refused REASON\n
//! status → running duet duet-handoff 1\n  status\n
//! running duet → status status\tPEER-KEY or -\tPATH or -\tADDRESS or -\tROUND TRIP MS or -\n
//! ```
//!
//! `duet status` asks the same socket how the running duet reaches its peer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::keys::PeerKey;
use crate::platform::ipc::{self, LocalStream};

/// The socket's file name in the config directory.
pub const SOCKET_FILE: &str = "duet.sock";
/// The first line of a request.
const MAGIC: &str = "duet-handoff 1";
/// The longest text handed over (what one `duet send` may carry).
pub const MAX_TEXT: usize = 1 << 20;
/// The longest path of a file handed over.
const MAX_PATH: usize = 4096;
/// How long either side waits for the other's next line while it is talking.
pub const LINE_WAIT: Duration = Duration::from_millis(500);

/// A hand-off request: the text of a `duet send` for a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The peer it is for.
    pub peer: PeerKey,
    /// The text.
    pub text: String,
}

/// A hand-off request: the file of a `duet send --file` for a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRequest {
    /// The peer it is for.
    pub peer: PeerKey,
    /// The file, as an absolute path.
    pub path: PathBuf,
}

/// What a connection asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Asked {
    /// Send this text.
    Send(Request),
    /// Send this file.
    SendFile(FileRequest),
    /// Say how the peer is reached.
    Status,
}

/// How the running duet reaches its peer, for `duet status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The peer, once known.
    pub peer: Option<PeerKey>,
    /// The path's name (LAN, direct through NAT, relay), while the peer answers.
    pub path: Option<String>,
    /// The peer's address on it.
    pub addr: Option<String>,
    /// The smoothed round trip in milliseconds, once measured.
    pub rtt_ms: Option<u64>,
}

impl Status {
    /// The reply line.
    pub fn line(&self) -> String {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        format!(
            "status\t{}\t{}\t{}\t{}\n",
            or_dash(self.peer.map(|k| k.to_string())),
            or_dash(self.path.clone()),
            or_dash(self.addr.clone()),
            or_dash(self.rtt_ms.map(|r| r.to_string()))
        )
    }

    /// Parse a reply line (without its newline).
    pub fn parse(line: &str) -> Option<Status> {
        let mut fields = line.split('\t');
        if fields.next()? != "status" {
            return None;
        }
        let mut next = || fields.next().filter(|f| *f != "-").map(str::to_owned);
        let peer = next().and_then(|k| k.parse().ok());
        let (path, addr) = (next(), next());
        let rtt_ms = next().and_then(|r| r.parse().ok());
        Some(Status {
            peer,
            path,
            addr,
            rtt_ms,
        })
    }
}

/// What the running duet answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// It took the text as this many messages.
    Queued(usize),
    /// One message was delivered.
    Delivered,
    /// One message failed.
    Failed(String),
    /// It did not take the text (it talks to someone else).
    Refused(String),
    /// A file handed over is this far: bytes the peer has.
    Progress(u64),
    /// The peer refused a file handed over, or could not save it.
    NotSaved(String),
}

impl Reply {
    /// The reply as its line.
    pub fn line(&self) -> String {
        match self {
            Reply::Queued(n) => format!("queued {n}\n"),
            Reply::Delivered => "delivered\n".to_owned(),
            Reply::Failed(why) => format!("failed {}\n", one_line(why)),
            Reply::Refused(why) => format!("refused {}\n", one_line(why)),
            Reply::Progress(done) => format!("progress {done}\n"),
            Reply::NotSaved(why) => format!("notsaved {}\n", one_line(why)),
        }
    }

    /// Parse one line (without its newline).
    pub fn parse(line: &str) -> Option<Reply> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "queued" => rest.parse().ok().map(Reply::Queued),
            "delivered" => Some(Reply::Delivered),
            "failed" => Some(Reply::Failed(rest.to_owned())),
            "refused" => Some(Reply::Refused(rest.to_owned())),
            "progress" => rest.parse().ok().map(Reply::Progress),
            "notsaved" => Some(Reply::NotSaved(rest.to_owned())),
            _ => None,
        }
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Read what a connection asks (bounded in size and by the stream's timeout).
pub fn read_request(stream: &mut impl Read) -> io::Result<Asked> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut reader = BufReader::new(stream.take(MAX_TEXT as u64 + 256));
    let mut line = String::new();
    let mut next_line = |reader: &mut BufReader<_>| -> io::Result<String> {
        line.clear();
        reader.read_line(&mut line)?;
        Ok(line.trim_end_matches('\n').to_owned())
    };
    if next_line(&mut reader)? != MAGIC {
        return Err(bad("not a duet hand-off"));
    }
    let second = next_line(&mut reader)?;
    if second == "status" {
        return Ok(Asked::Status);
    }
    let peer: PeerKey = second.parse().map_err(|_| bad("bad peer key"))?;
    let third = next_line(&mut reader)?;
    if third == "file" {
        let len: usize = next_line(&mut reader)?
            .parse()
            .map_err(|_| bad("bad length"))?;
        if len > MAX_PATH {
            return Err(bad("path too long"));
        }
        let mut bytes = vec![0u8; len];
        reader.read_exact(&mut bytes)?;
        let path = PathBuf::from(String::from_utf8(bytes).map_err(|_| bad("path is not UTF-8"))?);
        if !path.is_absolute() {
            return Err(bad("path is not absolute"));
        }
        return Ok(Asked::SendFile(FileRequest { peer, path }));
    }
    let len: usize = third.parse().map_err(|_| bad("bad length"))?;
    if len > MAX_TEXT {
        return Err(bad("text too long"));
    }
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes)?;
    let text = String::from_utf8(bytes).map_err(|_| bad("text is not UTF-8"))?;
    Ok(Asked::Send(Request { peer, text }))
}

/// Ask the duet running with the config directory `dir` how it reaches its peer;
/// `Ok(None)`: none runs.
pub fn status(dir: &Path) -> io::Result<Option<Status>> {
    let Some(mut stream) = ipc::connect(&dir.join(SOCKET_FILE), LINE_WAIT * 4)? else {
        return Ok(None);
    };
    write!(stream, "{MAGIC}\nstatus\n")?;
    stream.flush()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Status::parse(line.trim_end_matches('\n'))
        .map(Some)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status reply"))
}

/// Write a request.
pub fn write_request(stream: &mut impl Write, request: &Request) -> io::Result<()> {
    write!(
        stream,
        "{MAGIC}\n{}\n{}\n{}",
        request.peer,
        request.text.len(),
        request.text
    )?;
    stream.flush()
}

/// Write a file request.
pub fn write_file_request(stream: &mut impl Write, request: &FileRequest) -> io::Result<()> {
    let path = request
        .path
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"))?;
    write!(
        stream,
        "{MAGIC}\n{}\nfile\n{}\n{path}",
        request.peer,
        path.len()
    )?;
    stream.flush()
}

/// A running duet that took a `send`'s text: read its replies with [`Handed::next`].
pub struct Handed {
    reader: BufReader<LocalStream>,
    /// How many messages the text became there.
    pub messages: usize,
}

impl Handed {
    /// The next reply, waiting at most `wait`; `Ok(None)` when none came in time.
    pub fn next(&mut self, wait: Duration) -> io::Result<Option<Reply>> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the running duet stopped",
            )),
            Ok(_) => Reply::parse(line.trim_end_matches('\n'))
                .map(Some)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad reply")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Offer `text` for `peer` to a duet running with the config directory `dir`. `Ok(None)`:
/// none runs, or it talks to someone else; send on your own.
pub fn offer(dir: &Path, peer: PeerKey, text: &str) -> io::Result<Option<Handed>> {
    let request = Request {
        peer,
        text: text.to_owned(),
    };
    hand(dir, |stream| write_request(stream, &request))
}

/// Offer the file at `path` (absolute) for `peer` to a duet running with the config
/// directory `dir`, as [`offer`] does text.
pub fn offer_file(dir: &Path, peer: PeerKey, path: &Path) -> io::Result<Option<Handed>> {
    let request = FileRequest {
        peer,
        path: path.to_owned(),
    };
    hand(dir, |stream| write_file_request(stream, &request))
}

fn hand(
    dir: &Path,
    write: impl FnOnce(&mut LocalStream) -> io::Result<()>,
) -> io::Result<Option<Handed>> {
    let Some(mut stream) = ipc::connect(&dir.join(SOCKET_FILE), LINE_WAIT)? else {
        return Ok(None);
    };
    if write(&mut stream).is_err() {
        // It went away meanwhile: as if none ran.
        return Ok(None);
    }
    let mut handed = Handed {
        reader: BufReader::new(stream),
        messages: 0,
    };
    match handed.next(LINE_WAIT * 4)? {
        Some(Reply::Queued(n)) => {
            handed.messages = n;
            Ok(Some(handed))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_request_survives_the_socket_whatever_its_text() {
        let request = Request {
            peer: PeerKey([7; 32]),
            text: "two\nlines 你好\n".into(),
        };
        let mut bytes = Vec::new();
        write_request(&mut bytes, &request).unwrap();
        assert_eq!(
            read_request(&mut &bytes[..]).unwrap(),
            Asked::Send(request.clone())
        );
        let ask = format!("{MAGIC}\nstatus\n");
        assert_eq!(read_request(&mut ask.as_bytes()).unwrap(), Asked::Status);
        // Anything else is refused, never taken in part.
        assert!(read_request(&mut &b"hello\n"[..]).is_err());
        let long = format!("{MAGIC}\n{}\n{}\n", request.peer, MAX_TEXT + 1);
        assert!(read_request(&mut long.as_bytes()).is_err());
        // A file: its absolute path, whatever it holds.
        #[cfg(unix)]
        {
            let file = FileRequest {
                peer: PeerKey([7; 32]),
                path: PathBuf::from("/home/a b/照片\n.jpg"),
            };
            let mut bytes = Vec::new();
            write_file_request(&mut bytes, &file).unwrap();
            assert_eq!(
                read_request(&mut &bytes[..]).unwrap(),
                Asked::SendFile(file.clone())
            );
            let relative = format!("{MAGIC}\n{}\nfile\n5\na.jpg", file.peer);
            assert!(read_request(&mut relative.as_bytes()).is_err());
        }
    }

    #[test]
    fn a_status_survives_the_socket() {
        let full = Status {
            peer: Some(PeerKey([3; 32])),
            path: Some("direct through NAT".into()),
            addr: Some("203.0.113.12:7789".into()),
            rtt_ms: Some(12),
        };
        for status in [full, Status::default()] {
            let line = status.line();
            assert_eq!(Status::parse(line.trim_end()), Some(status));
        }
    }

    #[test]
    fn replies_are_one_line_each() {
        for reply in [
            Reply::Queued(3),
            Reply::Delivered,
            Reply::Failed("peer did not\nacknowledge".into()),
            Reply::Refused("talks to carol".into()),
            Reply::Progress(12345),
            Reply::NotSaved("too large\nfor it".into()),
        ] {
            let line = reply.line();
            assert_eq!(line.matches('\n').count(), 1);
            let parsed = Reply::parse(line.trim_end()).unwrap();
            assert_eq!(parsed.line(), line);
        }
        assert_eq!(Reply::parse("nonsense"), None);
    }
}
