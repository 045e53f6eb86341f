//! Helpers shared by duet's end-to-end tests.

pub mod process;
pub mod sim;

pub use process::{Proc, duet_bin, free_port, local};
