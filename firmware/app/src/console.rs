//! The serial console: a line editor, a few commands (`/id`, `/pair`, `/peer`, `/status`,
//! `/reset`, `/help`) and one line per chat event, over any `embedded-io` byte stream (a
//! CMSDK UART under QEMU, the ST-LINK's virtual COM port on a Nucleo, a USB CDC port...).
//!
//! It never blocks the network loop on input: [`Console::poll_input`] takes only the bytes
//! `read_ready` says are there. Output is plain text, one event per line, ending in CRLF
//! because the terminal on the other end is in raw mode (QEMU's `-serial stdio`), and it is
//! always valid UTF-8: typed characters are echoed whole, never a torn multi-byte sequence.
//!
//! What it prints (the tests read these lines):
//! - `msg ADDR: TEXT` — a message from the peer, exactly once and in order;
//! - `queued #ID` — a typed line became message `#ID`;
//! - `delivered #ID: TEXT` / `failed #ID: TEXT (REASON)` — what became of it (TEXT cut to
//!   a preview);
//! - `peer up ADDR` / `peer down`;
//! - `duet id KEY` — the board's public key, at boot and for `/id`, to pair a host with;
//! - `paired with KEY at ADDR`, `peer set to ADDR` — after `/pair` and `/peer`;
//! - `status: ...` lines for `/status`; `error: ...` for what it refused;
//! - `resetting the board` — after `/reset`, just before the board resets;
//! - `lost across the reset: N message(s) not yet delivered (the first: "TEXT")` — at boot,
//!   before the ready line, when a warm reset dropped undelivered messages.
//!
//! Control characters in a peer's text are printed escaped (`\u{1b}`), so a message cannot
//! move the cursor or change the terminal.

use core::net::SocketAddr;

use duet_core::{Event, Instant, MessageId};
use embedded_io::{Read, ReadReady, Write};
use heapless::{Deque, String, Vec};

use crate::NicStats;
use crate::app::Secure;
use crate::base64;
use crate::print::{self, Print};

/// The longest typed line: the tutorial's 1024 bytes, a part and a bit of duet's.
pub const LINE_MAX: usize = 1024;
/// Bytes of a sent message kept to show next to its `delivered`/`failed` line (and in the
/// record of the outbox that outlives a reset).
pub const PREVIEW_MAX: usize = 48;
/// Sent messages whose previews are kept; an older one is reported without its preview.
const PREVIEWS: usize = 16;
/// Bytes taken from the UART per [`Console::poll_input`] at most, so a paste cannot hold
/// up the network loop for long.
const INPUT_BUDGET: usize = 256;

/// What the board knows about itself, for `/status`: gathered by the caller only when the
/// command is typed.
pub struct BoardStatus {
    /// The board's IPv4 address.
    pub address: [u8; 4],
    /// Its subnet's prefix length.
    pub prefix_len: u8,
    /// The default route.
    pub gateway: [u8; 4],
    /// duet's UDP port.
    pub port: u16,
    /// The Ethernet address.
    pub mac: [u8; 6],
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    /// The Ethernet chip's counters.
    pub nic: NicStats,
    /// Datagrams the driver dropped because smoltcp's send buffer was full.
    pub send_would_block: u32,
    /// Errors the driver loop got from the network stack.
    pub network_errors: u32,
    /// Typed bytes lost because the loop read the UART too late.
    pub uart_overruns: u32,
    /// Deepest stack use since reset, in bytes.
    pub stack_used: usize,
    /// RAM taken by statics (`.data` and `.bss`), in bytes.
    pub static_ram: usize,
}

/// What a typed command asks of the board, beyond the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `/reset`: reset the board (the console already said so).
    Reset,
    /// `/pair` or `/peer` set the session's peer: keep it, so it outlives a reboot.
    PeerChanged,
}

