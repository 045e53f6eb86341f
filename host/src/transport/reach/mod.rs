//! Reaching a paired peer when both people sit behind home NAT routers.
//!
//! duet's chat socket is one UDP socket. To be reached from outside, a running duet
//! gathers *candidates*, addresses at which the peer might reach that socket, and
//! publishes them where only the peer can find and read them:
//!
//! - [`stun`]: the socket's public mapping, learnt with STUN Binding requests sent on the
//!   chat socket itself (sans-IO; the chat loop moves the datagrams).
//! - [`portmap`]: UPnP-IGD and NAT-PMP/PCP port mappings of the chat port on the home
//!   router, requested, renewed and removed on a background thread.
//! - [`turn`]: a TURN relay allocation on the chat socket (sans-IO), when configured; also
//!   the fallback path when no direct path works (symmetric NAT).
//! - [`rendezvous`]: pure functions that derive, from the pair's shared secret and the
//!   hour, where on the DHT a record lives and the key that seals it.
//! - [`dht`]: the Mainline DHT (BEP 44 mutable items) on background threads: publish a
//!   sealed record, look one up, and run a DHT node for private networks.
//!
//! # Contracts
//!
//! - Nothing here blocks the caller for network I/O: sans-IO types take `now` and bytes and
//!   hand back datagrams to send; DNS look-ups, DHT queries and router requests run on
//!   threads this module starts, and report through a [`Pending`] value or a channel.
//! - Nothing received from the network can make this module panic; every loop and every wait
//!   is bounded by a constant of the module it is in.
//! - Configuration ([`ReachConfig`]) is parsed from the environment's strings only; the
//!   default servers below are constants and no test contacts them.
//!
//! # How the chat loop uses it
//!
//! On start: [`ReachConfig::from_env`]; unless `dht` is off, [`dht::Rendezvous::spawn`];
//! [`portmap::PortMapper::spawn`] for the chat port; one [`stun::BindingProbe`] per
//! resolved STUN server; a [`turn::Relay`] if configured. Every received datagram is first
//! offered to [`Demux::classify`]: duet's own datagrams go to the session, STUN messages to
//! the probes and the relay, ChannelData to the relay. Whenever the candidate set changes
//! (or the hour turns) it publishes [`dht::Rendezvous::publish_candidates`]; when the peer
//! has no working address it calls [`dht::Rendezvous::lookup_candidates`] and tries the
//! addresses it gets back, punching from both sides at once, and falls back to the relay.
//! On exit it calls [`portmap::PortMapper::shutdown`] and [`turn::Relay::close`] (sending
//! what the relay then queues), so the router and the TURN server free what they hold.

use std::fmt;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

pub mod dht;
pub mod portmap;
pub mod rendezvous;
pub mod stack;
pub mod stun;
pub mod turn;

/// The public Mainline DHT bootstrap nodes, used when `DUET_DHT_BOOTSTRAP` is not set.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// Public STUN servers, used when `DUET_STUN` is not set.
pub const DEFAULT_STUN: &[&str] = &[
    "stun.l.google.com:19302",
    "stun.cloudflare.com:3478",
    "stun.nextcloud.com:3478",
];

/// Environment variable: comma-separated `HOST:PORT` DHT bootstrap nodes.
pub const ENV_BOOTSTRAP: &str = "DUET_DHT_BOOTSTRAP";
/// Environment variable: comma-separated `HOST:PORT` STUN servers (empty: none).
pub const ENV_STUN: &str = "DUET_STUN";
/// Environment variable: `USER:PASS@HOST:PORT` of a TURN server.
pub const ENV_TURN: &str = "DUET_TURN";
/// Environment variable: `off` turns the DHT rendezvous off.
pub const ENV_DHT: &str = "DUET_DHT";

/// How a candidate address came about. The discriminants are the record's wire tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum CandidateKind {
    /// An address of one of this machine's interfaces: reachable on the same LAN.
    Lan = 1,
    /// The chat socket's public mapping as a STUN server saw it.
    Stun = 2,
    /// A port mapping the home router made on request (UPnP-IGD, NAT-PMP or PCP).
    Mapped = 3,
    /// A TURN relay's address: always works, costs the relay's bandwidth.
    Relay = 4,
}

