//! IP Messenger (IPMsg) protocol version 1 packets, as IP Messenger, FeiQ (飞秋) and iptux
//! send them on UDP port 2425.
//!
//! ```text
//! version:packet_no:user:host:command:extra\0extra2...\0
//! 1:100:shirouzu:jupiter:32:Hello\0                       (IPMsg's own example)
//! 1_iptux 0.8.3:1:root:vm:257:Tux\0LAN\0icon-tux.png\0utf-8\0   (iptux's start-up entry)
//! 1_lbt4_0#128#001A73261837#0#0#0:1234:bob:PC:288:你好\0   (FeiQ, text in GBK)
//! ```
//!
//! Five header fields separated by `:`, then the "additional section": text up to the first
//! NUL (`extra`: the message, the nickname, a packet number), then more NUL-separated
//! sections (`extra2`: the group name, iptux's icon and encoding, file information). The
//! command is a decimal number: the mode in the low 8 bits ([`mode`]), option bits above
//! ([`opt`]); the same bit means different things for different modes
//! (`ABSENCEOPT` = `SENDCHECKOPT` = 0x100).
//!
//! Real clients' quirks this codec takes (see `Version`): the version field is not always
//! a number (`1_iptux 0.8.3`, FeiQ's `1_lbt4_0#128#MAC#...`), but never contains `:`; text
//! may contain `:`; packets end with one NUL or none.
//!
//! Contract: accessors of [`Packet`] never panic, even before [`Packet::check_len`]; after
//! it every header field is where the format puts it. [`Repr::parse`] rejects packets whose
//! packet number or command is not a decimal number, and an empty version. [`Repr::emit`]
//! never panics and writes exactly [`Repr::buffer_len`] bytes into a buffer that long. The
//! bytes are never decoded here: text fields are slices of the buffer, in whatever encoding
//! the sender used (see `crate::ipmsg` for how the encoding is chosen).

use super::{Error, Result};

/// The UDP port every IP Messenger client listens on and sends to.
pub const PORT: u16 = 2425;

/// The longest decimal number the header holds (`u64::MAX` has 20 digits).
pub const MAX_NUMBER_DIGITS: usize = 20;

/// Command modes: the low 8 bits of the command (IPMsg protocol draft 9 and its later
/// additions).
pub mod mode {
    /// Nothing.
    pub const NOOPERATION: u8 = 0x00;
    /// "I am here": broadcast at start-up; everyone answers [`ANSENTRY`].
    pub const BR_ENTRY: u8 = 0x01;
    /// "I am leaving": broadcast (or sent to each peer) when quitting.
    pub const BR_EXIT: u8 = 0x02;
    /// The answer to [`BR_ENTRY`]: "I am here too".
    pub const ANSENTRY: u8 = 0x03;
    /// Absence mode or nickname changed; not answered.
    pub const BR_ABSENCE: u8 = 0x04;
    /// A message; with `SENDCHECKOPT` the receiver answers [`RECVMSG`].
    pub const SENDMSG: u8 = 0x20;
    /// "Your message arrived": extra is its packet number.
    pub const RECVMSG: u8 = 0x21;
    /// A sealed message was opened.
    pub const READMSG: u8 = 0x30;
    /// A sealed message was discarded unread.
    pub const DELMSG: u8 = 0x31;
    /// The answer to [`READMSG`] with `READCHECKOPT`.
    pub const ANSREADMSG: u8 = 0x32;
    /// "Which program are you?"
    pub const GETINFO: u8 = 0x40;
    /// The answer to [`GETINFO`]: extra is the program's version text.
    pub const SENDINFO: u8 = 0x41;
    /// "What is your absence message?"
    pub const GETABSENCEINFO: u8 = 0x50;
    /// The answer to [`GETABSENCEINFO`].
    pub const SENDABSENCEINFO: u8 = 0x51;
    /// File transfer request (over TCP; duet does not transfer files).
    pub const GETFILEDATA: u8 = 0x60;
    /// Attached files released.
    pub const RELEASEFILES: u8 = 0x61;
    /// Directory transfer request (over TCP).
    pub const GETDIRFILES: u8 = 0x62;
    /// IPMsg's encryption extension: public key request (duet does not take part).
    pub const GETPUBKEY: u8 = 0x72;
    /// IPMsg's encryption extension: public key answer.
    pub const ANSPUBKEY: u8 = 0x73;
}