/// Where the line editor is in an escape sequence (arrow keys and such are ignored).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// After ESC `[`: until a final byte in 0x40..=0x7e.
    Csi,
}

/// The console over the byte stream `T`, its typed line kept in `'a` storage (a static on
/// the board, so a long line never sits on the stack).
pub struct Console<'a, T> {
    screen: Screen<T>,
    line: &'a mut Vec<u8, LINE_MAX>,
    /// The line outgrew [`LINE_MAX`]; it is refused when it ends.
    overflow: bool,
    /// The last line ended with CR: a following LF is the same line end.
    after_cr: bool,
    escape: Escape,
}

/// The output side: the byte stream and what it needs to remember to print events.
struct Screen<T> {
    io: T,
    /// The board's public key.
    id: [u8; 32],
    /// Previews of sent messages not yet reported delivered or failed.
    sent: Deque<(MessageId, String<PREVIEW_MAX>), PREVIEWS>,
}

impl<'a, T: Read + ReadReady + Write> Console<'a, T> {
    /// A console on `io`, editing lines in `line`.
    pub fn new(io: T, line: &'a mut Vec<u8, LINE_MAX>) -> Self {
        line.clear();
        Console {
            screen: Screen {
                io,
                id: [0; 32],
                sent: Deque::new(),
            },
            line,
            overflow: false,
            after_cr: false,
            escape: Escape::None,
        }
    }

    /// The byte stream, e.g. to read a UART's counters.
    pub fn io(&self) -> &T {
        &self.screen.io
    }

    /// Wait until what was printed has left for the terminal (before a reset, say).
    pub fn flush(&mut self) {
        let _ = self.screen.io.flush();
    }

    /// Print one line (a boot message, say) that `print` writes, keeping any half-typed
    /// input below it.
    pub fn say(&mut self, print: impl FnOnce(&mut T)) {
        self.screen.begin_event(self.line);
        print(&mut self.screen.io);
        self.screen.end_event(self.line);
    }

    /// Remember and print the board's public key, as `duet id` prints a host's: what a
    /// host pairs with (`/id` and `/status` show it again).
    pub fn show_id(&mut self, public_key: [u8; 32]) {
        self.screen.id = public_key;
        self.screen.begin_event(self.line);
        self.screen.id();
        self.screen.end_event(self.line);
    }

    /// Report what a warm reset dropped: `count` undelivered messages, the oldest `first`.
    pub fn show_lost(&mut self, count: usize, first: &str) {
        self.screen.begin_event(self.line);
        let io = &mut self.screen.io;
        io.text("lost across the reset: ")
            .decimal(count as u64)
            .text(" message(s) not yet delivered");
        if !first.is_empty() {
            write_escaped(io.text(" (the first: \""), first).text("\")");
        }
        self.screen.end_event(self.line);
    }

    /// The oldest sent message not yet reported delivered or failed: its id and preview.
    pub fn oldest_undelivered(&self) -> Option<(MessageId, &str)> {
        self.screen
            .sent
            .front()
            .map(|(id, preview)| (*id, preview.as_str()))
    }

    /// Print every event the session has, one line each.
    pub fn show_events(&mut self, session: &mut Secure) {
        // poll_event does not change the peer, so one reading serves the whole batch.
        let peer = session.peer_addr();
        while let Some(event) = session.poll_event() {
            if let Event::Data(_) = event {
                // A binary message (a file, from a host duet): the board keeps no files.
                // Taking it is what acknowledges it, so the sender is not held up.
                continue;
            }
            self.screen.begin_event(self.line);
            self.screen.event(event, peer);
            self.screen.end_event(self.line);
        }
    }