impl CandidateKind {
    /// The kind with wire tag `tag`.
    pub fn from_tag(tag: u8) -> Option<CandidateKind> {
        match tag {
            1 => Some(CandidateKind::Lan),
            2 => Some(CandidateKind::Stun),
            3 => Some(CandidateKind::Mapped),
            4 => Some(CandidateKind::Relay),
            _ => None,
        }
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CandidateKind::Lan => "lan",
            CandidateKind::Stun => "stun",
            CandidateKind::Mapped => "mapped",
            CandidateKind::Relay => "relay",
        })
    }
}

/// An address at which the peer might reach our chat socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Where to send.
    pub addr: SocketAddr,
    /// How we learnt it.
    pub kind: CandidateKind,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, self.kind)
    }
}

/// A TURN server and its long-term credentials (`DUET_TURN=USER:PASS@HOST:PORT`).
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
    /// `HOST:PORT` of the server, not yet resolved.
    pub server: String,
}

impl fmt::Debug for TurnConfig {
    /// The password stays out of debug output and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("user", &self.user)
            .field("password", &"****")
            .field("server", &self.server)
            .finish()
    }
}

impl std::str::FromStr for TurnConfig {
    type Err = ReachError;

    /// Parse `USER:PASS@HOST:PORT`. The user name ends at the first `:`, the password at
    /// the last `@`, so a password may hold `:` and `@`.
    fn from_str(text: &str) -> Result<TurnConfig, ReachError> {
        let bad = |reason: &'static str| ReachError::BadTurn { reason };
        let (credentials, server) = text
            .rsplit_once('@')
            .ok_or(bad("expected USER:PASS@HOST:PORT (no '@')"))?;
        let (user, password) = credentials
            .split_once(':')
            .ok_or(bad("expected USER:PASS before '@' (no ':')"))?;
        if user.is_empty() {
            return Err(bad("the user name is empty"));
        }
        if password.is_empty() {
            return Err(bad("the password is empty"));
        }
        let server = parse_host_port(ENV_TURN, server)?;
        Ok(TurnConfig {
            user: user.to_owned(),
            password: password.to_owned(),
            server,
        })
    }
}

/// What reaching a peer behind NAT may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReachConfig {
    /// Publish and look up candidates on the Mainline DHT (`DUET_DHT=off` turns it off).
    pub dht: bool,
    /// DHT bootstrap nodes, `HOST:PORT` each.
    pub bootstrap: Vec<String>,
    /// STUN servers, `HOST:PORT` each; empty: no STUN.
    pub stun: Vec<String>,
    /// The TURN server, if any.
    pub turn: Option<TurnConfig>,
}

impl Default for ReachConfig {
    /// DHT on with the public bootstrap nodes, the public STUN servers, no TURN.
    fn default() -> Self {
        ReachConfig {
            dht: true,
            bootstrap: DEFAULT_BOOTSTRAP.iter().map(|s| (*s).to_owned()).collect(),
            stun: DEFAULT_STUN.iter().map(|s| (*s).to_owned()).collect(),
            turn: None,
        }
    }
}

impl ReachConfig {
    /// The configuration from `DUET_DHT`, `DUET_DHT_BOOTSTRAP`, `DUET_STUN` and
    /// `DUET_TURN`; an unset variable keeps its default.
    pub fn from_env() -> Result<ReachConfig, ReachError> {
        let var = |name: &'static str| -> Result<Option<String>, ReachError> {
            match std::env::var(name) {
                Ok(value) => Ok(Some(value)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => Err(ReachError::NotUnicode { var: name }),
            }
        };
        ReachConfig::from_vars(
            var(ENV_DHT)?.as_deref(),
            var(ENV_BOOTSTRAP)?.as_deref(),
            var(ENV_STUN)?.as_deref(),
            var(ENV_TURN)?.as_deref(),
        )
    }

