//! The command line.

use clap::{Args, Parser, Subcommand};
use duet_core::text::Encoding;

/// duet: a private chat for two people over UDP. No server: type an address and talk.
#[derive(Debug, Parser)]
#[command(name = "duet", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without a command, duet starts a chat.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Chat options, when no command is given.
    #[command(flatten)]
    pub chat: ChatArgs,
}

/// duet's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a peer: type lines, read theirs (the default).
    Chat(ChatArgs),
    /// Send one message and exit once the peer acknowledged it.
    Send(SendArgs),
    /// Print every message received, one line each.
    Listen(ListenArgs),
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

/// `duet chat`.
#[derive(Debug, Args, Clone)]
pub struct ChatArgs {
    /// Local address to listen on, ADDR:PORT.
    #[arg(long, default_value = "0.0.0.0:7789", value_name = "ADDR:PORT")]
    pub bind: String,
    /// The peer's address, HOST:PORT. Without it duet asks (on a terminal), or talks to
    /// whoever writes first.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer: Option<String>,
    /// The name shown for your own messages.
    #[arg(long, env = "USER", default_value = "me")]
    pub name: String,
    /// Plain-datagram mode.
    #[command(flatten)]
    pub legacy: LegacyArgs,
}

/// `duet send`.
#[derive(Debug, Args, Clone)]
pub struct SendArgs {
    /// The peer's address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
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
}

fn parse_encoding(s: &str) -> Result<Encoding, String> {
    s.parse().map_err(|e| format!("{e}"))
}
