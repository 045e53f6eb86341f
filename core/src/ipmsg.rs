//! IP Messenger on the LAN: chat with IP Messenger, FeiQ (飞秋) and iptux users, sans-IO.
//!
//! [`Ipmsg`] speaks IPMsg protocol version 1 ([`crate::wire::ipmsg`]) and is a
//! [`Protocol`], so it runs over the same [`crate::Driver`] as the duet session. It never
//! encrypts: IPMsg is plaintext by design, and the host says so on screen.
//!
//! What it does, as real clients expect:
//! - **Presence.** [`Ipmsg::new`] queues a BR_ENTRY to every broadcast address it is given;
//!   it answers every BR_ENTRY with ANSENTRY, updates on BR_ABSENCE, forgets a peer on
//!   BR_EXIT, and [`Ipmsg::close`] broadcasts BR_EXIT. The peer list (nick, group, user,
//!   host, address, encoding, client) holds [`MAX_PEERS`]; more are counted and ignored.
//! - **Messages.** [`Ipmsg::send_text`] sends SENDMSG|SENDCHECKOPT and retransmits the same
//!   packet every [`IpmsgConfig::retry_interval`] until RECVMSG names its packet number,
//!   [`IpmsgConfig::retries`] times, then reports [`IpmsgEvent::Failed`]. An incoming
//!   SENDMSG|SENDCHECKOPT is answered with RECVMSG every time (the sender may have missed the
//!   first), and shown once per sender address and packet number. A peer's BR_ENTRY clears
//!   what was seen from its address: clients number packets from 1 again after a restart.
//! - **Packet numbers.** Every packet this side writes gets the next number, starting at the
//!   caller's `first_packet_no` (hosts pass the Unix time in seconds, as IPMsg does), so
//!   they only grow; retransmissions repeat their number.
//! - **Encodings.** Per peer, from its entry: the encoding iptux states in its fourth
//!   section; else UTF-8 when it sets CAPUTF8OPT or UTF8OPT; else GBK (FeiQ and older IP
//!   Messengers on Chinese Windows). A packet with UTF8OPT is UTF-8 whatever the peer. Text
//!   from a sender whose entry was never seen is taken as UTF-8 when it is valid UTF-8,
//!   else GBK. Broadcasts go out in UTF-8 with UTF8OPT|CAPUTF8OPT and iptux's sections
//!   (`group\0\0utf-8`); what goes to one peer is in that peer's encoding.
//! - **Quirks.** The mode is the command's low 8 bits whatever options are set (iptux sets
//!   0x100 on everything, so a RECVMSG is never acknowledged); the version field may be any
//!   text; our own broadcasts, which the network hands back, are recognised and ignored.
//!
//! Call order, as for every [`Protocol`]: feed datagrams and timeouts, drain
//! [`Protocol::poll_transmit`], then drain [`Ipmsg::poll_event`]. Nothing allocates;
//! nothing panics on input; every queue is a fixed `heapless` one whose overflow is counted
//! in [`IpmsgStats`].

use core::net::{IpAddr, SocketAddr};

use heapless::{Deque, String, Vec};

use crate::driver::{Protocol, Transmit};
use crate::session::MessageId;
use crate::text::{self, Encoding, Piece};
use crate::time::{Duration, Instant};
use crate::wire::ipmsg::{
    Client, Command, MAX_NUMBER_DIGITS, Packet, Repr, Version, decimal, mode, opt, parse_decimal,
};
use crate::{Datagram, MAX_DATAGRAM};

/// Peers the list holds.
pub const MAX_PEERS: usize = 32;
/// Broadcast addresses announcements go to.
pub const MAX_BROADCASTS: usize = 8;
/// Messages in flight (sent, not yet confirmed or failed).
pub const OUTBOX: usize = 8;
/// Received messages waiting for [`Ipmsg::poll_event`]; while it is full, datagrams wait in
/// the socket.
pub const INBOX: usize = 8;
/// Answers (ANSENTRY, RECVMSG, ...) waiting to be sent.
pub const REPLIES: usize = 16;
/// Sender address and packet number pairs remembered to show a retransmission once.
pub const SEEN: usize = 64;
/// Bytes of a name (nick, group, user, host), in UTF-8; longer names are cut on a
/// character boundary.
pub const NAME_LEN: usize = 64;
/// Broadcasts (entry, absence, exit) waiting to go out.
const ANNOUNCEMENTS: usize = 4;
/// Departures waiting to be reported.
const DEPARTED: usize = 4;
/// Addresses of this machine [`Ipmsg::set_own_addresses`] keeps.
pub const MAX_OWN_ADDRESSES: usize = 32;
/// Own broadcast packet numbers remembered to recognise them when they come back.
const OWN: usize = 8;

/// A name as shown: UTF-8, at most [`NAME_LEN`] bytes.
pub type Name = String<NAME_LEN>;

/// The version field duet writes: protocol 1, then its name, as iptux does.
pub const VERSION: &str = concat!("1_duet ", env!("CARGO_PKG_VERSION"));

/// What duet answers GETINFO with.
const INFO: &str = concat!(
    "duet ",
    env!("CARGO_PKG_VERSION"),
    " (IP Messenger protocol 1; plaintext; no files)"
);

/// IPMsg's usual answer to GETABSENCEINFO when not absent.
const NOT_ABSENT: &str = "Not absence mode";

/// What iptux writes in its fourth entry section: the encoding to write to it in.
const STATED_UTF8: &[u8] = b"utf-8";

/// Timing of [`Ipmsg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IpmsgConfig {
    /// Time between sends of an unconfirmed message (IP Messenger: 1.5 s).
    pub retry_interval: Duration,
    /// Sends after the first before the message fails (IP Messenger: 3).
    pub retries: u8,
    /// The port peers listen on: where broadcasts and probes go.
    pub port: u16,
}

impl Default for IpmsgConfig {
    fn default() -> Self {
        IpmsgConfig {
            retry_interval: Duration::from_millis(1500),
            retries: 3,
            port: crate::wire::ipmsg::PORT,
        }
    }
}

/// Who this side is, as other clients show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile<'a> {
    /// Login name (`:` is replaced: it would end the field).
    pub user: &'a str,
    /// Host name (`:` is replaced).
    pub host: &'a str,
    /// Nickname shown in the peer lists.
    pub nick: &'a str,
    /// Group shown next to it.
    pub group: &'a str,
}

/// Someone on the LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Peer {
    /// Where its packets come from and ours go.
    pub addr: SocketAddr,
    /// Its nickname (its login name when it gave none).
    pub nick: Name,
    /// Its group.
    pub group: Name,
    /// Its login name.
    pub user: Name,
    /// Its host name.
    pub host: Name,
    /// The encoding of its text and of what we send it; [`Encoding::Auto`] while unknown
    /// (then we write UTF-8).
    pub encoding: Encoding,
    /// It stated its encoding (iptux) or set CAPUTF8OPT: the encoding is not a guess.
    pub stated: bool,
    /// Which client it runs, from its version field.
    pub client: Client,
    /// It says it is absent.
    pub absent: bool,
    /// Whether [`IpmsgEvent::PeerJoined`] was given for its latest entry.
    reported: bool,
}

impl Peer {
    /// The name to show: the nickname, else the login name.
    pub fn name(&self) -> &str {
        if self.nick.is_empty() {
            &self.user
        } else {
            &self.nick
        }
    }
}

/// A message that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Received<'a> {
    /// Who sent it.
    pub from: SocketAddr,
    /// The sender's name (nickname if known, else login name).
    pub name: &'a str,
    /// The sender's packet number.
    pub packet_no: u64,
    /// The text, undecoded (see [`Self::decode`]).
    pub text: &'a [u8],
    /// The encoding to decode it in.
    pub encoding: Encoding,
    /// Files were offered (duet does not transfer files).
    pub files: bool,
    /// It is encrypted with IPMsg's extension (duet cannot read it).
    pub encrypted: bool,
    /// An automatic answer (absence message).
    pub auto_reply: bool,
    /// Sent to everyone, not just to us.
    pub broadcast: bool,
}

impl Received<'_> {
    /// Decode the text with [`text::decode`]: text pieces and undecodable bytes, in order.
    pub fn decode(&self, sink: impl FnMut(Piece<'_>)) -> Encoding {
        text::decode(self.text, self.encoding, sink)
    }
}

