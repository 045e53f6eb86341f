//! Links the image for cortex-m-rt and defmt, and turns the build-time network settings
//! into constants (`duet-board-config` describes them all; a bad value fails the build).
//!
//! The defaults suit a home LAN of 192.168.1.0/24 with its router at 192.168.1.1; set
//! `DUET_ADDR`, `DUET_GATEWAY` and `DUET_PEER` for yours. Without `DUET_BOARD_SECRET` the
//! board draws its secret key from its hardware RNG at first boot and keeps it in flash,
//! so the image holds no key and reflashing it keeps the board's identity.

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
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");

    duet_board_config::write_config(&Defaults {
        addr: "192.168.1.50/24",
        gateway: "192.168.1.1",
        port: "7789",
        peer: "192.168.1.2:7788",
        secret: SecretDefault::FromBoard,
    })
}