/// Option bits: the command's upper 24 bits. Their meaning depends on the mode.
pub mod opt {
    /// Entry commands: the sender is absent.
    pub const ABSENCEOPT: u32 = 0x0000_0100;
    /// Entry commands: the sender is a server (reserved).
    pub const SERVEROPT: u32 = 0x0000_0200;
    /// Entry commands: the sender cannot be reached by broadcast (dial-up).
    pub const DIALUPOPT: u32 = 0x0001_0000;
    /// Files are attached (their description follows the text after a NUL).
    pub const FILEATTACHOPT: u32 = 0x0020_0000;
    /// The text is encrypted with IPMsg's encryption extension.
    pub const ENCRYPTOPT: u32 = 0x0040_0000;
    /// This packet's text is UTF-8.
    pub const UTF8OPT: u32 = 0x0080_0000;
    /// The sender can read UTF-8 (entry commands).
    pub const CAPUTF8OPT: u32 = 0x0100_0000;
    /// SENDMSG: answer with RECVMSG.
    pub const SENDCHECKOPT: u32 = 0x0000_0100;
    /// SENDMSG: a sealed message (the recipient opens it explicitly).
    pub const SECRETOPT: u32 = 0x0000_0200;
    /// SENDMSG: sent to everyone.
    pub const BROADCASTOPT: u32 = 0x0000_0400;
    /// SENDMSG: sent to several people.
    pub const MULTICASTOPT: u32 = 0x0000_0800;
    /// SENDMSG: an automatic answer (absence message); never answered automatically.
    pub const AUTORETOPT: u32 = 0x0000_2000;
    /// SENDMSG: a retransmission.
    pub const RETRYOPT: u32 = 0x0000_4000;
    /// SENDMSG: sealed with a password.
    pub const PASSWORDOPT: u32 = 0x0000_8000;
    /// SENDMSG: do not log.
    pub const NOLOGOPT: u32 = 0x0002_0000;
    /// SENDMSG: do not add the sender to the host list.
    pub const NOADDLISTOPT: u32 = 0x0008_0000;
    /// SENDMSG with SECRETOPT: answer READMSG when opened.
    pub const READCHECKOPT: u32 = 0x0010_0000;
}

/// A command: mode and option bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Command(pub u32);

impl Command {
    /// `mode` with `options` (upper bits only; low bits of `options` are ignored).
    pub const fn new(mode: u8, options: u32) -> Self {
        Command(mode as u32 | (options & !0xff))
    }
    /// The mode: the low 8 bits (see [`mode`]).
    pub const fn mode(self) -> u8 {
        (self.0 & 0xff) as u8
    }
    /// The option bits.
    pub const fn options(self) -> u32 {
        self.0 & !0xff
    }
    /// Whether every bit of `option` is set.
    pub const fn has(self, option: u32) -> bool {
        self.0 & option == option && option & !0xff != 0
    }
}

/// Who a version field says sent a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Client {
    /// IP Messenger itself, or anything that writes the plain `1`.
    IpMsg,
    /// FeiQ: `1_lbt4_...` / `1_lbt6_...`, fields separated by `#`, the third the MAC address.
    FeiQ,
    /// iptux: `1_iptux VERSION`.
    Iptux,
    /// duet: `1_duet VERSION`.
    Duet,
    /// Something else that still starts with a protocol number.
    Other,
}

impl Client {
    /// A short name to show.
    pub const fn name(self) -> &'static str {
        match self {
            Client::IpMsg => "IP Messenger",
            Client::FeiQ => "FeiQ",
            Client::Iptux => "iptux",
            Client::Duet => "duet",
            Client::Other => "IPMsg-compatible",
        }
    }
}

/// The version field, the first of the header. Real clients extend it: iptux writes
/// `1_iptux 0.8.3`, FeiQ `1_lbt4_0#128#001A73261837#0#0#0` (protocol 1, FeiQ generation 4,
/// avatar 0; then a status word, the MAC address and three more numbers, sometimes a
/// client version like `#2.5a` or `#4001#9`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Version<'a>(pub &'a [u8]);