/// Something the application should show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IpmsgEvent<'a> {
    /// A message, once per sender and packet number.
    Message(Received<'a>),
    /// RECVMSG came back for this message.
    Delivered {
        /// The message.
        id: MessageId,
        /// Whom it was for.
        to: SocketAddr,
    },
    /// No RECVMSG after every retry.
    Failed {
        /// The message.
        id: MessageId,
        /// Whom it was for.
        to: SocketAddr,
        /// How often it was sent.
        sends: u8,
    },
    /// Someone announced themselves (BR_ENTRY or ANSENTRY), or wrote before doing so.
    PeerJoined(&'a Peer),
    /// Someone left (BR_EXIT).
    PeerLeft(&'a Peer),
}

/// Why [`Ipmsg::send_text`] refused a message. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IpmsgSendError {
    /// The text is empty.
    Empty,
    /// The text does not fit one datagram: split it at [`Ipmsg::max_text_len`] bytes.
    TooLong,
    /// [`OUTBOX`] messages are in flight: wait for `Delivered`/`Failed`.
    OutboxFull,
    /// [`Ipmsg::close`] was called.
    Closed,
}

impl core::fmt::Display for IpmsgSendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IpmsgSendError::Empty => "the message is empty",
            IpmsgSendError::TooLong => "the message does not fit one IP Messenger packet",
            IpmsgSendError::OutboxFull => "too many messages waiting for confirmation",
            IpmsgSendError::Closed => "leaving the LAN",
        })
    }
}

impl core::error::Error for IpmsgSendError {}

/// What [`Ipmsg::send_text`] queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Queued {
    /// The message's id, named again by `Delivered`/`Failed`.
    pub id: MessageId,
    /// Its packet number.
    pub packet_no: u64,
    /// The encoding it is written in.
    pub encoding: Encoding,
    /// Characters that encoding cannot write, sent as `?`.
    pub unmappable: usize,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IpmsgStats {
    /// Datagrams handed in.
    pub datagrams_in: u32,
    /// Datagrams written.
    pub datagrams_out: u32,
    /// Longer than [`MAX_DATAGRAM`], dropped whole.
    pub oversized: u32,
    /// Not an IPMsg packet.
    pub malformed: u32,
    /// Our own broadcasts, handed back by the network.
    pub own: u32,
    /// Commands duet does not take part in (files, encryption, host lists).
    pub ignored: u32,
    /// Messages shown.
    pub messages_in: u32,
    /// Retransmitted messages acknowledged again but not shown again.
    pub duplicates: u32,
    /// Retransmissions of our messages.
    pub retransmits: u32,
    /// Peers not listed because the list was full.
    pub peers_dropped: u32,
    /// Answers not sent because their queue was full (the peer retries).
    pub replies_dropped: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    InFlight,
    Delivered,
    Failed,
}

struct Outgoing {
    id: MessageId,
    to: SocketAddr,
    packet_no: u64,
    datagram: Datagram,
    sends: u8,
    /// When to send next (or, after the last send, to give up).
    due: Instant,
    outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// ANSENTRY to a BR_ENTRY.
    Entry,
    /// A BR_ENTRY of our own to one address: makes an unknown sender introduce itself.
    Probe,
    /// BR_ABSENCE to one peer: our nickname again, in its encoding.
    Absence,
    /// RECVMSG for this packet number.
    Received(u64),
    /// READMSG for this (sealed) packet number.
    Read(u64),
    /// SENDINFO.
    Info,
    /// SENDABSENCEINFO.
    AbsenceInfo,
}

#[derive(Clone, Copy, Debug)]
struct Reply {
    to: SocketAddr,
    answer: Answer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broadcast {
    Entry,
    Absence,
    Exit,
}

#[derive(Clone, Copy, Debug)]
struct Announcement {
    what: Broadcast,
    packet_no: u64,
    /// Index of the next broadcast address to send to.
    next: usize,
}

struct Arrival {
    from: SocketAddr,
    name: Name,
    packet_no: u64,
    command: Command,
    encoding: Encoding,
    text: Datagram,
}

struct Me {
    user: Name,
    host: Name,
    nick: Name,
    group: Name,
}

/// IP Messenger protocol version 1 on one UDP socket.
pub struct Ipmsg {
    config: IpmsgConfig,
    me: Me,
    broadcasts: Vec<IpAddr, MAX_BROADCASTS>,
    next_packet_no: u64,
    next_id: u32,
    peers: Vec<Peer, MAX_PEERS>,
    departed: Deque<Peer, DEPARTED>,
    outbox: Vec<Outgoing, OUTBOX>,
    inbox: Deque<Arrival, INBOX>,
    replies: Deque<Reply, REPLIES>,
    announcements: Deque<Announcement, ANNOUNCEMENTS>,
    seen: Deque<(IpAddr, u64), SEEN>,
    own: Deque<u64, OWN>,
    /// Our own addresses and port, when the host knows them.
    own_ips: Vec<IpAddr, MAX_OWN_ADDRESSES>,
    own_port: Option<u16>,
    closing: bool,
    /// The arrival handed out by the last `poll_event`.
    current: Option<Arrival>,
    /// The departed peer handed out by the last `poll_event`.
    current_peer: Option<Peer>,
    stats: IpmsgStats,
}

/// The encoding of peers that state none and set no UTF-8 option.
const fn legacy() -> Encoding {
    #[cfg(feature = "gbk")]
    {
        Encoding::Gbk
    }
    #[cfg(not(feature = "gbk"))]
    {
        Encoding::Utf8
    }
}

/// The encoding a client names (iptux's fourth entry section).
fn named_encoding(name: &[u8]) -> Option<Encoding> {
    let lower = |b: &u8| b.to_ascii_lowercase();
    let is =
        |word: &[u8]| name.len() == word.len() && name.iter().map(lower).eq(word.iter().copied());
    if is(b"utf-8") || is(b"utf8") {
        Some(Encoding::Utf8)
    } else if is(b"gbk") || is(b"gb2312") || is(b"gb18030") || is(b"cp936") || is(b"euc-cn") {
        Some(legacy())
    } else {
        None
    }
}

/// Decode `bytes` in `encoding` into a name, undecodable bytes as U+FFFD, cut at
/// [`NAME_LEN`] bytes on a character boundary.
fn name_of(bytes: &[u8], encoding: Encoding) -> Name {
    let mut name = Name::new();
    let mut push = |s: &str| {
        for c in s.chars() {
            if name.push(c).is_err() {
                return;
            }
        }
    };
    text::decode(bytes, encoding, |piece| match piece {
        Piece::Text(t) => push(t),
        Piece::Invalid(_) => push("\u{fffd}"),
    });
    name
}

/// `text` with `:` replaced (user and host fields end at `:`) and NULs dropped.
fn field_name(text: &str, colon: bool) -> Name {
    let mut name = Name::new();
    for c in text.chars().filter(|c| *c != '\0') {
        let c = if colon && c == ':' { '_' } else { c };
        if name.push(c).is_err() {
            break;
        }
    }
    name
}

/// Encode `text` into `out` in `encoding`; its length and the characters written as `?`, or
/// `None` when it does not fit.
fn encode_into(text: &str, encoding: Encoding, out: &mut [u8]) -> Option<(usize, usize)> {
    if text.is_empty() {
        return Some((0, 0));
    }
    let room = out.len();
    let mut len = 0;
    let mut fits = true;
    let report = text::encode(text, encoding, room.max(text::MIN_PART), |part| {
        match out.get_mut(len..len + part.len()) {
            Some(dst) if fits => {
                dst.copy_from_slice(part);
                len += part.len();
            }
            _ => fits = false,
        }
    })
    .ok()?;
    (fits && report.parts == 1).then_some((len, report.unmappable))
}

/// Whether `text` has a byte outside ASCII.
fn non_ascii(text: &[u8]) -> bool {
    text.iter().any(|b| !b.is_ascii())
}

impl Ipmsg {
    /// Join the LAN as `me`: a BR_ENTRY is queued for each of `broadcasts` (at most
    /// [`MAX_BROADCASTS`]: more are ignored), to [`IpmsgConfig::port`]. `first_packet_no` is the first packet
    /// number; hosts pass the Unix time in seconds, so a restart starts above the last run.
    pub fn new(
        config: IpmsgConfig,
        me: Profile<'_>,
        broadcasts: &[IpAddr],
        first_packet_no: u32,
    ) -> Self {
        let mut ipmsg = Ipmsg {
            config,
            me: Me {
                user: field_name(me.user, true),
                host: field_name(me.host, true),
                nick: field_name(me.nick, false),
                group: field_name(me.group, false),
            },
            broadcasts: broadcasts.iter().copied().take(MAX_BROADCASTS).collect(),
            next_packet_no: u64::from(first_packet_no),
            next_id: 1,
            peers: Vec::new(),
            departed: Deque::new(),
            outbox: Vec::new(),
            inbox: Deque::new(),
            replies: Deque::new(),
            announcements: Deque::new(),
            seen: Deque::new(),
            own: Deque::new(),
            own_ips: Vec::new(),
            own_port: None,
            closing: false,
            current: None,
            current_peer: None,
            stats: IpmsgStats::default(),
        };
        ipmsg.broadcast(Broadcast::Entry);
        ipmsg
    }