    /// Take the typed bytes that are ready (never waiting for more) and act on each
    /// finished line: a command, or a message for `session`. A command the console cannot
    /// carry out itself (`/reset`, keeping a new peer) is returned, and the bytes after it are
    /// left unread.
    pub fn poll_input(
        &mut self,
        session: &mut Secure,
        now: Instant,
        mut status: impl FnMut() -> BoardStatus,
    ) -> Option<Request> {
        for _ in 0..INPUT_BUDGET {
            if !matches!(self.screen.io.read_ready(), Ok(true)) {
                return None;
            }
            let mut byte = [0u8; 1];
            if !matches!(self.screen.io.read(&mut byte), Ok(1)) {
                return None;
            }
            if self.edit(byte[0]) {
                let request = if self.overflow {
                    self.screen
                        .io
                        .text("error: line longer than ")
                        .decimal(LINE_MAX as u64)
                        .text(" bytes, not sent\r\n");
                    None
                } else {
                    self.screen.run_line(self.line, session, now, &mut status)
                };
                self.line.clear();
                self.overflow = false;
                if request.is_some() {
                    return request;
                }
            }
        }
        None
    }

    /// Apply one typed byte to the line; true when the line is finished.
    fn edit(&mut self, byte: u8) -> bool {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::Started => {
                self.escape = if byte == b'[' {
                    Escape::Csi
                } else {
                    Escape::None
                };
                return false;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return false;
            }
            Escape::None => {}
        }
        let io = &mut self.screen.io;
        match byte {
            b'\n' if after_cr => false,
            b'\r' | b'\n' => {
                self.after_cr = byte == b'\r';
                let _ = io.write_all(b"\r\n");
                true
            }
            // Backspace and DEL: drop the last character, whole (UTF-8 continuation bytes
            // are 0b10xx_xxxx).
            0x08 | 0x7f => {
                let Some(char) = last_char(self.line).and_then(|c| core::str::from_utf8(c).ok())
                else {
                    // Nothing, or a torn sequence that was never echoed: just drop bytes.
                    while self.line.pop().is_some_and(|b| b & 0xc0 == 0x80) {}
                    return false;
                };
                let wide = char.chars().next().is_some_and(is_wide);
                let bytes = char.len();
                self.line.truncate(self.line.len() - bytes);
                let _ = io.write_all(if wide {
                    b"\x08\x08  \x08\x08"
                } else {
                    b"\x08 \x08"
                });
                false
            }
            // Ctrl-U: forget the line.
            0x15 => {
                self.line.clear();
                self.overflow = false;
                let _ = io.write_all(b"\r\x1b[K");
                false
            }
            0x1b => {
                self.escape = Escape::Started;
                false
            }
            byte if byte < 0x20 => false,
            byte => {
                if self.line.push(byte).is_err() {
                    self.overflow = true;
                } else if let Some(char) = last_char(self.line) {
                    // Echo whole characters only: the console never shows a torn UTF-8
                    // sequence, even for a moment.
                    let _ = io.write_all(char);
                }
                false
            }
        }
    }
}

impl<T: Write> Screen<T> {
    fn event(&mut self, event: Event<'_>, peer: Option<SocketAddr>) {
        match event {
            Event::Message(text) => {
                self.io.text("msg");
                if let Some(peer) = peer {
                    self.io.text(" ").socket_addr(peer);
                }
                write_escaped(self.io.text(": "), text);
            }
            Event::Delivered(id) => {
                let preview = self.take_preview(id);
                write_escaped(
                    message_id(self.io.text("delivered "), id).text(": "),
                    &preview,
                );
            }
            Event::Failed(id, reason) => {
                let preview = self.take_preview(id);
                write_escaped(message_id(self.io.text("failed "), id).text(": "), &preview)
                    .text(" (")
                    .text(reason.as_str())
                    .text(")");
            }
            Event::PeerUp(addr) => {
                self.io.text("peer up ").socket_addr(addr);
            }
            Event::PeerDown => {
                self.io.text("peer down");
            }
            // Skipped by `show_events`.
            Event::Data(_) => {}
        }
    }

