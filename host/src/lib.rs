//! duet on a computer: the terminal chat, one-shot send/listen and the legacy plain-UDP
//! mode, all running the `duet-core` session through the core's one driver.
//!
//! The binary (`src/main.rs`) only parses the command line and maps errors to exit codes.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod error;
pub mod input;
pub mod keys;
pub mod lan;
pub mod link;
pub mod net;
pub mod pair;
pub mod reach;
pub mod store;
pub mod tap;
pub mod transport;
pub mod ui;

use cli::{Cli, Command};
use error::Error;

/// Run the command line's command.
pub fn run(cli: Cli) -> Result<(), Error> {
    let dir = keys::config_dir(cli.config_dir)?;
    match cli.command {
        None if cli.chat.ipmsg.ipmsg => lan::chat(cli.chat),
        None => app::chat(cli.chat, &dir),
        Some(Command::Chat(chat)) => {
            let mut args = chat.args;
            args.peer = args.peer.or(chat.with);
            if args.ipmsg.ipmsg {
                lan::chat(args)
            } else {
                app::chat(args, &dir)
            }
        }
        Some(Command::Send(args)) if args.ipmsg.ipmsg => lan::send(args),
        Some(Command::Send(args)) => app::send(args, &dir),
        Some(Command::Listen(args)) if args.ipmsg.ipmsg => lan::listen(args),
        Some(Command::Listen(args)) => app::listen(args, &dir),
        Some(Command::Peers(args)) => lan::peers(args),
        Some(Command::History(args)) => app::history(args, &dir),
        Some(Command::Id) => pair::id(&dir, &mut std::io::stdout().lock()),
        Some(Command::Pair(command)) => pair::run(&dir, command, &mut std::io::stdout().lock()),
    }
}