    /// The configuration from the variables' values (`None`: not set), in the order
    /// `DUET_DHT`, `DUET_DHT_BOOTSTRAP`, `DUET_STUN`, `DUET_TURN`.
    ///
    /// `DUET_DHT` takes `on`/`off` (also `1`/`0`, `true`/`false`, `yes`/`no`). The lists are
    /// comma-separated `HOST:PORT` (spaces around items are ignored); an empty
    /// `DUET_STUN` means no STUN, an empty `DUET_DHT_BOOTSTRAP` is an error (a DHT node with
    /// nobody to ask finds nothing: say `DUET_DHT=off` instead). An empty `DUET_TURN` means no
    /// TURN.
    pub fn from_vars(
        dht: Option<&str>,
        bootstrap: Option<&str>,
        stun: Option<&str>,
        turn: Option<&str>,
    ) -> Result<ReachConfig, ReachError> {
        let mut config = ReachConfig::default();
        if let Some(text) = dht {
            config.dht = match text.trim().to_ascii_lowercase().as_str() {
                "on" | "1" | "true" | "yes" => true,
                "off" | "0" | "false" | "no" => false,
                _ => return Err(ReachError::BadSwitch { var: ENV_DHT }),
            };
        }
        if let Some(text) = bootstrap {
            config.bootstrap = parse_list(ENV_BOOTSTRAP, text)?;
            if config.bootstrap.is_empty() {
                return Err(ReachError::EmptyBootstrap);
            }
        }
        if let Some(text) = stun {
            config.stun = parse_list(ENV_STUN, text)?;
        }
        if let Some(text) = turn.map(str::trim).filter(|t| !t.is_empty()) {
            config.turn = Some(text.parse()?);
        }
        Ok(config)
    }
}

/// Parse a comma-separated list of `HOST:PORT`.
fn parse_list(var: &'static str, text: &str) -> Result<Vec<String>, ReachError> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| parse_host_port(var, item))
        .collect()
}

/// Check that `text` is `HOST:PORT` (an IPv6 host in brackets) with a port from 1 to
/// 65535, without resolving the host; returns it trimmed.
pub fn parse_host_port(var: &'static str, text: &str) -> Result<String, ReachError> {
    let text = text.trim();
    let bad = |reason: &'static str| ReachError::BadHostPort {
        var,
        text: text.to_owned(),
        reason,
    };
    let (host, port) = text.rsplit_once(':').ok_or(bad("no ':PORT'"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number up to 65535"))?;
    if port == 0 {
        return Err(bad("the port is 0"));
    }
    let host = match host.strip_prefix('[') {
        Some(inner) => {
            let inner = inner
                .strip_suffix(']')
                .ok_or(bad("no ']' after an IPv6 address"))?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address between '[' and ']'"))?;
            inner
        }
        None if host.contains(':') => {
            return Err(bad("an IPv6 address needs brackets: [ADDR]:PORT"));
        }
        None => host,
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return Err(bad("the host is not a name or an address"));
    }
    Ok(text.to_owned())
}

/// What a datagram on the chat socket is, by its first bytes (see [`Demux::classify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demux {
    /// duet's own datagram (first byte `0x64`, `'d'`): for the session.
    Duet,
    /// A STUN message (RFC 8489): for the binding probes and the TURN relay.
    Stun,
    /// TURN ChannelData (first byte `0x40..=0x7F`): for the TURN relay.
    ChannelData,
    /// Anything else: drop it.
    Other,
}

impl Demux {
    /// Classify a datagram received on the chat socket. The three kinds cannot be mistaken
    /// for each other: STUN starts with two zero bits and carries the magic cookie,
    /// ChannelData starts with the bits `01`, and duet's datagrams start with `0x64`, which
    /// ChannelData would read as channel `0x64xx`, a number outside ChannelData's
    /// `0x4000..=0x4FFF` range that no server assigns.
    pub fn classify(datagram: &[u8]) -> Demux {
        match datagram.first() {
            Some(&DUET_FIRST_BYTE) => Demux::Duet,
            Some(_) if stun::is_stun(datagram) => Demux::Stun,
            Some(_) if turn::is_channel_data(datagram) => Demux::ChannelData,
            _ => Demux::Other,
        }
    }
}

