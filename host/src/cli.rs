//! The command line.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use duet_core::text::Encoding;

use crate::keys::PeerKey;
use crate::pair::Code;
use crate::tap::{IfaceAddr, MacAddr};

/// duet: a private chat for two people over UDP. No server: type an address and talk.
#[derive(Debug, Parser)]
#[command(name = "duet", version)]
pub struct Cli {
    /// What to do; without a command, duet starts a chat.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Chat options, when no command is given.
    #[command(flatten)]
    pub chat: ChatArgs,
    /// Where duet keeps your identity and your peers [default: $XDG_CONFIG_HOME/duet, else
    /// ~/.config/duet].
    // Raw as typed: `keys::config_dir` resolves the default and creates the directory.
    #[arg(long, global = true, env = "DUET_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

/// duet's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a peer: type lines, read theirs (the default).
    Chat(ChatCommand),
    /// Send one message and exit once the peer acknowledged it.
    Send(SendArgs),
    /// Print every message received, one line each.
    Listen(ListenArgs),
    /// Print your public key, and its fingerprint to compare by voice (creates your
    /// identity on first use).
    Id,
    /// Pair with someone (`invite` / `join` with a one-time code), or add, list and remove
    /// peers.
    #[command(subcommand)]
    Pair(PairCommand),
    /// Show stored messages, oldest first: what you sent (with its state) and received.
    History(HistoryArgs),
    /// List who is on the LAN: IP Messenger, FeiQ and iptux users (`--ipmsg`).
    Peers(PeersArgs),
}

/// `duet history`.
#[derive(Debug, Args, Clone)]
pub struct HistoryArgs {
    /// Only messages with this paired peer.
    #[arg(value_name = "NAME")]
    pub peer: Option<String>,
    /// Only messages containing this text.
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// At most this many (the latest).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: u64,
    /// Check the history file's integrity instead, and print the verdict.
    #[arg(long)]
    pub check: bool,
}

/// Options of the plain-datagram mode for legacy peers.
#[derive(Debug, Args, Clone)]
pub struct LegacyArgs {
    /// Talk plain UDP datagrams (no acknowledgements, no encryption) to the tutorial's
    /// Python programs, `nc -u` or socat.
    #[arg(long)]
    pub legacy: bool,
    /// Text encoding in legacy mode: utf-8, gbk or auto (decode: UTF-8 if valid, else GBK).
    /// Default: auto when receiving, utf-8 when sending.
    #[arg(long, value_parser = parse_encoding, requires = "legacy")]
    pub encoding: Option<Encoding>,
}

/// Where `--help` lists the TAP options.
const TAP_HEADING: &str = "TAP mode (Linux)";

/// Options of TAP mode: duet's own network stack (smoltcp, as on the board) on a TAP device
/// instead of the operating system's UDP.
#[derive(Debug, Args, Clone, Default)]
pub struct TapArgs {
    /// Run duet's own network stack on this Linux TAP device (create it first: see the
    /// README). Needs root, CAP_NET_ADMIN, or a tap created for your user.
    #[arg(long, value_name = "IFNAME", requires = "ip", help_heading = TAP_HEADING)]
    pub tap: Option<String>,
    /// duet's IPv4 address and prefix on the tap's network, e.g. 192.168.77.2/24 (not the
    /// address the tap has on this machine). --bind gives the port.
    #[arg(long, value_name = "ADDR/PREFIX", requires = "tap", help_heading = TAP_HEADING)]
    pub ip: Option<IfaceAddr>,
    /// Where datagrams to other networks go (default: only the tap's network is reached).
    #[arg(long, value_name = "ADDR", requires = "tap", help_heading = TAP_HEADING)]
    pub gateway: Option<Ipv4Addr>,
    /// duet's Ethernet address on the tap [default: 02:00 and the four bytes of --ip].
    #[arg(long, value_name = "MAC", requires = "tap", help_heading = TAP_HEADING)]
    pub mac: Option<MacAddr>,
}

/// Where `--help` lists the IP Messenger options.
const IPMSG_HEADING: &str = "IP Messenger mode (LAN)";

/// Options of IP Messenger mode: chat with IP Messenger, FeiQ and iptux users on the LAN
/// (see `lan.rs`).
#[derive(Debug, Args, Clone, Default)]
pub struct IpmsgArgs {
    /// Speak IP Messenger (IPMsg, FeiQ, iptux) on UDP port 2425: PLAINTEXT, anyone on the
    /// LAN can read it. Announces you on every interface's broadcast address.
    #[arg(long, conflicts_with_all = ["legacy", "tap"], help_heading = IPMSG_HEADING)]
    pub ipmsg: bool,
    /// The group shown next to your name in their lists.
    #[arg(long, value_name = "GROUP", requires = "ipmsg", help_heading = IPMSG_HEADING)]
    pub group: Option<String>,
}

/// `duet chat`.
#[derive(Debug, Args, Clone)]
pub struct ChatArgs {
    /// Local address to listen on, ADDR:PORT.
    #[arg(long, default_value = "0.0.0.0:7789", value_name = "ADDR:PORT")]
    pub bind: String,
    /// Who to talk to: a paired peer's NAME, or HOST:PORT. Without it duet asks (on a
    /// terminal), or talks to whichever paired peer writes first.
    #[arg(long, value_name = "NAME|HOST:PORT")]
    pub peer: Option<String>,
    /// The name shown for your own messages.
    #[arg(long, env = "USER", default_value = "me")]
    pub name: String,
    /// Plain-datagram mode.
    #[command(flatten)]
    pub legacy: LegacyArgs,
    /// TAP mode.
    #[command(flatten)]
    pub tap: TapArgs,
    /// IP Messenger mode.
    #[command(flatten)]
    pub ipmsg: IpmsgArgs,
}