    fn run_line(
        &mut self,
        line: &[u8],
        session: &mut Secure,
        now: Instant,
        status: &mut impl FnMut() -> BoardStatus,
    ) -> Option<Request> {
        let Ok(text) = core::str::from_utf8(line) else {
            let _ = self
                .io
                .write_all(b"error: the line is not valid UTF-8, not sent\r\n");
            return None;
        };
        // ASCII whitespace only (what a terminal sends): `str::trim_end` would link Unicode's
        // whitespace table and searcher, about 0.7 KB of flash, for a full-width space at
        // the end of a line.
        let text = text.trim_ascii_end();
        if text.is_empty() {
            return None;
        }
        let (command, argument) = split_at_byte(text, b' ').unwrap_or((text, ""));
        match command {
            "/help" => self.help(),
            "/reset" if argument.is_empty() => {
                let pending = session.session().pending();
                self.io.text("resetting the board");
                if pending > 0 {
                    self.io
                        .text(": ")
                        .decimal(pending as u64)
                        .text(" message(s) not yet delivered will be lost");
                }
                self.io.text("\r\n");
                return Some(Request::Reset);
            }
            "/reset" => {
                let _ = self.io.write_all(b"error: /reset takes no argument\r\n");
            }
            "/status" => self.status(session, &status()),
            "/id" => {
                self.id();
                let _ = self.io.write_all(b"\r\n");
            }
            "/pair" => {
                let mut words = argument.split_ascii_whitespace();
                let key = words.next().and_then(base64::decode_key);
                let addr = words.next().and_then(parse_ipv4_socket);
                match (key, addr, words.next()) {
                    (Some(key), Some(addr), None) => {
                        session.set_peer(now, key, addr);
                        self.io
                            .text("paired with ")
                            .bytes(&base64::encode_key(&key))
                            .text(" at ")
                            .socket_addr(addr)
                            .text("\r\n");
                        return Some(Request::PeerChanged);
                    }
                    _ => {
                        let _ = self.io.write_all(
                            b"error: /pair wants KEY IP:PORT: the peer's public key as \
                              `duet id` prints it, and where it is (10.0.2.2:PORT is the \
                              host under QEMU)\r\n",
                        );
                    }
                }
            }
            "/peer" => match (parse_ipv4_socket(argument.trim_ascii()), session.peer_key()) {
                (Some(peer), Some(key)) => {
                    session.set_peer(now, key, peer);
                    self.io.text("peer set to ").socket_addr(peer).text("\r\n");
                    return Some(Request::PeerChanged);
                }
                (Some(_), None) => {
                    self.io
                        .text("error: no peer key yet: /pair KEY IP:PORT first\r\n");
                }
                (None, _) => {
                    self.io
                        .text("error: /peer wants IPv4:PORT, e.g. /peer 10.0.2.2:7788\r\n");
                }
            },
            _ if command.starts_with("//") => self.send(session, now, &text[1..]),
            _ if command.starts_with('/') => {
                self.io
                    .text("error: unknown command ")
                    .text(command)
                    .text("; /help lists them\r\n");
            }
            _ => self.send(session, now, text),
        }
        None
    }

    fn send(&mut self, session: &mut Secure, now: Instant, text: &str) {
        if session.peer_key().is_none() {
            let _ = self
                .io
                .write_all(b"error: not sent: no peer yet: /pair KEY IP:PORT first\r\n");
            return;
        }
        match session.send_text(now, text) {
            Ok(id) => {
                if self.sent.is_full() {
                    self.sent.pop_front();
                }
                let _ = self.sent.push_back((id, preview(text)));
                message_id(self.io.text("queued "), id).text("\r\n");
            }
            Err(error) => {
                self.io
                    .text("error: not sent: ")
                    .text(error.as_str())
                    .text("\r\n");
            }
        }
    }

