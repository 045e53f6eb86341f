//! The application: who you are and whom you are paired with ([`keys`], [`pair`]), what
//! was said ([`store`]: history and the durable outbox), and the conversation itself
//! ([`conversation`]: the core's sealed session or legacy datagrams, over the transport
//! layer's one driver). Front-ends (terminal chat, line mode, send, listen) sit on top
//! and only decide what is typed in and how events look.

pub mod contacts;
pub mod conversation;
pub mod display;
mod error;
pub mod files;
pub mod handoff;
pub mod keys;
pub mod pair;
pub mod pair_reach;
pub mod reach;
pub mod store;
pub mod talk;

pub use error::Error;
