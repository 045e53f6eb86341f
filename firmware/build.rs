//! Links the image for cortex-m-rt and defmt, and turns the build-time network settings
//! into constants (`duet-board-config`), so a bad address fails the build with a message
//! instead of the board.
//!
//! Settings (environment variables read when the firmware is built; the crate
//! `duet-board-config` describes them all):
//! - `DUET_ADDR`: the board's IPv4 address and prefix, default `10.0.2.15/24` (QEMU user
//!   networking's guest address);
//! - `DUET_GATEWAY`: the default route, default `10.0.2.2` (QEMU's host alias);
//! - `DUET_PORT`: the UDP port duet listens on, default `7789`;
//! - `DUET_PEER`: the peer the board greets at boot, default `10.0.2.2:7788` (a host duet
//!   on 127.0.0.1:7788, seen through QEMU user networking);
//! - `DUET_MAC`: the Ethernet address, e.g. `02:00:00:00:00:01`; by default the one the
//!   chip loaded from its EEPROM (QEMU's NIC address);
//! - `DUET_BOARD_SECRET`: the board's X25519 secret key in base64 (44 characters, as
//!   `duet id` prints a public key); by default a fresh random one per build, so set it to
//!   keep the board's identity across rebuilds (QEMU has no flash that outlives it);
//! - `DUET_PEER_KEY`: the public key of the peer at `DUET_PEER` (base64, from `duet id`
//!   there); without it the board waits for `/pair` on its console.

use std::env;
use std::fs;
use std::path::PathBuf;

use duet_board_config::{Defaults, SecretDefault};

fn main() -> Result<(), String> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);

    // cortex-m-rt's link.x includes memory.x from the linker search path.
    fs::copy("memory.x", out.join("memory.x")).map_err(|e| format!("copy memory.x: {e}"))?;
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    // cortex-m-rt's `device` feature includes device.x, where a PAC names its interrupt
    // handlers; the board's table (board.rs) uses only DefaultHandler, so it names none.
    fs::write(
        out.join("device.x"),
        "/* no interrupt handlers of the board's own */\n",
    )
    .map_err(|e| format!("write device.x: {e}"))?;
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");

    // An error here fails the build with the message, naming the variable at fault.
    duet_board_config::write_config(&Defaults {
        addr: "10.0.2.15/24",
        gateway: "10.0.2.2",
        port: "7789",
        peer: "10.0.2.2:7788",
        secret: SecretDefault::RandomPerBuild,
    })
}
