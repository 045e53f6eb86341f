//! duet's firmware application, written once for every board: the boot (network
//! interface, keys, session), the chat loop (duet's one driver loop with the console beside
//! it) and the serial console.
//!
//! A board crate (QEMU's `firmware/`, `firmware/boards/*`) brings the hardware up and hands
//! [`run`] the few things boards differ in, through the [`Board`] trait: a network device
//! (smoltcp's `phy::Device`), a clock, a source of random bytes, a console byte stream
//! (`embedded-io`) and a place for keys ([`KeyStore`]). Everything else — the chat itself is
//! `duet_core`'s — is here. The application never touches a register.
//!
//! Logging goes through `fmt`'s macros: defmt with the `defmt` feature, nothing without
//! (the host tests). The `cortex-m` feature adds what every Cortex-M board shares: the
//! SysTick clock (`systick`) and the stack and RAM figures of `/status` (`memory`).
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[macro_use]
mod fmt;

mod app;
pub mod base64;
mod console;
pub mod keys;
#[cfg(feature = "cortex-m")]
pub mod memory;
mod outbox_record;
pub mod polled;
pub mod print;
#[cfg(feature = "cortex-m")]
pub mod systick;

pub use app::{Cells, Secure, run};
pub use console::{LINE_MAX, PREVIEW_MAX};
pub use keys::{KeyStore, NoKeyStore, StoreError, StoredKeys};

use duet_core::Clock;
use embedded_io::{Read, ReadReady, Write};

/// The build-time network and key settings (`duet-board-config` writes them from
/// `DUET_ADDR`, `DUET_PEER` and friends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The board's IPv4 address.
    pub address: [u8; 4],
    /// The prefix length of the board's subnet.
    pub prefix_len: u8,
    /// The default route.
    pub gateway: [u8; 4],
    /// The UDP port duet binds.
    pub port: u16,
    /// The peer greeted at boot.
    pub peer_ip: [u8; 4],
    /// The peer's port.
    pub peer_port: u16,
    /// A fixed Ethernet address, or `None` for the board's own.
    pub mac: Option<[u8; 6]>,
    /// The board's X25519 secret key, if the image carries one; otherwise the board keeps
    /// one it drew itself in its [`KeyStore`].
    pub board_secret: Option<[u8; 32]>,
    /// The public key of the peer at `peer_ip:peer_port`, if given.
    pub peer_key: Option<[u8; 32]>,
}

impl Settings {
    /// The peer the session greets at boot. Only a default: while it is not answering,
    /// whoever reaches the board first becomes the peer (the core's peer rules), and the
    /// console's `/peer` changes it.
    pub fn default_peer(&self) -> core::net::SocketAddr {
        core::net::SocketAddr::from((self.peer_ip, self.peer_port))
    }
}

/// A network device's counters, for `/status`. A device without some counter leaves it 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicStats {
    /// Frames handed to smoltcp.
    pub rx_frames: u32,
    /// Frames the device flagged (CRC, runt, too long) or that did not fit its buffer.
    pub rx_errors: u32,
    /// Frames the device dropped for want of room.
    pub rx_dropped: u32,
    /// Frames sent.
    pub tx_frames: u32,
    /// Frames the device reported as failed to send.
    pub tx_errors: u32,
    /// Times smoltcp had to wait for room to send.
    pub tx_busy: u32,
}

/// What the application asks of a network device besides moving frames.
pub trait Nic {
    /// Its Ethernet address.
    fn mac(&self) -> [u8; 6];
    /// Its counters.
    fn stats(&self) -> NicStats;
}

/// The console's byte stream: a UART, a USB CDC port, RTT.
pub trait ConsoleIo: Read + ReadReady + Write {
    /// Typed bytes lost because the loop read them too late (0 if the stream cannot tell).
    fn overruns(&self) -> u32 {
        0
    }
}

/// What a board brings to the application. Everything else is the same on every board.
pub trait Board {
    /// The network device smoltcp drives (Ethernet frames).
    type Nic: smoltcp::phy::Device + Nic + 'static;
    /// The clock of the driver loop and smoltcp: milliseconds since boot.
    type Clock: Clock + Copy + 'static;
    /// The console's byte stream.
    type Console: ConsoleIo + 'static;
    /// Where the board keeps its secret key and its peer.
    type Keys: KeyStore;

    /// The board's name and devices, for the console's first line, e.g.
    /// `"mps2-an385 (LAN9118, CMSDK UART)"`.
    const NAME: &'static str;
    /// The build-time settings (from `duet-board-config`). A constant, so the compiler
    /// folds them into the code as it did when they were plain constants.
    const SETTINGS: Settings;

    /// Fill `buf` with random bytes fit for keys (a hardware RNG on a real board).
    fn fill_random(&mut self, buf: &mut [u8]);
    /// Sleep until something may have happened (an interrupt, or at most a millisecond).
    fn sleep(&mut self);
    /// Reset the board, as its reset button would; RAM's `.uninit` survives.
    fn reset(&mut self) -> !;
    /// Stop for good after a boot error (under QEMU: end QEMU with a failure status).
    fn halt(&mut self) -> !;
    /// Bytes of stack used at most since reset, for `/status` (0 if unknown).
    fn stack_used(&self) -> usize {
        0
    }
    /// Bytes of RAM the statics take, for `/status` (0 if unknown).
    fn static_ram(&self) -> usize {
        0
    }
}

/// The devices a board hands to [`run`], brought up.
pub struct Parts<B: Board> {
    /// The network device, started.
    pub nic: B::Nic,
    /// The clock, running.
    pub clock: B::Clock,
    /// The console's byte stream.
    pub console: B::Console,
    /// The key store.
    pub keys: B::Keys,
}
