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
pub mod link;
pub mod net;
pub mod ui;

use cli::{Cli, Command};
use error::Error;

/// Run the command line's command.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        None => app::chat(cli.chat),
        Some(Command::Chat(args)) => app::chat(args),
        Some(Command::Send(args)) => app::send(args),
        Some(Command::Listen(args)) => app::listen(args),
    }
}