impl<'a> Version<'a> {
    /// The protocol number: the leading decimal digits (1 for every known client).
    pub fn protocol(&self) -> Option<u32> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        parse_decimal(self.0.get(..digits)?).and_then(|n| u32::try_from(n).ok())
    }

    /// Which kind of client wrote it.
    pub fn client(&self) -> Client {
        let v = self.0;
        let rest = v.get(1..).unwrap_or_default();
        if v == b"1" {
            Client::IpMsg
        } else if rest.starts_with(b"_lbt") {
            Client::FeiQ
        } else if rest.starts_with(b"_iptux") {
            Client::Iptux
        } else if rest.starts_with(b"_duet") {
            Client::Duet
        } else {
            Client::Other
        }
    }

    /// FeiQ's MAC address field (`001A73261837`), when this is a FeiQ version.
    pub fn feiq_mac(&self) -> Option<&'a [u8]> {
        if self.client() != Client::FeiQ {
            return None;
        }
        self.0
            .split(|b| *b == b'#')
            .nth(2)
            .filter(|m| !m.is_empty())
    }

    /// What follows the protocol number and `_` (`iptux 0.8.3`, `lbt4_0#128#...`), if any.
    pub fn detail(&self) -> &'a [u8] {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let rest = self.0.get(digits..).unwrap_or_default();
        rest.strip_prefix(b"_").unwrap_or(rest)
    }
}

/// Parse a decimal number of 1 to [`MAX_NUMBER_DIGITS`] ASCII digits, nothing else.
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > MAX_NUMBER_DIGITS {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// `n` in decimal, written at the end of `buf`; returns the digits.
pub fn decimal(n: u64, buf: &mut [u8; MAX_NUMBER_DIGITS]) -> &[u8] {
    let mut i = MAX_NUMBER_DIGITS;
    let mut n = n;
    // At most 20 rounds: u64::MAX has 20 digits.
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Where the header's fields are in a buffer: the first four `:` and where the command ends.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Positions of the four colons that end version, packet number, user and host.
    colons: [usize; 4],
    /// End of the command field (exclusive).
    command_end: usize,
    /// Start of the additional section, when a `:` follows the command.
    extra_start: Option<usize>,
}

fn layout(buf: &[u8]) -> Option<Layout> {
    let mut colons = [0usize; 4];
    let mut found = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b':' {
            colons[found] = i;
            found += 1;
            if found == colons.len() {
                break;
            }
        }
    }
    if found < colons.len() {
        return None;
    }
    let start = colons[3] + 1;
    let tail = buf.get(start..).unwrap_or_default();
    // The command ends at the next ':' (an additional section follows), at a NUL (a client
    // that terminates a packet without one) or at the end.
    let len = tail
        .iter()
        .position(|b| *b == b':' || *b == 0)
        .unwrap_or(tail.len());
    let command_end = start + len;
    let extra_start = (buf.get(command_end) == Some(&b':')).then_some(command_end + 1);
    Some(Layout {
        colons,
        command_end,
        extra_start,
    })
}

/// A read/write wrapper around an IPMsg packet buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it (accessors then return empty fields when the
    /// header is incomplete).
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer and check that it holds the five header fields.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure the buffer holds the five header fields (four `:` at least).
    pub fn check_len(&self) -> Result<()> {
        layout(self.buffer.as_ref()).map(drop).ok_or(Error)
    }

    /// Return the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn header_field(&self, n: usize) -> &[u8] {
        field_of(self.buffer.as_ref(), n)
    }

    /// The version field, raw.
    pub fn version(&self) -> &[u8] {
        self.header_field(0)
    }
    /// The packet number field, raw (decimal text).
    pub fn packet_no_field(&self) -> &[u8] {
        self.header_field(1)
    }
    /// The sender's login name.
    pub fn user(&self) -> &[u8] {
        self.header_field(2)
    }
    /// The sender's host name.
    pub fn host(&self) -> &[u8] {
        self.header_field(3)
    }
    /// The command field, raw (decimal text).
    pub fn command_field(&self) -> &[u8] {
        self.header_field(4)
    }
    /// The packet number, if the field is a decimal number.
    pub fn packet_no(&self) -> Option<u64> {
        parse_decimal(self.packet_no_field())
    }
    /// The command, if the field is a decimal number that fits 32 bits.
    pub fn command(&self) -> Option<Command> {
        parse_decimal(self.command_field())
            .and_then(|n| u32::try_from(n).ok())
            .map(Command)
    }
    /// Everything after the command's `:` (empty when there is none), trailing NULs
    /// included.
    pub fn additional(&self) -> &[u8] {
        additional_of(self.buffer.as_ref())
    }
    /// The additional section up to its first NUL: the message text, the nickname, a
    /// packet number.
    pub fn extra(&self) -> &[u8] {
        extra_of(self.buffer.as_ref())
    }
    /// What follows the first NUL of the additional section, without trailing NULs: the
    /// group name, iptux's icon and encoding, file information (NUL-separated).
    pub fn extra2(&self) -> &[u8] {
        extra2_of(self.buffer.as_ref())
    }
}

