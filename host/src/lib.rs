//! duet on a computer: the terminal chat, one-shot send/listen, the legacy plain-UDP mode
//! and IP Messenger mode, all running the `duet-core` session through the core's one
//! driver.
//!
//! The layers, each using only those below it (docs/ARCHITECTURE.md):
//!
//! - [`cli`]: clap's types, turned into plain options; errors into exit codes.
//! - [`front`]: front-ends — terminal chat and line mode, send, listen, history, IP
//!   Messenger mode.
//! - [`app`]: identity, pairing, peers, history and outbox, the conversation.
//! - [`transport`]: std UDP, smoltcp on TAP, and the link that runs the core's driver.
//! - [`platform`]: terminal, interfaces, names: what a port to another system replaces.
//!
//! The binary (`src/main.rs`) only parses the command line, runs it and maps the error to
//! an exit code.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod front;
pub mod platform;
pub mod transport;
