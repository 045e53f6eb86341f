//! Helpers shared by duet's end-to-end tests.

pub mod nat;
pub mod nat_chat;
pub mod netns;
pub mod netns_router;
pub mod peers;
pub mod process;
pub mod qemu;
pub mod relay;
pub mod sim;

pub use process::{Home, Proc, duet_bin, free_port, local, pair_homes, paired, use_duet_bin};