/// Writes bytes in order and stops quietly at the end of the buffer.
struct Cursor<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let room = self.buf.len().saturating_sub(self.at);
        let n = bytes.len().min(room);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.at..self.at + n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.at += n;
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write a whole packet: `version:packet_no:user:host:command:extra`, then `\0extra2`
    /// when `extra2` is not empty, then the terminating NUL. Returns the bytes written
    /// (fewer than [`Repr::buffer_len`] only when the buffer is too short; never panics).
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &mut self,
        version: &[u8],
        packet_no: u64,
        user: &[u8],
        host: &[u8],
        command: Command,
        extra: &[u8],
        extra2: &[u8],
    ) -> usize {
        let mut digits = [0u8; MAX_NUMBER_DIGITS];
        let mut w = Cursor {
            buf: self.buffer.as_mut(),
            at: 0,
        };
        w.put(version);
        w.put(b":");
        w.put(decimal(packet_no, &mut digits));
        w.put(b":");
        w.put(user);
        w.put(b":");
        w.put(host);
        w.put(b":");
        w.put(decimal(u64::from(command.0), &mut digits));
        w.put(b":");
        w.put(extra);
        if !extra2.is_empty() {
            w.put(&[0]);
            w.put(extra2);
        }
        w.put(&[0]);
        w.at
    }
}

/// A parsed, validated IPMsg packet. Text fields are raw bytes in the sender's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Repr<'a> {
    /// The version field (`1`, `1_iptux 0.8.3`, FeiQ's extended field); never empty, no
    /// `:`.
    pub version: Version<'a>,
    /// The sender's number for this packet (retransmissions repeat it).
    pub packet_no: u64,
    /// The sender's login name (no `:`).
    pub user: &'a [u8],
    /// The sender's host name (no `:`).
    pub host: &'a [u8],
    /// Mode and options.
    pub command: Command,
    /// The additional section up to its first NUL (no NUL).
    pub extra: &'a [u8],
    /// The NUL-separated sections after it, without trailing NULs.
    pub extra2: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parse a checked packet. Rejects an empty version, and a packet number or command that
    /// is not a decimal number.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>> {
        packet.check_len()?;
        let buf: &'a [u8] = T::as_ref(packet.buffer);
        let version = field_of(buf, 0);
        if version.is_empty() {
            return Err(Error);
        }
        let command = parse_decimal(field_of(buf, 4))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(Error)?;
        Ok(Repr {
            version: Version(version),
            packet_no: parse_decimal(field_of(buf, 1)).ok_or(Error)?,
            user: field_of(buf, 2),
            host: field_of(buf, 3),
            command: Command(command),
            extra: extra_of(buf),
            extra2: extra2_of(buf),
        })
    }

    /// The length [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let mut digits = [0u8; MAX_NUMBER_DIGITS];
        let packet_no = decimal(self.packet_no, &mut digits).len();
        let command = decimal(u64::from(self.command.0), &mut digits).len();
        let extra2 = if self.extra2.is_empty() {
            0
        } else {
            1 + self.extra2.len()
        };
        self.version.0.len()
            + 1
            + packet_no
            + 1
            + self.user.len()
            + 1
            + self.host.len()
            + 1
            + command
            + 1
            + self.extra.len()
            + extra2
            + 1
    }

    /// Write the packet into a buffer of at least [`Self::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.fill(
            self.version.0,
            self.packet_no,
            self.user,
            self.host,
            self.command,
            self.extra,
            self.extra2,
        );
    }

    /// The NUL-separated sections of [`Self::extra2`] (none when it is empty).
    pub fn sections(&self) -> impl Iterator<Item = &'a [u8]> {
        let extra2 = self.extra2;
        extra2
            .split(|b| *b == 0)
            .take(if extra2.is_empty() { 0 } else { usize::MAX })
    }
}

