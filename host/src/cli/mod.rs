//! The command line: clap's types, turned into the plain options of the layers below
//! ([`run`]), and errors into exit codes ([`exit`]). Nothing below this module knows
//! clap.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use duet_core::text::Encoding;

pub mod exit;

use crate::app::Error;
use crate::app::conversation::LegacyOptions;
use crate::app::files::FileOptions;
use crate::app::keys::{self, PeerKey};
use crate::app::pair::{self, AddOptions, Code, InviteOptions, JoinOptions};
use crate::front::{
    self, ChatOptions, HistoryOptions, IpmsgOptions, ListenOptions, PeersOptions, ReachOptions,
    SendOptions, WebOptions,
};
use crate::platform;
use crate::transport::TapOptions;
use crate::transport::reach::ReachConfig;
use crate::transport::tap::{IfaceAddr, MacAddr};

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
    /// Chat in a web browser: serve the chat page on this computer and open it.
    Web(WebArgs),
    /// Show stored messages, oldest first: what you sent (with its state) and received.
    History(HistoryArgs),
    /// List who is on the LAN: IP Messenger, FeiQ and iptux users (`--ipmsg`).
    Peers(PeersArgs),
    /// Show the running chat's path to its peer (LAN, direct through NAT, relay) and the
    /// round trip.
    Status,
    /// Run a BitTorrent DHT node in server mode, for private networks where duets cannot
    /// reach the public DHT (point them at it with DUET_DHT_BOOTSTRAP).
    DhtNode(DhtNodeArgs),
}

/// `duet dht-node`.
#[derive(Debug, Args, Clone)]
pub struct DhtNodeArgs {
    /// Where the node listens, ADDR:PORT (IPv4).
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: String,
    /// Other nodes to join, HOST:PORT (repeat, or comma-separated); none: a new network.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
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
    /// Default: auto when receiving; when sending utf-8, or gbk on Windows.
    #[arg(long, value_parser = parse_encoding, requires = "legacy")]
    pub encoding: Option<Encoding>,
}

/// Where `--help` lists the TAP options.
const TAP_HEADING: &str = "TAP mode (Linux)";

/// The variable that holds the login name, `--name`'s default.
const USER_VAR: &str = if cfg!(windows) { "USERNAME" } else { "USER" };

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

/// Where `--help` lists the file options.
const FILES_HEADING: &str = "Receiving files";

/// Where received files go and how large they may be.
#[derive(Debug, Args, Clone, Default)]
pub struct FileArgs {
    /// Save received files in DIR (created when the first one comes) [default: a `duet`
    /// folder in your download directory].
    #[arg(long, env = "DUET_SAVE_DIR", value_name = "DIR", help_heading = FILES_HEADING)]
    pub save_dir: Option<PathBuf>,
    /// Refuse files larger than this: bytes, or with a unit (K, M, G, T: powers of 1024;
    /// KiB, MiB, GiB, TiB too) [default: 4G].
    #[arg(long, env = "DUET_MAX_FILE_SIZE", value_name = "SIZE", value_parser = parse_size, help_heading = FILES_HEADING)]
    pub max_file_size: Option<u64>,
}

impl From<FileArgs> for FileOptions {
    fn from(a: FileArgs) -> Self {
        let default = FileOptions::default();
        FileOptions {
            save_dir: a.save_dir.or(default.save_dir),
            max_size: a.max_file_size.unwrap_or(default.max_size),
        }
    }
}

/// A size in bytes: `123`, `4G`, `1.5MiB`, `10 k`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown unit {other:?}: use K, M, G or T")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (say 4G, 500M or 1048576)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Where `--help` lists the internet reach options.
const REACH_HEADING: &str = "Internet reach (peers behind NAT)";

/// Options of internet reach: finding and connecting a paired peer behind NAT.
#[derive(Debug, Args, Clone, Default)]
pub struct ReachArgs {
    /// Publish and look up addresses on the BitTorrent DHT: on (default) or off (stay on
    /// the LAN: no DHT, no STUN, no port mapping).
    #[arg(long = "dht", env = "DUET_DHT", value_name = "on|off", help_heading = REACH_HEADING)]
    pub dht: Option<String>,
    /// DHT nodes to start from, comma-separated HOST:PORT [default: the public Mainline
    /// bootstrap nodes].
    #[arg(long, env = "DUET_DHT_BOOTSTRAP", value_name = "HOST:PORT,...", help_heading = REACH_HEADING)]
    pub dht_bootstrap: Option<String>,
    /// STUN servers that tell this duet its public address, comma-separated HOST:PORT
    /// [default: a few public ones]; empty: none.
    #[arg(long, env = "DUET_STUN", value_name = "HOST:PORT,...", help_heading = REACH_HEADING)]
    pub stun: Option<String>,
    /// A TURN relay for when no direct path works (strict NATs): USER:PASS@HOST:PORT.
    #[arg(long, env = "DUET_TURN", value_name = "USER:PASS@HOST:PORT", hide_env_values = true, help_heading = REACH_HEADING)]
    pub turn: Option<String>,
}

