//! duet on an MPS2-AN385 board (Cortex-M3) with a LAN9118 Ethernet chip, as QEMU's
//! `mps2-an385` machine emulates it. `cargo run --release` boots it in QEMU (see
//! `qemu-run.sh` and docs/FIRMWARE.md).
//!
//! The application (console, chat loop, boot) is `duet_firmware_app`'s, which every board
//! shares, and the chat logic is `duet_core`'s: this crate is board support (`board`,
//! `uart`, `lan9118`, `entropy`) and the logging.
#![no_std]
#![no_main]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod board;
mod config;
mod entropy;
mod lan9118;
mod logging;
mod uart;

#[cortex_m_rt::entry]
fn main() -> ! {
    board::start()
}