    /// The peers on the LAN, in the order they appeared.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The peer at `addr`.
    pub fn peer(&self, addr: SocketAddr) -> Option<&Peer> {
        self.peers.iter().find(|p| p.addr == addr)
    }

    /// Counters.
    pub fn stats(&self) -> IpmsgStats {
        self.stats
    }

    /// Our nickname.
    pub fn nick(&self) -> &str {
        &self.me.nick
    }

    /// Messages sent and not yet confirmed or failed.
    pub fn in_flight(&self) -> usize {
        self.outbox
            .iter()
            .filter(|o| o.outcome == Outcome::InFlight)
            .count()
    }

    /// Whether a message can be queued now.
    pub fn has_room(&self) -> bool {
        !self.outbox.is_full() && !self.closing
    }

    /// Whether answers or announcements wait to be sent.
    pub fn has_pending_transmit(&self) -> bool {
        !self.replies.is_empty() || !self.announcements.is_empty()
    }

    /// The longest text, in UTF-8 bytes, that [`Self::send_text`] takes in one message, in
    /// any encoding (GBK is never longer than UTF-8).
    pub fn max_text_len(&self) -> usize {
        let header = VERSION.len()
            + 1
            + MAX_NUMBER_DIGITS
            + 1
            + self.me.user.len()
            + 1
            + self.me.host.len()
            + 1
            + 10
            + 1
            + 1;
        MAX_DATAGRAM.saturating_sub(header)
    }

    /// Tell which packets are our own broadcasts coming back: those from `port` at one of
    /// `ips` (this machine's addresses; at most [`MAX_OWN_ADDRESSES`] are kept). Without
    /// this, a packet with our names and a recent broadcast number is taken for ours.
    pub fn set_own_addresses(&mut self, ips: &[IpAddr], port: u16) {
        self.own_ips = ips
            .iter()
            .map(|ip| ip.to_canonical())
            .take(MAX_OWN_ADDRESSES)
            .collect();
        self.own_port = Some(port);
    }

    /// Broadcast BR_ENTRY again, as IP Messenger's "refresh" does.
    pub fn announce(&mut self) {
        self.broadcast(Broadcast::Entry);
    }

    /// Ask the client at `addr` (outside the broadcast addresses, or not heard from yet) to
    /// introduce itself: a BR_ENTRY to it alone, which it answers with ANSENTRY.
    pub fn probe(&mut self, addr: SocketAddr) {
        self.reply(addr, Answer::Probe);
    }

    /// Change our nickname and tell everyone (BR_ABSENCE).
    pub fn set_nick(&mut self, nick: &str) {
        self.me.nick = field_name(nick, false);
        self.broadcast(Broadcast::Absence);
    }

    /// Leave: BR_EXIT goes to every broadcast address; no message is accepted after this.
    /// Messages in flight keep being retried: wait until [`Self::in_flight`] is zero first
    /// to see them confirmed.
    pub fn close(&mut self) {
        if !self.closing {
            self.closing = true;
            self.broadcast(Broadcast::Exit);
        }
    }

    /// Queue `text` for `to`, in that peer's encoding (UTF-8 for an address whose encoding
    /// is not known yet).
    pub fn send_text(
        &mut self,
        now: Instant,
        to: SocketAddr,
        text: &str,
    ) -> Result<Queued, IpmsgSendError> {
        if self.closing {
            return Err(IpmsgSendError::Closed);
        }
        if text.is_empty() {
            return Err(IpmsgSendError::Empty);
        }
        if self.outbox.is_full() {
            return Err(IpmsgSendError::OutboxFull);
        }
        let encoding = self.encoding_for(to);
        let mut body = [0u8; MAX_DATAGRAM];
        let (len, unmappable) =
            encode_into(text, encoding, &mut body).ok_or(IpmsgSendError::TooLong)?;
        let mut options = opt::SENDCHECKOPT;
        if encoding == Encoding::Utf8 {
            options |= opt::UTF8OPT;
        }
        let packet_no = self.next_packet_no;
        let datagram = self
            .packet(
                packet_no,
                Command::new(mode::SENDMSG, options),
                encoding,
                body.get(..len).unwrap_or_default(),
                &[],
            )
            .ok_or(IpmsgSendError::TooLong)?;
        self.next_packet_no = self.next_packet_no.wrapping_add(1);
        let id = MessageId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let outgoing = Outgoing {
            id,
            to,
            packet_no,
            datagram,
            sends: 0,
            due: now,
            outcome: Outcome::InFlight,
        };
        // Room was checked above.
        let _ = self.outbox.push(outgoing);
        Ok(Queued {
            id,
            packet_no,
            encoding,
            unmappable,
        })
    }

    /// The next thing to show, if any. It borrows `self` until the next call.
    pub fn poll_event(&mut self) -> Option<IpmsgEvent<'_>> {
        if let Some(i) = self
            .outbox
            .iter()
            .position(|o| o.outcome != Outcome::InFlight)
        {
            let o = self.outbox.remove(i);
            return Some(match o.outcome {
                Outcome::Delivered => IpmsgEvent::Delivered { id: o.id, to: o.to },
                _ => IpmsgEvent::Failed {
                    id: o.id,
                    to: o.to,
                    sends: o.sends,
                },
            });
        }
        if let Some(peer) = self.departed.pop_front() {
            self.current_peer = Some(peer);
            return self.current_peer.as_ref().map(IpmsgEvent::PeerLeft);
        }
        if let Some(i) = self.peers.iter().position(|p| !p.reported) {
            let peer = self.peers.get_mut(i)?;
            peer.reported = true;
            return Some(IpmsgEvent::PeerJoined(peer));
        }
        self.current = self.inbox.pop_front();
        let a = self.current.as_ref()?;
        Some(IpmsgEvent::Message(Received {
            from: a.from,
            name: &a.name,
            packet_no: a.packet_no,
            text: &a.text,
            encoding: a.encoding,
            files: a.command.has(opt::FILEATTACHOPT),
            encrypted: a.command.has(opt::ENCRYPTOPT),
            auto_reply: a.command.has(opt::AUTORETOPT),
            broadcast: a.command.has(opt::BROADCASTOPT),
        }))
    }

    /// What we write to `to` in: its encoding, UTF-8 while unknown.
    fn encoding_for(&self, to: SocketAddr) -> Encoding {
        match self.peer(to).map(|p| p.encoding) {
            Some(Encoding::Auto) | None => Encoding::Utf8,
            Some(e) => e,
        }
    }

    fn take_packet_no(&mut self) -> u64 {
        let n = self.next_packet_no;
        self.next_packet_no = self.next_packet_no.wrapping_add(1);
        n
    }

    fn reply(&mut self, to: SocketAddr, answer: Answer) {
        if self.replies.push_back(Reply { to, answer }).is_err() {
            self.stats.replies_dropped = self.stats.replies_dropped.wrapping_add(1);
        }
    }

    fn broadcast(&mut self, what: Broadcast) {
        if self.broadcasts.is_empty() {
            return;
        }
        let packet_no = self.take_packet_no();
        if self.own.is_full() {
            self.own.pop_front();
        }
        let _ = self.own.push_back(packet_no);
        let announcement = Announcement {
            what,
            packet_no,
            next: 0,
        };
        if self.announcements.push_back(announcement).is_err() {
            self.stats.replies_dropped = self.stats.replies_dropped.wrapping_add(1);
        }
    }