/// The first byte of every duet datagram.
pub const DUET_FIRST_BYTE: u8 = 0x64;

/// The result of work done on a background thread: poll it from the chat loop with
/// [`Pending::try_take`], or wait a bounded time with [`Pending::wait`].
#[derive(Debug)]
pub struct Pending<T> {
    receiver: mpsc::Receiver<T>,
}

impl<T> Pending<T> {
    /// A pending result and the sender its worker reports through.
    pub(crate) fn new() -> (mpsc::SyncSender<T>, Pending<T>) {
        let (sender, receiver) = mpsc::sync_channel(1);
        (sender, Pending { receiver })
    }

    /// The result, if it has come; `Err(Gone)` if the worker ended without one.
    pub fn try_take(&self) -> Result<Option<T>, ReachError> {
        match self.receiver.try_recv() {
            Ok(value) => Ok(Some(value)),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(ReachError::WorkerGone),
        }
    }

    /// Wait at most `timeout` for the result.
    pub fn wait(&self, timeout: Duration) -> Result<T, ReachError> {
        match self.receiver.recv_timeout(timeout) {
            Ok(value) => Ok(value),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ReachError::TimedOut),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ReachError::WorkerGone),
        }
    }
}

/// Why reaching through NAT did not work, or could not be configured.
#[derive(Debug)]
pub enum ReachError {
    /// `DUET_TURN` is not `USER:PASS@HOST:PORT`.
    BadTurn {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An item of a `HOST:PORT` list is not `HOST:PORT`.
    BadHostPort {
        /// The variable it came from.
        var: &'static str,
        /// The item.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `DUET_DHT` is neither on nor off.
    BadSwitch {
        /// The variable.
        var: &'static str,
    },
    /// `DUET_DHT_BOOTSTRAP` lists no node.
    EmptyBootstrap,
    /// A variable's value is not valid Unicode.
    NotUnicode {
        /// The variable.
        var: &'static str,
    },
    /// A name did not resolve to an address (or to none of the needed family).
    Resolve {
        /// The name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A rendezvous record could not be built or opened.
    Record(rendezvous::RecordError),
    /// The DHT refused or failed an operation.
    Dht(String),
    /// The router refused or failed a port mapping.
    PortMap(String),
    /// The TURN client refused an operation.
    Turn(String),
    /// A socket or thread could not be set up.
    Io(std::io::Error),
    /// The system's random generator failed.
    Random,
    /// Too many operations already in flight; try again later.
    Busy,
    /// A bounded wait ran out.
    TimedOut,
    /// A background worker ended without an answer.
    WorkerGone,
}

impl fmt::Display for ReachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReachError::BadTurn { reason } => write!(f, "{ENV_TURN}: {reason}"),
            ReachError::BadHostPort { var, text, reason } => {
                write!(f, "{var}: {text:?} is not HOST:PORT: {reason}")
            }
            ReachError::BadSwitch { var } => write!(f, "{var}: expected on or off"),
            ReachError::EmptyBootstrap => write!(
                f,
                "{ENV_BOOTSTRAP} lists no node (set {ENV_DHT}=off to do without the DHT)"
            ),
            ReachError::NotUnicode { var } => write!(f, "{var} is not valid Unicode"),
            ReachError::Resolve { name, source } => write!(f, "cannot resolve {name}: {source}"),
            ReachError::Record(e) => write!(f, "rendezvous record: {e}"),
            ReachError::Dht(e) => write!(f, "DHT: {e}"),
            ReachError::PortMap(e) => write!(f, "port mapping: {e}"),
            ReachError::Turn(e) => write!(f, "TURN: {e}"),
            ReachError::Io(e) => write!(f, "{e}"),
            ReachError::Random => f.write_str("no randomness from the system"),
            ReachError::Busy => f.write_str("too many operations in flight"),
            ReachError::TimedOut => f.write_str("no answer in time"),
            ReachError::WorkerGone => f.write_str("a background worker stopped"),
        }
    }
}