/// `duet chat [PEER]`.
#[derive(Debug, Args, Clone)]
pub struct ChatCommand {
    /// Chat options.
    #[command(flatten)]
    pub args: ChatArgs,
    /// The same as --peer: `duet chat alice`.
    #[arg(value_name = "PEER", conflicts_with = "peer")]
    pub with: Option<String>,
}

/// `duet send`.
#[derive(Debug, Args, Clone)]
pub struct SendArgs {
    /// Who to send to: a paired peer's NAME, or HOST:PORT (legacy mode: HOST:PORT).
    #[arg(long, value_name = "NAME|HOST:PORT")]
    pub to: String,
    /// Local address to send from, ADDR:PORT (default: any address, a free port).
    #[arg(long, default_value = "0.0.0.0:0", value_name = "ADDR:PORT")]
    pub bind: String,
    /// Give up after this many seconds without an acknowledgement.
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Refuse text longer than one message instead of sending it as several.
    #[arg(long)]
    pub no_split: bool,
    /// Plain-datagram mode.
    #[command(flatten)]
    pub legacy: LegacyArgs,
    /// TAP mode.
    #[command(flatten)]
    pub tap: TapArgs,
    /// IP Messenger mode: --to is a nickname, user name, host name or address on the LAN.
    #[command(flatten)]
    pub ipmsg: IpmsgArgs,
    /// The text; several words are joined with spaces.
    #[arg(required = true, num_args = 1.., value_name = "TEXT")]
    pub text: Vec<String>,
}

/// `duet listen`.
#[derive(Debug, Args, Clone)]
pub struct ListenArgs {
    /// Local address to listen on, ADDR:PORT.
    #[arg(long, default_value = "0.0.0.0:7789", value_name = "ADDR:PORT")]
    pub bind: String,
    /// Exit after this many messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Also print counters of rejected datagrams when exiting.
    #[arg(long, short)]
    pub verbose: bool,
    /// Plain-datagram mode.
    #[command(flatten)]
    pub legacy: LegacyArgs,
    /// TAP mode.
    #[command(flatten)]
    pub tap: TapArgs,
    /// IP Messenger mode.
    #[command(flatten)]
    pub ipmsg: IpmsgArgs,
}

/// `duet peers`.
#[derive(Debug, Args, Clone)]
pub struct PeersArgs {
    /// Ask the LAN with IP Messenger's broadcast (announces you for a moment, in plaintext).
    #[arg(long)]
    pub ipmsg: bool,
    /// How long to wait for answers.
    #[arg(long, default_value_t = 3, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
    pub wait: u64,
    /// Local address to listen on, ADDR:PORT.
    #[arg(long, default_value = "0.0.0.0:2425", value_name = "ADDR:PORT")]
    pub bind: String,
    /// The name shown to the others meanwhile.
    #[arg(long, env = "USER", default_value = "me")]
    pub name: String,
    /// The group shown next to it.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
}

fn parse_encoding(s: &str) -> Result<Encoding, String> {
    s.parse().map_err(|e| format!("{e}"))
}

/// `duet pair ...`.
#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// Add a peer whose public key you got another way (`duet id` prints it there).
    Add(PairAddArgs),
    /// List your peers: name, key, fingerprint, address (or -).
    List,
    /// Forget a peer.
    Remove {
        /// The peer's name.
        #[arg(value_parser = parse_peer_name)]
        name: String,
    },
    /// Show a one-time code, wait for the other person to join with it, and pair.
    Invite(InviteArgs),
    /// Join someone's invite with the code they read to you, and pair.
    Join(JoinArgs),
}

/// `duet pair add`.
#[derive(Debug, Args, Clone)]
pub struct PairAddArgs {
    /// What you will call them: 1 to 32 letters, digits, '-', '_' or '.'.
    #[arg(value_parser = parse_peer_name)]
    pub name: String,
    /// Their public key, as `duet id` prints it there (44 characters of base64).
    pub key: PeerKey,
    /// Where to reach them, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
}

/// `duet pair invite`.
#[derive(Debug, Args, Clone)]
pub struct InviteArgs {
    /// What you will call the person who joins.
    #[arg(value_parser = parse_peer_name)]
    pub name: String,
    /// Local address to wait on, ADDR:PORT.
    #[arg(long, default_value = "0.0.0.0:7789", value_name = "ADDR:PORT")]
    pub bind: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// `duet pair join`.
#[derive(Debug, Args, Clone)]
pub struct JoinArgs {
    /// What you will call the person who invited you.
    #[arg(value_parser = parse_peer_name)]
    pub name: String,
    /// The code the inviter shows, e.g. 1234-5678.
    pub code: Code,
    /// The inviter's address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    /// Local address to send from, ADDR:PORT (default: any address, a free port).
    #[arg(long, default_value = "0.0.0.0:0", value_name = "ADDR:PORT")]
    pub bind: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

fn parse_peer_name(s: &str) -> Result<String, String> {
    crate::keys::check_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}