    fn help(&mut self) {
        let _ = self.io.write_all(
            b"commands:\r\n\
              \x20 /status            address, peer, counters\r\n\
              \x20 /id                the board's public key, to pair a host with\r\n\
              \x20 /pair KEY IP:PORT  talk to the peer with public KEY at IP:PORT\r\n\
              \x20 /peer IP:PORT      the same peer, at another address\r\n\
              \x20 /reset             reset the board (undelivered messages are lost)\r\n\
              \x20 /help              this list\r\n\
              any other line is sent as a message (start it with // to send a leading /)\r\n",
        );
    }

    fn id(&mut self) {
        let _ = self.io.write_all(b"duet id ");
        let _ = self.io.write_all(&base64::encode_key(&self.id));
    }

    fn status(&mut self, secure: &Secure, board: &BoardStatus) {
        let session = secure.session();
        let io = &mut self.io;
        io.text("status: board ")
            .ipv4(board.address)
            .text("/")
            .decimal(board.prefix_len)
            .text(" port ")
            .decimal(board.port)
            .text(", gateway ")
            .ipv4(board.gateway)
            .text(", mac ");
        for (i, byte) in board.mac.into_iter().enumerate() {
            if i > 0 {
                io.text(":");
            }
            io.hex(u32::from(byte), 2);
        }
        let (seconds, millis) = print::div_rem(board.uptime_ms, 1000);
        io.text(", up ")
            .decimal(seconds)
            .text(".")
            .decimal_padded(u64::from(millis), 3)
            .text(" s\r\n");
        match session.peer() {
            Some(peer) => {
                io.text("status: peer ")
                    .socket_addr(peer)
                    .text(if session.is_peer_up() { " up" } else { " down" })
                    .text(", epoch 0x")
                    .hex(session.epoch(), 8)
                    .text(", rto ");
                duration(io, session.rto())
                    .text(", pending ")
                    .decimal(session.pending() as u64)
                    .text("\r\n");
            }
            None => {
                io.text("status: no peer yet\r\n");
            }
        }
        io.text("status: ");
        self.id();
        let io = &mut self.io;
        match secure.peer_key() {
            Some(key) => {
                io.text(", peer key ")
                    .bytes(&base64::encode_key(&key))
                    .text(if secure.is_established() {
                        ", keys established\r\n"
                    } else {
                        ", keys not yet\r\n"
                    });
            }
            None => {
                io.text(", no peer key: /pair KEY IP:PORT\r\n");
            }
        }
        let x = secure.stats();
        io.text("status: sealed: handshakes ")
            .decimal(x.handshakes)
            .text(", unauthenticated ")
            .decimal(x.unauthenticated)
            .text(", replayed ")
            .decimal(x.replayed)
            .text(", unpaired ")
            .decimal(x.unpaired)
            .text(", busy ")
            .decimal(x.busy)
            .text("\r\n");
        let s = session.stats();
        io.text("status: datagrams in ")
            .decimal(s.datagrams_in)
            .text(" out ")
            .decimal(s.datagrams_out)
            .text(", messages in ")
            .decimal(s.messages_in)
            .text(", malformed ")
            .decimal(s.malformed)
            .text(", oversized ")
            .decimal(s.oversized)
            .text(", foreign ")
            .decimal(s.foreign)
            .text(", duplicates ")
            .decimal(s.duplicates)
            .text(", out of window ")
            .decimal(s.out_of_window)
            .text(", retransmits ")
            .decimal(s.retransmits)
            .text("\r\n");
        let n = board.nic;
        io.text("status: nic frames in ")
            .decimal(n.rx_frames)
            .text(" out ")
            .decimal(n.tx_frames)
            .text(", rx errors ")
            .decimal(n.rx_errors)
            .text(", rx dropped ")
            .decimal(n.rx_dropped)
            .text(", tx errors ")
            .decimal(n.tx_errors)
            .text(", tx busy ")
            .decimal(n.tx_busy)
            .text("; send would block ")
            .decimal(board.send_would_block)
            .text(", network errors ")
            .decimal(board.network_errors)
            .text(", uart overruns ")
            .decimal(board.uart_overruns)
            .text("\r\nstatus: ram ")
            .decimal(board.static_ram as u64)
            .text(" bytes static, ")
            .decimal(board.stack_used as u64)
            .text(" bytes stack at most\r\n");
    }