impl std::error::Error for ReachError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReachError::Resolve { source, .. } => Some(source),
            ReachError::Record(e) => Some(e),
            ReachError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rendezvous::RecordError> for ReachError {
    fn from(e: rendezvous::RecordError) -> Self {
        ReachError::Record(e)
    }
}

impl From<std::io::Error> for ReachError {
    fn from(e: std::io::Error) -> Self {
        ReachError::Io(e)
    }
}

/// Resolve `HOST:PORT` names on a background thread (DNS blocks). The result holds the
/// addresses of the names that resolved, in order, IPv4 first for each name; names that
/// fail are left out.
pub fn resolve_in_background(names: Vec<String>) -> Result<Pending<Vec<SocketAddr>>, ReachError> {
    let (sender, pending) = Pending::new();
    std::thread::Builder::new()
        .name("duet-resolve".into())
        .spawn(move || {
            let addrs = names
                .iter()
                .filter_map(|name| resolve(name).ok())
                .flatten()
                .collect();
            // The receiver may be gone: then nobody wants the answer.
            let _ = sender.send(addrs);
        })?;
    Ok(pending)
}

/// The addresses of `HOST:PORT`, IPv4 first (most home networks have no working IPv6
/// route even where a name has an AAAA record). Blocks for DNS.
pub fn resolve(name: &str) -> Result<Vec<SocketAddr>, ReachError> {
    use std::net::ToSocketAddrs;
    let mut addrs: Vec<SocketAddr> = name
        .to_socket_addrs()
        .map_err(|source| ReachError::Resolve {
            name: name.to_owned(),
            source,
        })?
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_nothing_is_set() {
        let config = ReachConfig::from_vars(None, None, None, None).unwrap();
        assert_eq!(config, ReachConfig::default());
        assert!(config.dht);
        assert_eq!(config.bootstrap.len(), DEFAULT_BOOTSTRAP.len());
        assert!(config.stun.iter().any(|s| s == "stun.l.google.com:19302"));
        assert_eq!(config.turn, None);
    }

    #[test]
    fn dht_switch() {
        for off in ["off", "OFF", " 0 ", "false", "no"] {
            assert!(
                !ReachConfig::from_vars(Some(off), None, None, None)
                    .unwrap()
                    .dht
            );
        }
        for on in ["on", "1", "true", "Yes"] {
            assert!(
                ReachConfig::from_vars(Some(on), None, None, None)
                    .unwrap()
                    .dht
            );
        }
        let err = ReachConfig::from_vars(Some("maybe"), None, None, None).unwrap_err();
        assert_eq!(err.to_string(), "DUET_DHT: expected on or off");
    }

    #[test]
    fn lists_are_comma_separated_host_ports() {
        let config = ReachConfig::from_vars(
            None,
            Some("127.0.0.1:6881, node.example:6881 ,[::1]:7000"),
            Some(""),
            None,
        )
        .unwrap();
        assert_eq!(
            config.bootstrap,
            ["127.0.0.1:6881", "node.example:6881", "[::1]:7000"]
        );
        assert!(config.stun.is_empty(), "an empty DUET_STUN turns STUN off");
    }

    #[test]
    fn bad_host_ports_say_what_is_wrong() {
        let cases = [
            ("example.org", "no ':PORT'"),
            ("example.org:0", "the port is 0"),
            ("example.org:70000", "the port is not a number up to 65535"),
            (":3478", "the host is empty"),
            ("::1:3478", "an IPv6 address needs brackets: [ADDR]:PORT"),
            ("[::1:3478", "no ']' after an IPv6 address"),
            ("[nope]:3478", "not an IPv6 address between '[' and ']'"),
        ];
        for (text, reason) in cases {
            match ReachConfig::from_vars(None, None, Some(text), None) {
                Err(ReachError::BadHostPort { var, reason: r, .. }) => {
                    assert_eq!((var, r), (ENV_STUN, reason), "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            ReachConfig::from_vars(None, Some(" , "), None, None),
            Err(ReachError::EmptyBootstrap)
        ));
    }

    #[test]
    fn turn_credentials() {
        let config =
            ReachConfig::from_vars(None, None, None, Some("alice:s3:cr@t@turn.example:3478"))
                .unwrap();
        let turn = config.turn.unwrap();
        assert_eq!(turn.user, "alice");
        assert_eq!(
            turn.password, "s3:cr@t",
            "the password may hold ':' and '@'"
        );
        assert_eq!(turn.server, "turn.example:3478");
        assert!(
            !format!("{turn:?}").contains("s3:cr"),
            "no password in debug output"
        );

        assert_eq!(
            ReachConfig::from_vars(None, None, None, Some(""))
                .unwrap()
                .turn,
            None
        );
        let errors = [
            (
                "alice:pw",
                "DUET_TURN: expected USER:PASS@HOST:PORT (no '@')",
            ),
            (
                "alice@h:1",
                "DUET_TURN: expected USER:PASS before '@' (no ':')",
            ),
            (":pw@h:1", "DUET_TURN: the user name is empty"),
            ("alice:@h:1", "DUET_TURN: the password is empty"),
            (
                "alice:pw@h",
                "DUET_TURN: \"h\" is not HOST:PORT: no ':PORT'",
            ),
        ];
        for (text, message) in errors {
            let err = ReachConfig::from_vars(None, None, None, Some(text)).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn candidate_kind_tags_round_trip() {
        for kind in [
            CandidateKind::Lan,
            CandidateKind::Stun,
            CandidateKind::Mapped,
            CandidateKind::Relay,
        ] {
            assert_eq!(CandidateKind::from_tag(kind as u8), Some(kind));
        }
        assert_eq!(CandidateKind::from_tag(0), None);
        assert_eq!(CandidateKind::from_tag(5), None);
    }

    #[test]
    fn demux_tells_the_three_kinds_apart() {
        let stun = stun::binding_request([7; 12]);
        assert_eq!(Demux::classify(&stun), Demux::Stun);
        assert_eq!(Demux::classify(b"duet\x01hello"), Demux::Duet);
        assert_eq!(
            Demux::classify(&[0x40, 0x00, 0x00, 0x01, 0xaa]),
            Demux::ChannelData
        );
        assert_eq!(Demux::classify(&[]), Demux::Other);
        assert_eq!(Demux::classify(&[0x00, 0x01]), Demux::Other);
        assert_eq!(Demux::classify(&[0xff; 30]), Demux::Other);
    }

    #[test]
    fn names_resolve_in_the_background() {
        // Literal addresses only: no DNS traffic from tests.
        let pending =
            resolve_in_background(vec!["127.0.0.1:3478".into(), "[::1]:19302".into()]).unwrap();
        let addrs = pending.wait(Duration::from_secs(5)).unwrap();
        assert_eq!(
            addrs,
            [
                "127.0.0.1:3478".parse::<SocketAddr>().unwrap(),
                "[::1]:19302".parse().unwrap()
            ]
        );
        assert!(matches!(
            resolve("no port"),
            Err(ReachError::Resolve { .. })
        ));
    }

    #[test]
    fn pending_reports_a_vanished_worker() {
        let (sender, pending) = Pending::<u8>::new();
        assert!(matches!(pending.try_take(), Ok(None)));
        drop(sender);
        assert!(matches!(pending.try_take(), Err(ReachError::WorkerGone)));
        let (sender, pending) = Pending::<u8>::new();
        sender.send(5).unwrap();
        assert_eq!(pending.wait(Duration::from_millis(10)).unwrap(), 5);
        assert!(matches!(
            Pending::<u8>::new().1.wait(Duration::from_millis(1)),
            Err(ReachError::TimedOut) | Err(ReachError::WorkerGone)
        ));
    }
}
