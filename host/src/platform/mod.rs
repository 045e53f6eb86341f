//! What differs between operating systems, behind small modules: the terminal, waiting on
//! sockets and input, the local socket between duet processes, the network interfaces and
//! names, files (permissions, the config directory), UDP segmentation offload. Everything
//! above uses these and never the system's own calls. Each module has a Unix and a Windows
//! side (offload: Linux and the rest), chosen by `#[cfg]`, with one interface.

pub mod browser;
pub mod files;
pub mod ifaces;
pub mod ipc;
pub mod offload;
pub mod terminal;
pub mod wait;