    fn take_preview(&mut self, id: MessageId) -> String<PREVIEW_MAX> {
        // Ids are reported in the order they were queued, so this is nearly always the
        // front; a full turn of the queue keeps it right if not.
        let mut found = String::new();
        for _ in 0..self.sent.len() {
            let Some((sent_id, text)) = self.sent.pop_front() else {
                break;
            };
            if sent_id == id {
                found = text;
            } else {
                let _ = self.sent.push_back((sent_id, text));
            }
        }
        found
    }

    /// Make room for an event line: a half-typed line is wiped and drawn again after it.
    fn begin_event(&mut self, line: &[u8]) {
        if !line.is_empty() {
            let _ = self.io.write_all(b"\r\x1b[K");
        }
    }

    fn end_event(&mut self, line: &[u8]) {
        let _ = self.io.write_all(b"\r\n");
        // Redraw the half-typed line up to its last whole character.
        let whole = match core::str::from_utf8(line) {
            Ok(text) => text.len(),
            Err(e) => e.valid_up_to(),
        };
        let _ = self.io.write_all(&line[..whole]);
    }
}

/// Whether a terminal draws `c` two columns wide (CJK, Hangul, fullwidth forms, most
/// emoji): what erasing it with backspaces must cover.
fn is_wide(c: char) -> bool {
    matches!(
        u32::from(c),
        0x1100..=0x115f
            | 0x2e80..=0xa4cf
            | 0xac00..=0xd7a3
            | 0xf900..=0xfaff
            | 0xfe30..=0xfe4f
            | 0xff00..=0xff60
            | 0xffe0..=0xffe6
            | 0x1f300..=0x1f64f
            | 0x1f900..=0x1f9ff
            | 0x20000..=0x3fffd
    )
}

/// The bytes of `line`'s last character if the last byte completed a valid one.
fn last_char(line: &[u8]) -> Option<&[u8]> {
    // A UTF-8 character is at most 4 bytes: look back that far for its first byte.
    let start = line.len().saturating_sub(4);
    (start..line.len()).rev().find_map(|i| {
        let tail = &line[i..];
        let is_first = tail.first().is_some_and(|b| b & 0xc0 != 0x80);
        is_first.then(|| core::str::from_utf8(tail).ok().map(str::as_bytes))?
    })
}

/// `text` cut to at most [`PREVIEW_MAX`] bytes on a character boundary, `…` marking a cut.
fn preview(text: &str) -> String<PREVIEW_MAX> {
    let mut out = String::new();
    if out.push_str(text).is_ok() {
        return out;
    }
    for c in text.chars() {
        if out.len() + c.len_utf8() + '…'.len_utf8() > PREVIEW_MAX {
            break;
        }
        let _ = out.push(c);
    }
    let _ = out.push('…');
    out
}

/// Write `text` with its control characters escaped as `char::escape_default` does
/// (`\t`, `\r`, `\n`, else `\u{1b}`); the stream, for more.
fn write_escaped<'w, W: Write>(io: &'w mut W, text: &str) -> &'w mut W {
    let mut rest = text;
    while let Some((at, c)) = rest.char_indices().find(|&(_, c)| c.is_control()) {
        let (plain, tail) = rest.split_at(at);
        io.text(plain);
        match c {
            '\t' => io.text("\\t"),
            '\r' => io.text("\\r"),
            '\n' => io.text("\\n"),
            _ => io.text("\\u{").hex(u32::from(c), 1).text("}"),
        };
        rest = tail.get(c.len_utf8()..).unwrap_or_default();
    }
    io.text(rest)
}