    /// A whole packet from us, with header fields in `encoding`; `None` if it does not fit.
    fn packet(
        &self,
        packet_no: u64,
        command: Command,
        encoding: Encoding,
        extra: &[u8],
        extra2: &[u8],
    ) -> Option<Datagram> {
        let mut user = [0u8; NAME_LEN];
        let mut host = [0u8; NAME_LEN];
        let (user_len, _) = encode_into(&self.me.user, encoding, &mut user)?;
        let (host_len, _) = encode_into(&self.me.host, encoding, &mut host)?;
        let repr = Repr {
            version: Version(VERSION.as_bytes()),
            packet_no,
            user: user.get(..user_len)?,
            host: host.get(..host_len)?,
            command,
            extra,
            extra2,
        };
        let len = repr.buffer_len();
        if len > MAX_DATAGRAM {
            return None;
        }
        let mut datagram = Datagram::new();
        datagram.resize(len, 0).ok()?;
        repr.emit(&mut Packet::new_unchecked(&mut datagram[..]));
        Some(datagram)
    }

    /// An entry-type packet (BR_ENTRY, ANSENTRY, BR_ABSENCE, BR_EXIT): nickname, then group;
    /// in UTF-8 with iptux's sections saying so, else in the peer's encoding.
    fn entry_packet(&self, packet_no: u64, mode: u8, encoding: Encoding) -> Option<Datagram> {
        let mut nick = [0u8; NAME_LEN];
        let (nick_len, _) = encode_into(&self.me.nick, encoding, &mut nick)?;
        let mut extra2 = [0u8; NAME_LEN + 2 + STATED_UTF8.len()];
        let (mut len, _) = encode_into(&self.me.group, encoding, &mut extra2)?;
        let mut options = opt::CAPUTF8OPT;
        if encoding == Encoding::Utf8 {
            options |= opt::UTF8OPT;
            // iptux's third section is an icon name (none: its default) and its fourth the
            // encoding it should write to us in.
            let tail = extra2.get_mut(len..len + 2 + STATED_UTF8.len())?;
            tail[..2].copy_from_slice(&[0, 0]);
            tail[2..].copy_from_slice(STATED_UTF8);
            len += 2 + STATED_UTF8.len();
        }
        self.packet(
            packet_no,
            Command::new(mode, options),
            encoding,
            nick.get(..nick_len)?,
            extra2.get(..len)?,
        )
    }

    fn emit_reply(&mut self, reply: Reply) -> Option<Datagram> {
        let encoding = self.encoding_for(reply.to);
        let packet_no = self.take_packet_no();
        let mut digits = [0u8; MAX_NUMBER_DIGITS];
        let simple = |this: &Self, m: u8, extra: &[u8]| {
            this.packet(packet_no, Command::new(m, 0), encoding, extra, &[])
        };
        match reply.answer {
            Answer::Entry => self.entry_packet(packet_no, mode::ANSENTRY, encoding),
            Answer::Probe => self.entry_packet(packet_no, mode::BR_ENTRY, encoding),
            Answer::Absence => self.entry_packet(packet_no, mode::BR_ABSENCE, encoding),
            Answer::Received(n) => simple(self, mode::RECVMSG, decimal(n, &mut digits)),
            Answer::Read(n) => simple(self, mode::READMSG, decimal(n, &mut digits)),
            Answer::Info => simple(self, mode::SENDINFO, INFO.as_bytes()),
            Answer::AbsenceInfo => simple(self, mode::SENDABSENCEINFO, NOT_ABSENT.as_bytes()),
        }
    }

    /// Whether a packet is one of our own broadcasts coming back: sent from one of our
    /// addresses and our port when [`Self::set_own_addresses`] told them; else a duet
    /// broadcast with our names and one of our recent broadcast packet numbers (which
    /// another duet on the same machine, started in the same second, could also send).
    fn is_own(&self, from: SocketAddr, repr: &Repr<'_>) -> bool {
        if let Some(port) = self.own_port {
            return from.port() == port && self.own_ips.contains(&from.ip().to_canonical());
        }
        matches!(
            repr.command.mode(),
            mode::BR_ENTRY | mode::BR_EXIT | mode::BR_ABSENCE
        ) && repr.version.client() == Client::Duet
            && repr.user == self.me.user.as_bytes()
            && repr.host == self.me.host.as_bytes()
            && self.own.iter().any(|n| *n == repr.packet_no)
    }

    /// A peer as an entry packet describes it.
    fn peer_from_entry(from: SocketAddr, repr: &Repr<'_>) -> Peer {
        let mut sections = repr.sections();
        let group = sections.next().unwrap_or_default();
        let third = sections.next().unwrap_or_default();
        let stated = sections.next().and_then(named_encoding);
        let caputf8 = repr.command.has(opt::CAPUTF8OPT) || repr.command.has(opt::UTF8OPT);
        let encoding = stated.unwrap_or(if caputf8 { Encoding::Utf8 } else { legacy() });
        let text_encoding = if repr.command.has(opt::UTF8OPT) {
            Encoding::Utf8
        } else {
            stated.unwrap_or(legacy())
        };
        let mut peer = Peer {
            addr: from,
            nick: name_of(repr.extra, text_encoding),
            group: name_of(group, text_encoding),
            user: name_of(repr.user, text_encoding),
            host: name_of(repr.host, text_encoding),
            encoding,
            stated: stated.is_some() || caputf8,
            client: repr.version.client(),
            // iptux sets ABSENCEOPT (0x100) on every packet: from iptux it means nothing.
            absent: repr.command.has(opt::ABSENCEOPT) && repr.version.client() != Client::Iptux,
            reported: false,
        };
        // IP Messenger 3 and later: "\nUN:user\nHN:host\nNN:nick\nGN:group" in UTF-8.
        if third.first() == Some(&b'\n') {
            for line in third.split(|b| *b == b'\n') {
                let (key, value) = (line.get(..3).unwrap_or_default(), line.get(3..));
                let value = value.unwrap_or_default();
                let slot = match key {
                    b"UN:" => &mut peer.user,
                    b"HN:" => &mut peer.host,
                    b"NN:" => &mut peer.nick,
                    b"GN:" => &mut peer.group,
                    _ => continue,
                };
                *slot = name_of(value, Encoding::Utf8);
            }
        }
        peer
    }

    /// Add or update the peer an entry packet describes. `rejoined`: report it again.
    fn learn(&mut self, from: SocketAddr, repr: &Repr<'_>, rejoined: bool) {
        let fresh = Self::peer_from_entry(from, repr);
        let gbk_and_not_ascii =
            fresh.encoding != Encoding::Utf8 && non_ascii(self.me.nick.as_bytes());
        match self.peers.iter_mut().find(|p| p.addr == from) {
            Some(peer) => {
                let reported = peer.reported && !rejoined;
                *peer = Peer { reported, ..fresh };
            }
            None => {
                if self.peers.push(fresh).is_err() {
                    self.stats.peers_dropped = self.stats.peers_dropped.wrapping_add(1);
                    return;
                }
                // It read our UTF-8 broadcast as GBK: tell it our nickname again, in GBK.
                if repr.command.mode() == mode::ANSENTRY && gbk_and_not_ascii {
                    self.reply(from, Answer::Absence);
                }
            }
        }
    }

    fn forget_seen(&mut self, ip: IpAddr) {
        let n = self.seen.len();
        // Rotate once through the ring, keeping other senders' entries in order.
        for _ in 0..n {
            if let Some(entry) = self.seen.pop_front()
                && entry.0 != ip
            {
                let _ = self.seen.push_back(entry);
            }
        }
    }

