//! What differs between operating systems, behind small modules: the terminal, the
//! network interfaces and names, file permissions. Everything above uses these and never the system's own
//! calls, so a port (Windows) adds twins of these modules and nothing else.

pub mod browser;
pub mod files;
pub mod ifaces;
pub mod ipc;
pub mod terminal;