/// A message id as the core's `Display` prints it: `#7`.
fn message_id<W: Write>(io: &mut W, id: MessageId) -> &mut W {
    io.text("#").decimal(id.0)
}

/// A duration as the core's `Display` prints it: whole seconds as `3 s`, else `1500 ms`.
fn duration<W: Write>(io: &mut W, d: duet_core::Duration) -> &mut W {
    let millis = d.as_millis();
    let (seconds, rest) = print::div_rem(millis, 1000);
    if rest == 0 {
        io.decimal(seconds).text(" s")
    } else {
        io.decimal(millis).text(" ms")
    }
}

/// `IPV4:PORT` (`10.0.2.2:7788`) as a socket address, if `text` is exactly that: four
/// decimal octets of at most 255 and a port, no leading zeros. The board's stack speaks
/// IPv4 only, and this is far smaller than `SocketAddr`'s `FromStr`, which takes IPv6 too.
fn parse_ipv4_socket(text: &str) -> Option<SocketAddr> {
    let (ip, port) = split_at_byte(text, b':')?;
    let mut octets = [0u8; 4];
    let mut rest = ip;
    for (i, octet) in octets.iter_mut().enumerate() {
        let (part, tail) = match i {
            3 => (rest, ""),
            _ => split_at_byte(rest, b'.')?,
        };
        *octet = u8::try_from(parse_decimal(part)?).ok()?;
        rest = tail;
    }
    let port = u16::try_from(parse_decimal(port)?).ok()?;
    Some(SocketAddr::from((octets, port)))
}

/// `text` before and after the first `byte` (ASCII), as `str::split_once` with a `char`
/// would give, without the generic pattern searcher that brings along.
fn split_at_byte(text: &str, byte: u8) -> Option<(&str, &str)> {
    let at = text.bytes().position(|b| b == byte)?;
    Some((text.get(..at)?, text.get(at + 1..)?))
}

