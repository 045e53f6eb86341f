//! duet on an ST NUCLEO-F429ZI: an STM32F429ZI (Cortex-M4F, 2 MiB flash, 256 KiB RAM) with
//! its on-chip Ethernet MAC and the board's LAN8742A PHY. `cargo run --release` flashes it
//! through the on-board ST-LINK and shows the defmt log (probe-rs); the console is the
//! ST-LINK's virtual COM port (see docs/FIRMWARE.md).
//!
//! The application (console, chat loop, boot) is `duet_firmware_app`'s, the same as under
//! QEMU; this crate is board support: clocks and pins (`board`), the Ethernet device
//! (`eth`), the console's serial port (`vcp`) and the flash that keeps the keys (`flash`).
#![no_std]
#![no_main]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use defmt_rtt as _;
use panic_probe as _;

mod board;
mod config;
mod eth;
mod flash;
mod vcp;

#[cortex_m_rt::entry]
fn main() -> ! {
    board::start()
}