    fn receive_message(&mut self, from: SocketAddr, repr: &Repr<'_>) {
        if repr.command.has(opt::SENDCHECKOPT) {
            self.reply(from, Answer::Received(repr.packet_no));
        }
        let key = (from.ip(), repr.packet_no);
        if self.seen.iter().any(|k| *k == key) {
            self.stats.duplicates = self.stats.duplicates.wrapping_add(1);
            return;
        }
        if self.seen.is_full() {
            self.seen.pop_front();
        }
        let _ = self.seen.push_back(key);
        let utf8 = repr.command.has(opt::UTF8OPT);
        let known = self.peers.iter().position(|p| p.addr == from);
        let index = match known {
            Some(i) => Some(i),
            None => {
                // Someone who wrote before announcing (or whose entry we missed): list them
                // under their login name, and ask them to introduce themselves.
                let user = name_of(
                    repr.user,
                    if utf8 { Encoding::Utf8 } else { Encoding::Auto },
                );
                let peer = Peer {
                    addr: from,
                    nick: Name::new(),
                    group: Name::new(),
                    host: name_of(repr.host, Encoding::Auto),
                    user,
                    encoding: Encoding::Auto,
                    stated: false,
                    client: repr.version.client(),
                    absent: false,
                    reported: false,
                };
                self.reply(from, Answer::Probe);
                match self.peers.push(peer) {
                    Ok(()) => Some(self.peers.len() - 1),
                    Err(_) => {
                        self.stats.peers_dropped = self.stats.peers_dropped.wrapping_add(1);
                        None
                    }
                }
            }
        };
        let peer = index.and_then(|i| self.peers.get_mut(i));
        let encoding = match (&peer, utf8) {
            (_, true) => Encoding::Utf8,
            (Some(p), false) if p.encoding != Encoding::Auto => p.encoding,
            _ => Encoding::Auto,
        };
        let mut name = Name::new();
        if let Some(p) = peer {
            // A guess from the text itself, for a sender that never said.
            if p.encoding == Encoding::Auto && non_ascii(repr.extra) {
                p.encoding = if utf8 || core::str::from_utf8(repr.extra).is_ok() {
                    Encoding::Utf8
                } else {
                    legacy()
                };
            }
            let _ = name.push_str(p.name());
        } else {
            name = name_of(repr.user, Encoding::Auto);
        }
        let Ok(text) = Datagram::from_slice(repr.extra) else {
            return;
        };
        let arrival = Arrival {
            from,
            name,
            packet_no: repr.packet_no,
            command: repr.command,
            encoding,
            text,
        };
        // `wants_datagram` keeps a free slot whenever a datagram is handed in.
        if self.inbox.push_back(arrival).is_ok() {
            self.stats.messages_in = self.stats.messages_in.wrapping_add(1);
            if repr.command.has(opt::SECRETOPT) {
                // Shown at once, so "opened" at once.
                self.reply(from, Answer::Read(repr.packet_no));
            }
        }
    }

    fn confirm(&mut self, from: SocketAddr, repr: &Repr<'_>) {
        let Some(n) = parse_decimal(repr.extra.trim_ascii()) else {
            self.stats.malformed = self.stats.malformed.wrapping_add(1);
            return;
        };
        if let Some(o) = self
            .outbox
            .iter_mut()
            .find(|o| o.packet_no == n && o.to.ip() == from.ip() && o.outcome == Outcome::InFlight)
        {
            o.outcome = Outcome::Delivered;
        }
    }

    fn leave(&mut self, from: SocketAddr) {
        if let Some(i) = self.peers.iter().position(|p| p.addr == from) {
            let peer = self.peers.remove(i);
            if self.departed.is_full() {
                self.departed.pop_front();
            }
            let _ = self.departed.push_back(peer);
        }
    }
}

impl Protocol for Ipmsg {
    fn wants_datagram(&self) -> bool {
        !self.inbox.is_full()
    }

    fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in = self.stats.datagrams_in.wrapping_add(1);
        if datagram.len() > MAX_DATAGRAM {
            self.stats.oversized = self.stats.oversized.wrapping_add(1);
            return;
        }
        let Ok(repr) = Repr::parse(&Packet::new_unchecked(datagram)) else {
            self.stats.malformed = self.stats.malformed.wrapping_add(1);
            return;
        };
        if self.is_own(from, &repr) {
            self.stats.own = self.stats.own.wrapping_add(1);
            return;
        }
        match repr.command.mode() {
            mode::BR_ENTRY => {
                // A (re)start: its packet numbers begin again.
                self.forget_seen(from.ip());
                self.learn(from, &repr, true);
                if !self.closing {
                    self.reply(from, Answer::Entry);
                }
            }
            mode::ANSENTRY | mode::BR_ABSENCE => self.learn(from, &repr, false),
            mode::BR_EXIT => self.leave(from),
            mode::SENDMSG => self.receive_message(from, &repr),
            mode::RECVMSG => self.confirm(from, &repr),
            mode::GETINFO => self.reply(from, Answer::Info),
            mode::GETABSENCEINFO => self.reply(from, Answer::AbsenceInfo),
            _ => self.stats.ignored = self.stats.ignored.wrapping_add(1),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let retries = self.config.retries;
        for o in self.outbox.iter_mut() {
            if o.outcome == Outcome::InFlight && o.sends > retries && o.due <= now {
                o.outcome = Outcome::Failed;
            }
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
        let (dst, datagram) = self.next_transmit(now)?;
        let len = datagram.len();
        buf.get_mut(..len)?.copy_from_slice(&datagram);
        self.stats.datagrams_out = self.stats.datagrams_out.wrapping_add(1);
        Some(Transmit { dst, len })
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.has_pending_transmit() {
            return Some(Instant::ZERO);
        }
        self.outbox
            .iter()
            .filter(|o| o.outcome == Outcome::InFlight)
            .map(|o| o.due)
            .min()
    }
}

impl Ipmsg {
    /// The next datagram due: answers first, then announcements, then messages.
    fn next_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Datagram)> {
        // Bounded: each round removes a reply or advances an announcement.
        for _ in 0..REPLIES + ANNOUNCEMENTS * (MAX_BROADCASTS + 1) + 1 {
            if let Some(reply) = self.replies.pop_front() {
                match self.emit_reply(reply) {
                    Some(d) => return Some((reply.to, d)),
                    None => continue,
                }
            }
            let Some(a) = self.announcements.front_mut() else {
                break;
            };
            let Some(ip) = self.broadcasts.get(a.next).copied() else {
                self.announcements.pop_front();
                continue;
            };
            a.next += 1;
            let (what, packet_no) = (a.what, a.packet_no);
            let dst = SocketAddr::new(ip, self.config.port);
            let m = match what {
                Broadcast::Entry => mode::BR_ENTRY,
                Broadcast::Absence => mode::BR_ABSENCE,
                Broadcast::Exit => mode::BR_EXIT,
            };
            if let Some(d) = self.entry_packet(packet_no, m, Encoding::Utf8) {
                return Some((dst, d));
            }
        }
        let interval = self.config.retry_interval;
        let retries = self.config.retries;
        // One message at a time per peer, in order: iptux acknowledges but drops a packet
        // numbered below one it already showed, so a later message must not overtake.
        let i = (0..self.outbox.len()).find(|&i| {
            let Some(o) = self.outbox.get(i) else {
                return false;
            };
            let waits_its_turn = o.sends == 0
                && self
                    .outbox
                    .iter()
                    .take(i)
                    .any(|e| e.to == o.to && e.outcome == Outcome::InFlight);
            o.outcome == Outcome::InFlight && o.sends <= retries && o.due <= now && !waits_its_turn
        })?;
        let o = self.outbox.get_mut(i)?;
        o.sends = o.sends.saturating_add(1);
        o.due = now + interval;
        if o.sends > 1 {
            self.stats.retransmits = self.stats.retransmits.wrapping_add(1);
        }
        Some((o.to, o.datagram.clone()))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use core::net::Ipv4Addr;
    use std::string::String as StdString;
    use std::vec::Vec as StdVec;

    const BROADCAST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 255));
    const IPTUX: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)), 2425);
    const ME: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)), 2425);
    const OTHER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 3)), 2425);
    const T0: Instant = Instant::from_millis(1_000);

    fn profile(nick: &str) -> Profile<'_> {
        Profile {
            user: "alice",
            host: "box",
            nick,
            group: "lab",
        }
    }

    fn node(nick: &str, first: u32) -> Ipmsg {
        Ipmsg::new(IpmsgConfig::default(), profile(nick), &[BROADCAST], first)
    }

    /// Every datagram due now: (destination, bytes).
    fn drain(ipmsg: &mut Ipmsg, now: Instant) -> StdVec<(SocketAddr, StdVec<u8>)> {
        let mut out = StdVec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        ipmsg.handle_timeout(now);
        while let Some(t) = ipmsg.poll_transmit(now, &mut buf) {
            out.push((t.dst, buf[..t.len].to_vec()));
            assert!(out.len() < 100, "poll_transmit never ends");
        }
        out
    }

    #[derive(Debug, PartialEq)]
    enum Shown {
        Message(SocketAddr, StdString),
        Delivered(MessageId),
        Failed(MessageId, u8),
        Joined(SocketAddr, StdString),
        Left(SocketAddr),
    }

    fn events(ipmsg: &mut Ipmsg) -> StdVec<Shown> {
        let mut shown = StdVec::new();
        while let Some(e) = ipmsg.poll_event() {
            shown.push(match e {
                IpmsgEvent::Message(m) => {
                    let mut text = StdString::new();
                    m.decode(|p| match p {
                        Piece::Text(t) => text.push_str(t),
                        Piece::Invalid(_) => text.push('\u{fffd}'),
                    });
                    Shown::Message(m.from, text)
                }
                IpmsgEvent::Delivered { id, .. } => Shown::Delivered(id),
                IpmsgEvent::Failed { id, sends, .. } => Shown::Failed(id, sends),
                IpmsgEvent::PeerJoined(p) => Shown::Joined(p.addr, p.name().into()),
                IpmsgEvent::PeerLeft(p) => Shown::Left(p.addr),
            });
        }
        shown
    }

    fn parse(bytes: &[u8]) -> Repr<'_> {
        Repr::parse(&Packet::new_unchecked(bytes)).expect("duet wrote a valid packet")
    }

    /// A LAN of duets at `addrs`: broadcasts reach everyone, the sender too, as on a real
    /// network. `lose` decides, per datagram, whether it is lost.
    struct Lan {
        now: Instant,
        nodes: StdVec<(SocketAddr, Ipmsg)>,
        wire: StdVec<(SocketAddr, SocketAddr, StdVec<u8>)>,
    }

    impl Lan {
        fn new(nodes: StdVec<(SocketAddr, Ipmsg)>) -> Self {
            Lan {
                now: T0,
                nodes,
                wire: StdVec::new(),
            }
        }

        /// Move every due datagram once; `lose(from, to, bytes)` drops some.
        fn step(&mut self, lose: &mut dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> bool) {
            let now = self.now;
            let mut flying = StdVec::new();
            for (addr, n) in self.nodes.iter_mut() {
                for (dst, bytes) in drain(n, now) {
                    flying.push((*addr, dst, bytes));
                }
            }
            for (from, dst, bytes) in flying {
                self.wire.push((from, dst, bytes.clone()));
                for (addr, n) in self.nodes.iter_mut() {
                    let reaches =
                        dst == *addr || (dst.ip() == BROADCAST && dst.port() == addr.port());
                    if reaches && !lose(from, *addr, &bytes) {
                        n.handle_datagram(now, from, &bytes);
                    }
                }
            }
        }

        fn run(
            &mut self,
            millis: u64,
            lose: &mut dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> bool,
        ) {
            let end = self.now + Duration::from_millis(millis);
            while self.now <= end {
                self.step(lose);
                self.now += Duration::from_millis(50);
            }
        }

        fn node(&mut self, addr: SocketAddr) -> &mut Ipmsg {
            &mut self.nodes.iter_mut().find(|(a, _)| *a == addr).unwrap().1
        }
    }

    fn lossless() -> impl FnMut(SocketAddr, SocketAddr, &[u8]) -> bool {
        |_, _, _| false
    }

    #[test]
    fn two_duets_find_each_other_and_a_message_is_delivered_when_recvmsg_returns() {
        let mut lan = Lan::new(vec![(ME, node("甲", 100)), (OTHER, node("乙", 500))]);
        lan.run(100, &mut lossless());
        assert_eq!(events(lan.node(ME)), [Shown::Joined(OTHER, "乙".into())]);
        assert_eq!(events(lan.node(OTHER)), [Shown::Joined(ME, "甲".into())]);
        assert_eq!(lan.node(ME).peer(OTHER).unwrap().encoding, Encoding::Utf8);
        let now = lan.now;
        let q = lan.node(ME).send_text(now, OTHER, "你好，乙").unwrap();
        assert_eq!(q.encoding, Encoding::Utf8);
        lan.run(100, &mut lossless());
        assert_eq!(
            events(lan.node(OTHER)),
            [Shown::Message(ME, "你好，乙".into())]
        );
        assert_eq!(events(lan.node(ME)), [Shown::Delivered(q.id)]);
        assert_eq!(lan.node(ME).in_flight(), 0);
        assert_eq!(lan.node(ME).stats().retransmits, 0);
        // The message went out as SENDMSG|SENDCHECKOPT|UTF8OPT and came back as RECVMSG
        // naming its packet number.
        let sent = lan
            .wire
            .iter()
            .map(|(_, _, b)| parse(b))
            .find(|r| r.command.mode() == mode::SENDMSG)
            .unwrap();
        assert_eq!(sent.command.options(), opt::SENDCHECKOPT | opt::UTF8OPT);
        assert_eq!(sent.packet_no, q.packet_no);
        let confirm = lan
            .wire
            .iter()
            .map(|(_, _, b)| parse(b))
            .find(|r| r.command.mode() == mode::RECVMSG)
            .unwrap();
        assert_eq!(confirm.extra, q.packet_no.to_string().as_bytes());
    }

    #[test]
    fn unconfirmed_message_is_sent_four_times_at_ipmsg_pace_then_fails() {
        let mut me = node("me", 1);
        drain(&mut me, T0);
        let q = me.send_text(T0, IPTUX, "anyone?").unwrap();
        let mut sends = StdVec::new();
        let mut failed = None;
        let mut now = T0;
        while now < T0 + Duration::from_secs(10) {
            for (dst, bytes) in drain(&mut me, now) {
                assert_eq!(dst, IPTUX);
                assert_eq!(
                    parse(&bytes).packet_no,
                    q.packet_no,
                    "a retry repeats its number"
                );
                sends.push(now.saturating_duration_since(T0).as_millis());
            }
            for e in events(&mut me) {
                failed.get_or_insert((now.saturating_duration_since(T0).as_millis(), e));
            }
            now += Duration::from_millis(10);
        }
        assert_eq!(sends, [0, 1500, 3000, 4500]);
        assert_eq!(failed, Some((6000, Shown::Failed(q.id, 4))));
        assert_eq!(me.stats().retransmits, 3);
        assert_eq!(me.poll_timeout(), None, "nothing left to do");
    }

    #[test]
    fn lost_recvmsg_brings_a_retransmission_confirmed_again_but_shown_once() {
        let mut lan = Lan::new(vec![(ME, node("me", 10)), (OTHER, node("other", 900))]);
        lan.run(100, &mut lossless());
        events(lan.node(ME));
        events(lan.node(OTHER));
        let now = lan.now;
        let q = lan.node(ME).send_text(now, OTHER, "once").unwrap();
        // The first RECVMSG is lost.
        let mut lost = 0;
        let mut lose = |from: SocketAddr, _: SocketAddr, bytes: &[u8]| {
            let r = parse(bytes);
            if from == OTHER && r.command.mode() == mode::RECVMSG && lost == 0 {
                lost += 1;
                return true;
            }
            false
        };
        lan.run(2_000, &mut lose);
        assert_eq!(events(lan.node(OTHER)), [Shown::Message(ME, "once".into())]);
        assert_eq!(events(lan.node(ME)), [Shown::Delivered(q.id)]);
        assert_eq!(lan.node(OTHER).stats().duplicates, 1);
        assert_eq!(lan.node(ME).stats().retransmits, 1);
    }

    /// iptux 0.8.3's packets as observed (`iptux -l DEBUG`).
    const IPTUX_ENTRY: &[u8] =
        b"1_iptux 0.8.3:1:root:vm:257:Tux\xe4\xbc\x81\xe9\xb9\x85\x00LAN\x00icon-tux.png\x00utf-8\x00";
    const IPTUX_MESSAGE: &[u8] = b"1_iptux 0.8.3:6:root:vm:288:hello from tux\x00";
    const IPTUX_EXIT: &[u8] = b"1_iptux 0.8.3:9:root:vm:65538:\x00";

    #[test]
    fn iptux_entry_is_answered_in_utf8_saying_so_and_its_message_is_confirmed() {
        let mut me = node("双人", 100);
        drain(&mut me, T0);
        me.handle_datagram(T0, IPTUX, IPTUX_ENTRY);
        let answers = drain(&mut me, T0);
        assert_eq!(answers.len(), 1);
        let (dst, bytes) = &answers[0];
        assert_eq!(*dst, IPTUX);
        let ans = parse(bytes);
        assert_eq!(ans.command.mode(), mode::ANSENTRY);
        assert!(ans.command.has(opt::UTF8OPT) && ans.command.has(opt::CAPUTF8OPT));
        assert_eq!(ans.extra, "双人".as_bytes());
        // Group, no icon, and the encoding iptux should write to us in.
        assert_eq!(ans.extra2, b"lab\0\0utf-8");
        assert_eq!(ans.version.client(), Client::Duet);

        let peer = me.peer(IPTUX).unwrap().clone();
        assert_eq!(
            (
                peer.nick.as_str(),
                peer.group.as_str(),
                peer.user.as_str(),
                peer.host.as_str()
            ),
            ("Tux企鹅", "LAN", "root", "vm")
        );
        assert_eq!(
            (peer.encoding, peer.stated, peer.client),
            (Encoding::Utf8, true, Client::Iptux)
        );
        assert!(
            !peer.absent,
            "iptux sets ABSENCEOPT (0x100) on everything: not away"
        );

        me.handle_datagram(T0, IPTUX, IPTUX_MESSAGE);
        let answers = drain(&mut me, T0);
        assert_eq!(answers.len(), 1);
        let recv = parse(&answers[0].1);
        assert_eq!(
            (recv.command.mode(), recv.extra),
            (mode::RECVMSG, &b"6"[..])
        );
        assert_eq!(
            events(&mut me),
            [
                Shown::Joined(IPTUX, "Tux企鹅".into()),
                Shown::Message(IPTUX, "hello from tux".into())
            ]
        );

        // iptux's RECVMSG carries 0x100 (SENDCHECKOPT's bit): it is never acknowledged.
        me.handle_datagram(T0, IPTUX, b"1_iptux 0.8.3:7:root:vm:289:12345\x00");
        assert!(drain(&mut me, T0).is_empty());

        me.handle_datagram(T0, IPTUX, IPTUX_EXIT);
        assert_eq!(events(&mut me), [Shown::Left(IPTUX)]);
        assert!(me.peers().is_empty());
    }

    #[test]
    fn a_restarted_iptux_numbering_from_one_again_is_heard() {
        let mut me = node("me", 100);
        me.handle_datagram(T0, IPTUX, IPTUX_ENTRY);
        me.handle_datagram(T0, IPTUX, b"1_iptux 0.8.3:2:root:vm:288:before\x00");
        // A retransmission of the same number: acknowledged, not shown again.
        me.handle_datagram(T0, IPTUX, b"1_iptux 0.8.3:2:root:vm:288:before\x00");
        // iptux restarts: its entry, then packet numbers from 1 again.
        me.handle_datagram(T0, IPTUX, IPTUX_ENTRY);
        me.handle_datagram(T0, IPTUX, b"1_iptux 0.8.3:2:root:vm:288:after\x00");
        let acks = drain(&mut me, T0)
            .iter()
            .filter(|(_, b)| parse(b).command.mode() == mode::RECVMSG)
            .count();
        assert_eq!(acks, 3, "every SENDCHECKOPT packet is acknowledged");
        let messages: StdVec<_> = events(&mut me)
            .into_iter()
            .filter(|e| matches!(e, Shown::Message(..)))
            .collect();
        assert_eq!(
            messages,
            [
                Shown::Message(IPTUX, "before".into()),
                Shown::Message(IPTUX, "after".into())
            ]
        );
    }

    #[test]
    fn own_broadcast_coming_back_is_not_a_peer_and_numbers_only_grow() {
        let mut lan = Lan::new(vec![(ME, node("me", 4242))]);
        lan.run(100, &mut lossless());
        assert!(lan.node(ME).peers().is_empty());
        assert_eq!(lan.node(ME).stats().own, 1);
        let now = lan.now;
        lan.node(ME).handle_datagram(now, IPTUX, IPTUX_ENTRY);
        lan.node(ME).send_text(now, IPTUX, "a").unwrap();
        lan.node(ME).send_text(now, IPTUX, "b").unwrap();
        lan.node(ME).handle_datagram(now, IPTUX, IPTUX_MESSAGE);
        lan.node(ME).announce();
        lan.run(8_000, &mut lossless());
        // Each packet has a number of its own (a retransmission repeats its packet's), all
        // from the first one on; the messages' numbers grow in the order they are sent.
        let mut firsts: StdVec<(u64, StdVec<u8>)> = StdVec::new();
        let mut messages = StdVec::new();
        for (_, _, b) in &lan.wire {
            let r = parse(b);
            assert!(r.packet_no >= 4242);
            match firsts.iter().find(|(n, _)| *n == r.packet_no) {
                Some((_, earlier)) => assert_eq!(earlier, b, "number {} reused", r.packet_no),
                None => firsts.push((r.packet_no, b.clone())),
            }
            if r.command.mode() == mode::SENDMSG && !messages.contains(&r.packet_no) {
                messages.push(r.packet_no);
            }
        }
        assert_eq!(messages.len(), 2);
        assert!(messages[0] < messages[1]);
        assert!(firsts.len() >= 5, "{}", firsts.len());
    }

    #[test]
    fn a_second_message_to_the_same_peer_waits_for_the_first_to_be_confirmed() {
        let mut me = node("me", 1);
        drain(&mut me, T0);
        me.handle_datagram(T0, IPTUX, IPTUX_ENTRY);
        drain(&mut me, T0);
        let first = me.send_text(T0, IPTUX, "first").unwrap();
        let second = me.send_text(T0, IPTUX, "second").unwrap();
        let third = me.send_text(T0, OTHER, "to someone else").unwrap();
        let sent: StdVec<u64> = drain(&mut me, T0)
            .iter()
            .map(|(_, b)| parse(b).packet_no)
            .collect();
        assert_eq!(sent, [first.packet_no, third.packet_no]);
        let recv = format!("1_iptux 0.8.3:3:root:vm:289:{}\0", first.packet_no);
        me.handle_datagram(T0, IPTUX, recv.as_bytes());
        let sent: StdVec<u64> = drain(&mut me, T0)
            .iter()
            .map(|(_, b)| parse(b).packet_no)
            .collect();
        assert_eq!(sent, [second.packet_no]);
        assert_eq!(events(&mut me).first(), Some(&Shown::Delivered(first.id)));
    }

    #[test]
    fn another_duet_with_our_names_and_packet_numbers_is_not_taken_for_us() {
        // Same login and host names, started in the same second: the same numbers.
        let (mut a, mut b) = (node("a", 700), node("b", 700));
        a.set_own_addresses(&[ME.ip()], ME.port());
        b.set_own_addresses(&[OTHER.ip()], OTHER.port());
        let mut lan = Lan::new(vec![(ME, a), (OTHER, b)]);
        lan.run(100, &mut lossless());
        assert_eq!(events(lan.node(ME)), [Shown::Joined(OTHER, "b".into())]);
        assert_eq!(events(lan.node(OTHER)), [Shown::Joined(ME, "a".into())]);
        assert_eq!(lan.node(ME).stats().own, 1, "its own broadcast still is");
        // Without addresses, only broadcasts are checked against our numbers: an answer
        // (ANSENTRY) that happens to carry one is not taken for ours.
        let mut c = node("c", 800);
        drain(&mut c, T0);
        c.handle_datagram(
            T0,
            OTHER,
            b"1_duet 0.1.0:800:alice:box:25165827:twin\0\0\0utf-8\0",
        );
        assert_eq!(c.peers().len(), 1);
    }

    #[test]
    fn sender_never_announced_is_listed_by_login_name_and_asked_to_introduce_itself() {
        let mut me = node("me", 1);
        drain(&mut me, T0);
        me.handle_datagram(T0, OTHER, b"1:77:bob:PC:288:hi there\x00");
        let out = drain(&mut me, T0);
        let modes: StdVec<u8> = out.iter().map(|(_, b)| parse(b).command.mode()).collect();
        assert_eq!(modes, [mode::RECVMSG, mode::BR_ENTRY]);
        assert!(out.iter().all(|(dst, _)| *dst == OTHER));
        assert_eq!(
            events(&mut me),
            [
                Shown::Joined(OTHER, "bob".into()),
                Shown::Message(OTHER, "hi there".into())
            ]
        );
        // Its ANSENTRY then fills in the rest.
        me.handle_datagram(T0, OTHER, b"1:78:bob:PC:16777219:Bobby\x00dev\x00");
        assert_eq!(me.peer(OTHER).unwrap().nick.as_str(), "Bobby");
        assert_eq!(me.peers().len(), 1);
    }

    #[test]
    fn garbage_and_oversized_datagrams_are_counted_never_answered() {
        let mut me = node("me", 1);
        drain(&mut me, T0);
        for junk in [
            &b""[..],
            b"hello",
            b"1:x:u:h:32:hi",
            b"\xff\xfe:::",
            b"1:1:u:h:",
        ] {
            me.handle_datagram(T0, OTHER, junk);
        }
        me.handle_datagram(T0, OTHER, &[b'1'; MAX_DATAGRAM + 1]);
        // File transfer and encryption requests: not taken part in.
        me.handle_datagram(T0, OTHER, b"1:5:u:h:114:\x00");
        me.handle_datagram(T0, OTHER, b"1:6:u:h:96:1:2:0\x00");
        assert!(drain(&mut me, T0).is_empty());
        assert!(events(&mut me).is_empty());
        let s = me.stats();
        assert_eq!((s.malformed, s.oversized, s.ignored), (5, 1, 2));
        assert!(me.peers().is_empty());
    }

    #[test]
    fn text_longer_than_one_packet_is_refused_and_max_text_len_always_fits() {
        // The longest numbers and names there are: max_text_len must still fit.
        let long_name: StdString = "n".repeat(NAME_LEN);
        let mut me = Ipmsg::new(
            IpmsgConfig::default(),
            Profile {
                user: &long_name,
                host: &long_name,
                nick: "me",
                group: "",
            },
            &[],
            u32::MAX,
        );
        me.next_packet_no = u64::MAX - 10;
        me.handle_datagram(T0, IPTUX, IPTUX_ENTRY);
        let max = me.max_text_len();
        assert!(max > 800, "{max}");
        let fits: StdString = "界".repeat(max / 3);
        me.send_text(T0, IPTUX, &fits).unwrap();
        let ascii: StdString = "x".repeat(max);
        me.send_text(T0, OTHER, &ascii).unwrap();
        let too_long: StdString = "x".repeat(MAX_DATAGRAM);
        assert_eq!(
            me.send_text(T0, IPTUX, &too_long),
            Err(IpmsgSendError::TooLong)
        );
        assert_eq!(me.send_text(T0, IPTUX, ""), Err(IpmsgSendError::Empty));
        for (_, bytes) in drain(&mut me, T0) {
            assert!(bytes.len() <= MAX_DATAGRAM);
        }
    }

    #[test]
    fn close_broadcasts_exit_and_refuses_new_messages() {
        let mut me = Ipmsg::new(
            IpmsgConfig::default(),
            profile("me"),
            &[BROADCAST, IpAddr::V4(Ipv4Addr::new(192, 168, 1, 255))],
            1,
        );
        let entries = drain(&mut me, T0);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            parse(&entries[0].1).packet_no,
            parse(&entries[1].1).packet_no
        );
        me.close();
        assert!(me.has_pending_transmit());
        let exits = drain(&mut me, T0);
        let dsts: StdVec<SocketAddr> = exits.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            dsts,
            [
                SocketAddr::new(BROADCAST, 2425),
                "192.168.1.255:2425".parse().unwrap()
            ]
        );
        assert!(
            exits
                .iter()
                .all(|(_, b)| parse(b).command.mode() == mode::BR_EXIT)
        );
        assert_eq!(me.send_text(T0, IPTUX, "late"), Err(IpmsgSendError::Closed));
        assert!(!me.has_pending_transmit());
    }

    #[test]
    fn user_and_host_cannot_break_the_header() {
        let mut me = Ipmsg::new(
            IpmsgConfig::default(),
            Profile {
                user: "a:b",
                host: "c:d\0",
                nick: "n:ick",
                group: "",
            },
            &[BROADCAST],
            1,
        );
        let out = drain(&mut me, T0);
        let entry = parse(&out[0].1);
        assert_eq!(
            (entry.user, entry.host, entry.extra),
            (&b"a_b"[..], &b"c_d"[..], &b"n:ick"[..])
        );
    }

    #[cfg(feature = "gbk")]
    #[test]
    fn feiq_without_utf8_options_is_read_and_written_in_gbk() {
        // FeiQ's entry: extended version field, no CAPUTF8OPT, nickname "小明" in GBK.
        let feiq = b"1_lbt4_0#128#001A73261837#0#0#0:1700000001:xm:XM-PC:1:\xd0\xa1\xc3\xf7\x00\xbf\xaa\xb7\xa2\x00";
        let mut me = node("双人", 1);
        drain(&mut me, T0);
        me.handle_datagram(T0, OTHER, feiq);
        let peer = me.peer(OTHER).unwrap();
        assert_eq!((peer.nick.as_str(), peer.group.as_str()), ("小明", "开发"));
        assert_eq!((peer.encoding, peer.client), (Encoding::Gbk, Client::FeiQ));
        // Our ANSENTRY to it is GBK, without UTF8OPT or iptux's sections.
        let out = drain(&mut me, T0);
        let ans = parse(&out[0].1);
        assert_eq!(ans.command.mode(), mode::ANSENTRY);
        assert!(!ans.command.has(opt::UTF8OPT));
        assert_eq!(ans.extra, [0xcb, 0xab, 0xc8, 0xcb]);
        assert_eq!(ans.extra2, b"lab");
        // Its GBK message reads as Chinese; ours to it goes out in GBK.
        me.handle_datagram(
            T0,
            OTHER,
            b"1_lbt4_0#128#001A73261837#0#0#0:1700000002:xm:XM-PC:288:\xc4\xe3\xba\xc3\x00",
        );
        let q = me.send_text(T0, OTHER, "你好").unwrap();
        assert_eq!(q.encoding, Encoding::Gbk);
        let out = drain(&mut me, T0);
        let msg = out
            .iter()
            .map(|(_, b)| parse(b))
            .find(|r| r.command.mode() == mode::SENDMSG)
            .unwrap();
        assert_eq!(msg.extra, [0xc4, 0xe3, 0xba, 0xc3]);
        assert!(!msg.command.has(opt::UTF8OPT));
        let shown = events(&mut me);
        assert!(
            shown.contains(&Shown::Message(OTHER, "你好".into())),
            "{shown:?}"
        );
    }

    #[cfg(feature = "gbk")]
    #[test]
    fn feiq_answering_our_broadcast_gets_our_nickname_again_in_gbk() {
        let mut me = node("双人", 1);
        drain(&mut me, T0);
        me.handle_datagram(
            T0,
            OTHER,
            b"1_lbt4_0#128#001A73261837#0#0#0:9:xm:XM-PC:3:xm\x00\x00",
        );
        let out = drain(&mut me, T0);
        assert_eq!(out.len(), 1);
        let absence = parse(&out[0].1);
        assert_eq!(absence.command.mode(), mode::BR_ABSENCE);
        assert_eq!(absence.extra, [0xcb, 0xab, 0xc8, 0xcb]);
    }

    #[cfg(feature = "gbk")]
    #[test]
    fn utf8opt_on_a_packet_wins_over_the_peers_encoding() {
        let mut me = node("me", 1);
        me.handle_datagram(T0, OTHER, b"1:1:xm:PC:1:xm\x00\x00");
        assert_eq!(me.peer(OTHER).unwrap().encoding, Encoding::Gbk);
        me.handle_datagram(T0, OTHER, "1:2:xm:PC:8388896:中文\0".as_bytes());
        let shown = events(&mut me);
        assert!(
            shown.contains(&Shown::Message(OTHER, "中文".into())),
            "{shown:?}"
        );
    }

    #[test]
    fn ipmsg_utf8_section_names_win_over_the_legacy_ones() {
        let mut me = node("me", 1);
        me.handle_datagram(
            T0,
            OTHER,
            b"1:1700000000:taro:PC1:16777217:taro\0dev\0\nUN:taro\nHN:PC1\nNN:\xe5\xa4\xaa\xe9\x83\x8e\nGN:\xe9\x96\x8b\xe7\x99\xba\0",
        );
        let p = me.peer(OTHER).unwrap();
        assert_eq!((p.nick.as_str(), p.group.as_str()), ("太郎", "開発"));
        assert_eq!(p.encoding, Encoding::Utf8, "CAPUTF8OPT: it reads UTF-8");
    }
}