/// A decimal number of one to five digits, without a leading zero unless it is `0`.
fn parse_decimal(text: &str) -> Option<u32> {
    let digits = text.as_bytes();
    if digits.is_empty() || digits.len() > 5 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_core::{SecureConfig, StaticKeys};
    use embedded_io::ErrorType;

    /// A terminal: bytes typed wait in `input`, what the console prints lands in `output`.
    #[derive(Default)]
    struct Terminal {
        input: std::collections::VecDeque<u8>,
        output: std::vec::Vec<u8>,
    }

    impl ErrorType for Terminal {
        type Error = core::convert::Infallible;
    }

    impl ReadReady for Terminal {
        fn read_ready(&mut self) -> Result<bool, Self::Error> {
            Ok(!self.input.is_empty())
        }
    }

    impl Read for Terminal {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let mut n = 0;
            while n < buf.len() {
                let Some(byte) = self.input.pop_front() else {
                    break;
                };
                buf[n] = byte;
                n += 1;
            }
            Ok(n)
        }
    }

    impl Write for Terminal {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    const NOW: Instant = Instant::from_millis(0);
    const PEER_KEY: [u8; 32] = [9; 32];
    /// PEER_KEY in base64.
    const PEER_KEY_TEXT: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

    fn session() -> std::boxed::Box<Secure> {
        std::boxed::Box::new(Secure::new_sized(
            NOW,
            SecureConfig::default(),
            StaticKeys::from_secret([1; 32]),
            &[],
            None,
            [2; 32],
        ))
    }

    fn status() -> BoardStatus {
        BoardStatus {
            address: [192, 168, 1, 50],
            prefix_len: 24,
            gateway: [192, 168, 1, 1],
            port: 7789,
            mac: [2, 0, 0, 0, 0, 1],
            uptime_ms: 1500,
            nic: NicStats::default(),
            send_would_block: 0,
            network_errors: 0,
            uart_overruns: 0,
            stack_used: 0,
            static_ram: 0,
        }
    }

    /// Type `text` and let the console take it; what it asked for, and what it printed.
    fn type_text(
        console: &mut Console<'_, Terminal>,
        session: &mut Secure,
        text: &str,
    ) -> (Option<Request>, std::string::String) {
        console.screen.io.input.extend(text.as_bytes());
        console.screen.io.output.clear();
        let request = console.poll_input(session, NOW, status);
        let printed = std::string::String::from_utf8(console.screen.io.output.clone())
            .expect("the console printed invalid UTF-8");
        (request, printed)
    }

    #[test]
    fn pairing_asks_the_board_to_keep_the_peer() {
        let mut line = Vec::new();
        let mut console = Console::new(Terminal::default(), &mut line);
        let mut session = session();
        let (request, printed) = type_text(
            &mut console,
            &mut session,
            &std::format!("/pair {PEER_KEY_TEXT} 192.168.1.20:7788\r"),
        );
        assert_eq!(request, Some(Request::PeerChanged), "{printed}");
        assert!(
            printed.contains(&std::format!(
                "paired with {PEER_KEY_TEXT} at 192.168.1.20:7788"
            )),
            "{printed}"
        );
        assert_eq!(session.peer_key(), Some(PEER_KEY));

        let (request, printed) = type_text(&mut console, &mut session, "/peer 10.0.0.7:9\r\n");
        assert_eq!(request, Some(Request::PeerChanged), "{printed}");
        assert_eq!(session.peer_addr(), Some("10.0.0.7:9".parse().unwrap()));
    }

    #[test]
    fn refused_commands_keep_nothing() {
        let mut line = Vec::new();
        let mut console = Console::new(Terminal::default(), &mut line);
        let mut session = session();
        for typed in [
            "/pair short 192.168.1.20:7788\r",
            "/peer 192.168.1.20:7788\r",
            "/help\r",
            "/status\r",
        ] {
            let (request, printed) = type_text(&mut console, &mut session, typed);
            assert_eq!(request, None, "{typed:?} printed {printed}");
        }
        assert_eq!(session.peer_key(), None);
    }

    #[test]
    fn reset_stops_reading_at_the_command() {
        let mut line = Vec::new();
        let mut console = Console::new(Terminal::default(), &mut line);
        let mut session = session();
        let (request, _) = type_text(&mut console, &mut session, "/reset\rhello\r");
        assert_eq!(request, Some(Request::Reset));
        assert_eq!(
            console.io().input.len(),
            "hello\r".len(),
            "read past /reset"
        );
    }

    #[test]
    fn backspace_erases_a_whole_wide_character() {
        let mut line = Vec::new();
        let mut console = Console::new(Terminal::default(), &mut line);
        let mut session = session();
        let (_, printed) = type_text(&mut console, &mut session, "a你\x7f");
        assert_eq!(printed, "a你\x08\x08  \x08\x08");
        assert_eq!(console.line.as_slice(), b"a");
    }

    #[test]
    fn ipv4_socket_addresses_parse_strictly() {
        assert_eq!(
            parse_ipv4_socket("192.168.1.20:7788"),
            Some("192.168.1.20:7788".parse().unwrap())
        );
        for bad in [
            "192.168.1.20",
            "192.168.1:7788",
            "192.168.1.256:7788",
            "192.168.01.20:7788",
            "192.168.1.20:65536",
            "192.168.1.20:",
            "[::1]:7788",
            "192.168.1.20:77a",
        ] {
            assert_eq!(parse_ipv4_socket(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn previews_are_cut_between_characters() {
        assert_eq!(preview("short").as_str(), "short");
        let long = "你".repeat(20);
        let cut = preview(&long);
        assert!(cut.len() <= PREVIEW_MAX);
        assert!(cut.ends_with('…'));
        assert_eq!(cut.as_str(), std::format!("{}…", "你".repeat(15)));
    }
}