// The field finders work on the bare slice so `Repr` borrows the buffer itself, not a
// `Packet` wrapper.
fn field_of(buf: &[u8], n: usize) -> &[u8] {
    let Some(l) = layout(buf) else {
        return &[];
    };
    let (start, end) = match n {
        0 => (0, l.colons[0]),
        1..=3 => (l.colons[n - 1] + 1, l.colons[n]),
        _ => (l.colons[3] + 1, l.command_end),
    };
    buf.get(start..end).unwrap_or_default()
}

fn extra_of(buf: &[u8]) -> &[u8] {
    let all = additional_of(buf);
    let end = all.iter().position(|b| *b == 0).unwrap_or(all.len());
    all.get(..end).unwrap_or_default()
}

fn extra2_of(buf: &[u8]) -> &[u8] {
    let all = additional_of(buf);
    let Some(nul) = all.iter().position(|b| *b == 0) else {
        return &[];
    };
    let rest = all.get(nul + 1..).unwrap_or_default();
    let end = rest.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    rest.get(..end).unwrap_or_default()
}

fn additional_of(buf: &[u8]) -> &[u8] {
    layout(buf)
        .and_then(|l| buf.get(l.extra_start?..))
        .unwrap_or_default()
}

#[cfg(test)]
mod test {
    use super::*;

    /// iptux 0.8.3's start-up BR_ENTRY|ABSENCEOPT as it hex-dumps it (`iptux -l DEBUG`),
    /// nickname "Tux企鹅", group "LAN": four NUL-terminated sections, the last its encoding.
    static ENTRY_BYTES: [u8; 61] = *b"1_iptux 0.8.3:1:root:vm:257:Tux\xe4\xbc\x81\xe9\xb9\x85\x00LAN\x00icon-tux.png\x00utf-8\x00";

