//! duet on an MPS2-AN385 board (Cortex-M3) with a LAN9118 Ethernet chip, as QEMU's
//! `mps2-an385` machine emulates it. `cargo run --release` boots it in QEMU (see
//! `qemu-run.sh` and docs/FIRMWARE.md).
//!
//! The chat logic is `duet_core`'s, unchanged: this crate is board support (`board`,
//! `clock`, `uart`, `lan9118`), the console, a record of the outbox that outlives a warm
//! reset (`outbox_record`), and `app`, which wires them together.
#![no_std]
#![no_main]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod app;
mod base64;
mod board;
mod clock;
mod config;
mod console;
mod entropy;
mod lan9118;
mod logging;
mod outbox_record;
mod print;
mod uart;

#[cortex_m_rt::entry]
fn main() -> ! {
    app::run()
}