impl From<ReachArgs> for ReachOptions {
    fn from(a: ReachArgs) -> Self {
        ReachOptions {
            dht: a.dht,
            bootstrap: a.dht_bootstrap,
            stun: a.stun,
            turn: a.turn,
        }
    }
}

/// `duet chat`.
#[derive(Debug, Args, Clone)]
pub struct ChatArgs {
    /// Local address to listen on, ADDR:PORT.
    #[arg(long, default_value = "0.0.0.0:7789", value_name = "ADDR:PORT")]
    pub bind: String,
    /// Who to talk to: a paired peer's NAME, NAME@HOST:PORT, or the HOST:PORT recorded for one
    /// (legacy mode: any HOST:PORT). Without it duet asks (on a
    /// terminal), or talks to whichever paired peer writes first.
    #[arg(long, value_name = "NAME|HOST:PORT")]
    pub peer: Option<String>,
    /// The name shown for your own messages.
    #[arg(long, env = USER_VAR, default_value = "me")]
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
    /// Internet reach.
    #[command(flatten)]
    pub reach: ReachArgs,
    /// Receiving files.
    #[command(flatten)]
    pub files: FileArgs,
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

/// `duet web [PEER]`.
#[derive(Debug, Args, Clone)]
pub struct WebArgs {
    /// Who to talk to: a paired peer's NAME, NAME@HOST:PORT, or the HOST:PORT recorded for
    /// one. Without it, whichever paired peer writes first.
    #[arg(value_name = "PEER")]
    pub peer: Option<String>,
    /// Local address to listen on for the peer (UDP), ADDR:PORT.
    #[arg(long, default_value = "0.0.0.0:7789", value_name = "ADDR:PORT")]
    pub bind: String,
    /// Where the chat page is served (HTTP), ADDR:PORT. Anyone who can reach it still
    /// needs the secret address duet prints.
    #[arg(long, default_value = "127.0.0.1:7790", value_name = "ADDR:PORT")]
    pub http: String,
    /// Do not open a browser: only print the address.
    #[arg(long)]
    pub no_open: bool,
    /// Internet reach.
    #[command(flatten)]
    pub reach: ReachArgs,
    /// Receiving files.
    #[command(flatten)]
    pub files: FileArgs,
}

/// `duet send`.
#[derive(Debug, Args, Clone)]
pub struct SendArgs {
    /// Who to send to: a paired peer's NAME, NAME@HOST:PORT, or the HOST:PORT recorded for
    /// one (legacy mode: any HOST:PORT).
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
    #[arg(required_unless_present = "file", conflicts_with = "file", num_args = 1.., value_name = "TEXT")]
    pub text: Vec<String>,
    /// Send this file instead of text; exits 0 once the peer saved it (checked end to
    /// end). Run again after an interruption, it goes on where it stopped.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["legacy", "ipmsg", "no_split"])]
    pub file: Option<PathBuf>,
    /// Internet reach.
    #[command(flatten)]
    pub reach: ReachArgs,
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
    /// Receiving files.
    #[command(flatten)]
    pub files: FileArgs,
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
    #[arg(long, env = USER_VAR, default_value = "me")]
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
    /// Add a peer whose public key you got another way (`duet id` prints it there); for a
    /// peer already paired with that key, set its address.
    Add(PairAddArgs),
    /// List your peers: name, key, fingerprint, address (or -).
    List,
    /// Set where a peer is reached, HOST:PORT, or `none` to look for it on the LAN (or
    /// wait for it to write first).
    SetAddr {
        /// The peer's name.
        #[arg(value_parser = parse_peer_name)]
        name: String,
        /// Where its duet listens, HOST:PORT, or `none`.
        #[arg(value_name = "HOST:PORT|none")]
        addr: String,
    },
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
    /// Internet reach: with the DHT on, the code gets a nameplate and can be joined from
    /// anywhere without --addr.
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// `duet pair join`.
#[derive(Debug, Args, Clone)]
pub struct JoinArgs {
    /// What you will call the person who invited you.
    #[arg(value_parser = parse_peer_name)]
    pub name: String,
    /// The code the inviter shows, e.g. 042-1234-5678 (or 1234-5678 with --addr).
    pub code: Code,
    /// The inviter's address, HOST:PORT [default: look the invite up on the DHT by the
    /// code's nameplate].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Local address to send from, ADDR:PORT (default: any address, a free port).
    #[arg(long, default_value = "0.0.0.0:0", value_name = "ADDR:PORT")]
    pub bind: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Internet reach: how a join without --addr finds the invite.
    #[command(flatten)]
    pub reach: ReachArgs,
}

fn parse_peer_name(s: &str) -> Result<String, String> {
    keys::check_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Run the command line's command.
pub fn run(cli: Cli) -> Result<(), Error> {
    // Identity, peers, history (and SQLite's -wal and -shm beside it) hold secrets and
    // messages: whatever duet creates is its user's alone, whatever the inherited umask.
    platform::files::create_private();
    let dir = keys::config_dir(cli.config_dir)?;
    let out = &mut std::io::stdout().lock();
    match cli.command {
        None => chat(cli.chat.into(), &dir),
        Some(Command::Chat(chat_command)) => {
            let mut options: ChatOptions = chat_command.args.into();
            options.peer = options.peer.or(chat_command.with);
            chat(options, &dir)
        }
        Some(Command::Send(args)) if args.ipmsg.ipmsg => front::lan::send(args.into()),
        Some(Command::Send(args)) => front::send::send(args.into(), &dir),
        Some(Command::Listen(args)) if args.ipmsg.ipmsg => front::lan::listen(args.into()),
        Some(Command::Listen(args)) => front::listen::listen(args.into(), &dir),
        Some(Command::Peers(args)) => front::lan::peers(args.into()),
        Some(Command::History(args)) => front::history::history(args.into(), &dir),
        Some(Command::Web(args)) => front::web::web(args.into(), &dir),
        Some(Command::Id) => pair::id(&dir, out),
        Some(Command::Status) => front::status::status(&dir),
        Some(Command::DhtNode(args)) => front::node::dht_node(&args.bind, &args.bootstrap),
        Some(Command::Pair(command)) => match command {
            PairCommand::Add(a) => pair::add(
                &dir,
                AddOptions {
                    name: a.name,
                    key: a.key,
                    addr: a.addr,
                },
                out,
            ),
            PairCommand::List => pair::list(&dir, out),
            PairCommand::SetAddr { name, addr } => {
                let addr = (addr != "none").then_some(addr.as_str());
                pair::set_addr(&dir, &name, addr, out)
            }
            PairCommand::Remove { name } => pair::remove(&dir, &name, out),
            PairCommand::Invite(a) => pair::invite(
                &dir,
                InviteOptions {
                    name: a.name,
                    bind: a.bind,
                    timeout: a.timeout,
                    reach: pairing_reach(a.reach)?,
                },
                out,
            ),
            PairCommand::Join(a) => pair::join(
                &dir,
                JoinOptions {
                    name: a.name,
                    code: a.code,
                    reach: if a.addr.is_some() {
                        None
                    } else {
                        pairing_reach(a.reach)?
                    },
                    addr: a.addr,
                    bind: a.bind,
                    timeout: a.timeout,
                },
                out,
            ),
        },
    }
}

/// What pairing across the internet may use: `None` when the DHT is off (a relay alone
/// cannot find an invite).
fn pairing_reach(args: ReachArgs) -> Result<Option<ReachConfig>, Error> {
    Ok(ReachOptions::from(args).config()?.filter(|c| c.dht))
}

fn chat(options: ChatOptions, dir: &std::path::Path) -> Result<(), Error> {
    if options.ipmsg.ipmsg {
        front::lan::chat(options)
    } else {
        front::chat::chat(options, dir)
    }
}

impl From<LegacyArgs> for LegacyOptions {
    fn from(a: LegacyArgs) -> Self {
        LegacyOptions {
            legacy: a.legacy,
            encoding: a.encoding,
        }
    }
}

impl From<TapArgs> for TapOptions {
    fn from(a: TapArgs) -> Self {
        TapOptions {
            tap: a.tap,
            ip: a.ip,
            gateway: a.gateway,
            mac: a.mac,
        }
    }
}

impl From<IpmsgArgs> for IpmsgOptions {
    fn from(a: IpmsgArgs) -> Self {
        IpmsgOptions {
            ipmsg: a.ipmsg,
            group: a.group,
        }
    }
}

impl From<ChatArgs> for ChatOptions {
    fn from(a: ChatArgs) -> Self {
        ChatOptions {
            bind: a.bind,
            peer: a.peer,
            name: a.name,
            legacy: a.legacy.into(),
            tap: a.tap.into(),
            ipmsg: a.ipmsg.into(),
            reach: a.reach.into(),
            files: a.files.into(),
        }
    }
}

impl From<SendArgs> for SendOptions {
    fn from(a: SendArgs) -> Self {
        SendOptions {
            to: a.to,
            bind: a.bind,
            timeout: a.timeout,
            no_split: a.no_split,
            legacy: a.legacy.into(),
            tap: a.tap.into(),
            ipmsg: a.ipmsg.into(),
            text: a.text,
            file: a.file,
            reach: a.reach.into(),
        }
    }
}

impl From<ListenArgs> for ListenOptions {
    fn from(a: ListenArgs) -> Self {
        ListenOptions {
            bind: a.bind,
            count: a.count,
            verbose: a.verbose,
            legacy: a.legacy.into(),
            tap: a.tap.into(),
            ipmsg: a.ipmsg.into(),
            files: a.files.into(),
        }
    }
}

impl From<WebArgs> for WebOptions {
    fn from(a: WebArgs) -> Self {
        WebOptions {
            peer: a.peer,
            bind: a.bind,
            http: a.http,
            open: !a.no_open,
            reach: a.reach.into(),
            files: a.files.into(),
        }
    }
}

impl From<HistoryArgs> for HistoryOptions {
    fn from(a: HistoryArgs) -> Self {
        HistoryOptions {
            peer: a.peer,
            search: a.search,
            limit: a.limit,
            check: a.check,
        }
    }
}

impl From<PeersArgs> for PeersOptions {
    fn from(a: PeersArgs) -> Self {
        PeersOptions {
            ipmsg: a.ipmsg,
            wait: a.wait,
            bind: a.bind,
            name: a.name,
            group: a.group,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::front::lan::{CHAT_DEFAULT_BIND, SEND_DEFAULT_BIND, bind_addr};
    use clap::Parser;
    use std::net::SocketAddr;

    #[test]
    fn sizes_take_units_of_1024() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("1.5 MiB"), Ok(3 << 19));
        assert_eq!(parse_size("10k"), Ok(10 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999T").is_err());
        let cli = Cli::try_parse_from(["duet", "send", "--to", "b", "--file", "x"]).unwrap();
        let Some(Command::Send(send)) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.file, Some(PathBuf::from("x")));
        assert!(Cli::try_parse_from(["duet", "send", "--to", "b", "--file", "x", "hi"]).is_err());
        assert!(Cli::try_parse_from(["duet", "send", "--to", "b"]).is_err());
    }

    #[test]
    fn ipmsg_mode_defaults_to_port_2425_only_when_bind_is_left_alone() {
        // The defaults this module recognises are the command line's.
        let cli = Cli::try_parse_from(["duet", "chat", "--ipmsg"]).unwrap();
        let Some(Command::Chat(chat)) = cli.command else {
            panic!("not chat")
        };
        assert_eq!(chat.args.bind, CHAT_DEFAULT_BIND);
        assert!(chat.args.ipmsg.ipmsg);
        let cli = Cli::try_parse_from(["duet", "send", "--ipmsg", "--to", "x", "hi"]).unwrap();
        let Some(Command::Send(send)) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.bind, SEND_DEFAULT_BIND);
        assert_eq!(
            bind_addr(CHAT_DEFAULT_BIND, CHAT_DEFAULT_BIND).unwrap(),
            "0.0.0.0:2425".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            bind_addr("0.0.0.0:2426", CHAT_DEFAULT_BIND).unwrap(),
            "0.0.0.0:2426".parse::<SocketAddr>().unwrap()
        );
        // IP Messenger mode and the legacy or TAP modes exclude each other.
        assert!(Cli::try_parse_from(["duet", "chat", "--ipmsg", "--legacy"]).is_err());
        assert!(
            Cli::try_parse_from(["duet", "listen", "--group", "x"]).is_err(),
            "--group needs --ipmsg"
        );
    }
}