    fn entry_repr() -> Repr<'static> {
        Repr {
            version: Version(b"1_iptux 0.8.3"),
            packet_no: 1,
            user: b"root",
            host: b"vm",
            command: Command::new(mode::BR_ENTRY, opt::ABSENCEOPT),
            extra: "Tux企鹅".as_bytes(),
            extra2: b"LAN\0icon-tux.png\0utf-8",
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&ENTRY_BYTES[..]).unwrap();
        assert_eq!(packet.version(), b"1_iptux 0.8.3");
        assert_eq!(packet.packet_no_field(), b"1");
        assert_eq!(packet.packet_no(), Some(1));
        assert_eq!(packet.user(), b"root");
        assert_eq!(packet.host(), b"vm");
        assert_eq!(packet.command_field(), b"257");
        assert_eq!(packet.command(), Some(Command(0x101)));
        assert_eq!(packet.extra(), "Tux企鹅".as_bytes());
        assert_eq!(packet.extra2(), b"LAN\0icon-tux.png\0utf-8");
        assert_eq!(packet.additional().last(), Some(&0));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 61];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        let n = packet.fill(
            b"1_iptux 0.8.3",
            1,
            b"root",
            b"vm",
            Command(257),
            "Tux企鹅".as_bytes(),
            b"LAN\0icon-tux.png\0utf-8",
        );
        assert_eq!(n, 61);
        assert_eq!(&packet.into_inner()[..], &ENTRY_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let packet = Packet::new_unchecked(&ENTRY_BYTES[..]);
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr, entry_repr());
        assert_eq!(repr.command.mode(), mode::BR_ENTRY);
        assert!(repr.command.has(opt::ABSENCEOPT));
        assert_eq!(repr.version.client(), Client::Iptux);
        let sections: [&[u8]; 3] = [b"LAN", b"icon-tux.png", b"utf-8"];
        assert!(repr.sections().eq(sections));
    }

    #[test]
    fn test_emit() {
        let repr = entry_repr();
        assert_eq!(repr.buffer_len(), ENTRY_BYTES.len());
        let mut bytes = [0u8; 61];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, ENTRY_BYTES);
    }

    #[test]
    fn test_impossible_len() {
        // Fewer than five header fields: not a packet, and accessors still do not panic.
        for bytes in [&b""[..], b"1", b"1:2:u:h", b":::", b"\0\0\0"] {
            assert_eq!(Packet::new_checked(bytes), Err(Error), "{bytes:?}");
            let packet = Packet::new_unchecked(bytes);
            assert_eq!(packet.user(), b"");
            assert_eq!(packet.extra(), b"");
            assert_eq!(packet.command(), None);
            assert_eq!(Repr::parse(&packet), Err(Error));
        }
        // A buffer shorter than buffer_len(): emit writes what fits and does not panic.
        let mut short = [0u8; 10];
        entry_repr().emit(&mut Packet::new_unchecked(&mut short[..]));
        assert_eq!(&short, b"1_iptux 0.");
    }

    #[test]
    fn iptux_quirks_option_bit_on_everything_and_a_version_that_is_not_a_number() {
        // Observed from iptux 0.8.3: ANSENTRY 259, RECVMSG 289 with the acknowledged
        // packet number as extra, a typed message 288 (SENDMSG|SENDCHECKOPT), BR_EXIT 65538
        // (BR_EXIT|DIALUPOPT) with an empty extra.
        let cases: [(&[u8], u8, u32, &[u8]); 4] = [
            (
                b"1_iptux 0.8.3:2:root:vm:259:Tux\0LAN\0icon-tux.png\0utf-8\0",
                mode::ANSENTRY,
                opt::ABSENCEOPT,
                b"Tux",
            ),
            (
                b"1_iptux 0.8.3:5:root:vm:289:1001\0",
                mode::RECVMSG,
                opt::SENDCHECKOPT,
                b"1001",
            ),
            (
                b"1_iptux 0.8.3:6:root:vm:288:hello from tux\0",
                mode::SENDMSG,
                opt::SENDCHECKOPT,
                b"hello from tux",
            ),
            (
                b"1_iptux 0.8.3:9:root:vm:65538:\0",
                mode::BR_EXIT,
                opt::DIALUPOPT,
                b"",
            ),
        ];
        for (bytes, mode, option, extra) in cases {
            let repr = Repr::parse(&Packet::new_unchecked(bytes)).unwrap();
            assert_eq!(repr.command.mode(), mode, "{bytes:?}");
            assert_eq!(repr.command.options(), option, "{bytes:?}");
            assert_eq!(repr.extra, extra);
            assert_eq!(repr.version.protocol(), Some(1));
            // Emitting the parsed packet gives back the very bytes iptux sent.
            let mut out = [0u8; 128];
            repr.emit(&mut Packet::new_unchecked(&mut out[..]));
            assert_eq!(&out[..repr.buffer_len()], bytes);
        }
    }

    #[test]
    fn ipmsg_draft_example_without_trailing_nul_and_text_with_colons() {
        // The protocol document's own example, and text that contains ':'.
        let repr = Repr::parse(&Packet::new_unchecked(
            &b"1:100:shirouzu:jupiter:32:Hello"[..],
        ))
        .unwrap();
        assert_eq!(repr.version.client(), Client::IpMsg);
        assert_eq!(repr.packet_no, 100);
        assert_eq!(repr.command.mode(), mode::SENDMSG);
        assert_eq!(repr.extra, b"Hello");
        assert_eq!(repr.extra2, b"");
        let repr = Repr::parse(&Packet::new_unchecked(&b"1:7:u:h:288:time: 12:30\0"[..])).unwrap();
        assert_eq!(repr.extra, b"time: 12:30");
        // No additional section at all (a BR_EXIT some clients send): empty extra.
        let repr = Repr::parse(&Packet::new_unchecked(&b"1:8:u:h:2"[..])).unwrap();
        assert_eq!((repr.command.mode(), repr.extra), (mode::BR_EXIT, &b""[..]));
        let repr = Repr::parse(&Packet::new_unchecked(&b"1:8:u:h:2\0"[..])).unwrap();
        assert_eq!((repr.command.mode(), repr.extra), (mode::BR_EXIT, &b""[..]));
    }

    #[test]
    fn feiq_extended_version_field_names_feiq_and_its_mac_address() {
        // FeiQ's packets as FeiQ-compatible tools write them: the version field carries '#'
        // separated extensions; the text is GBK ("你好" = c4e3 bac3).
        let bytes = b"1_lbt4_0#128#001A73261837#0#0#0:1399716676:bob:BOB-PC:288:\xc4\xe3\xba\xc3\0";
        let repr = Repr::parse(&Packet::new_unchecked(&bytes[..])).unwrap();
        assert_eq!(repr.version.client(), Client::FeiQ);
        assert_eq!(repr.version.protocol(), Some(1));
        assert_eq!(repr.version.feiq_mac(), Some(&b"001A73261837"[..]));
        assert_eq!(repr.version.detail(), b"lbt4_0#128#001A73261837#0#0#0");
        assert_eq!(repr.packet_no, 1_399_716_676);
        assert_eq!(repr.user, b"bob");
        assert_eq!(repr.command.mode(), mode::SENDMSG);
        assert!(repr.command.has(opt::SENDCHECKOPT));
        assert_eq!(repr.extra, [0xc4, 0xe3, 0xba, 0xc3]);
        // FeiQ 3's longer field, and IPMsg's own: no MAC address.
        let v = Version(b"1_lbt6_0#128#74E6E2152F9D#0#0#0#4001#9");
        assert_eq!(
            (v.client(), v.feiq_mac()),
            (Client::FeiQ, Some(&b"74E6E2152F9D"[..]))
        );
        assert_eq!(Version(b"1").feiq_mac(), None);
        assert_eq!(Version(b"1_duet 0.1.0").client(), Client::Duet);
        assert_eq!(Version(b"2.0").client(), Client::Other);
    }

    #[test]
    fn ipmsg_utf8_entry_with_caputf8_and_an_extended_section() {
        // IP Messenger 3 and later announce CAPUTF8OPT and add a UTF-8 section of
        // "\nKEY:value" lines after the group.
        let bytes = b"1:1700000000:taro:PC1:16777217:taro\0dev\0\nUN:taro\nHN:PC1\nNN:\xe5\xa4\xaa\xe9\x83\x8e\nGN:dev\0";
        let repr = Repr::parse(&Packet::new_unchecked(&bytes[..])).unwrap();
        assert_eq!(repr.command.mode(), mode::BR_ENTRY);
        assert!(repr.command.has(opt::CAPUTF8OPT));
        assert!(!repr.command.has(opt::UTF8OPT));
        let mut sections = repr.sections();
        assert_eq!(sections.next(), Some(&b"dev"[..]));
        assert!(sections.next().unwrap().starts_with(b"\nUN:taro"));
        assert_eq!(sections.next(), None);
    }

    #[test]
    fn malformed_numbers_are_rejected_not_guessed() {
        for bytes in [
            &b"1:x:u:h:32:hi"[..],
            b"1::u:h:32:hi",
            b"1:1:u:h:3x2:hi",
            b"1:1:u:h::hi",
            b"1:1:u:h:4294967296:hi",
            b"1:123456789012345678901:u:h:32:hi",
            b":1:u:h:32:hi",
        ] {
            assert_eq!(
                Repr::parse(&Packet::new_unchecked(bytes)),
                Err(Error),
                "{:?}",
                core::str::from_utf8(bytes)
            );
        }
        // Java clients number packets with milliseconds: more than 32 bits is fine.
        let repr = Repr::parse(&Packet::new_unchecked(&b"1:1700000000123:u:h:32:hi"[..])).unwrap();
        assert_eq!(repr.packet_no, 1_700_000_000_123);
    }

    #[test]
    fn command_splits_mode_and_options() {
        let c = Command::new(mode::SENDMSG, opt::SENDCHECKOPT | opt::UTF8OPT);
        assert_eq!(c.0, 0x0080_0120);
        assert_eq!(c.mode(), mode::SENDMSG);
        assert!(c.has(opt::UTF8OPT) && c.has(opt::SENDCHECKOPT));
        assert!(!c.has(opt::SECRETOPT));
        assert!(!c.has(0), "no option is not a set option");
        // Low bits passed as options are dropped, not mixed into the mode.
        assert_eq!(Command::new(mode::RECVMSG, 0x1ff).0, 0x121);
    }

    #[test]
    fn decimal_round_trips_at_the_limits() {
        let mut buf = [0u8; MAX_NUMBER_DIGITS];
        for n in [0, 9, 10, 4_294_967_295, u64::MAX] {
            let text = decimal(n, &mut buf);
            assert_eq!(parse_decimal(text), Some(n));
        }
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
    }
}
