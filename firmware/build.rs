//! Links the image for cortex-m-rt and defmt, and turns the build-time network settings
//! into constants, so a bad address fails the build with a message instead of the board.
//!
//! Settings (environment variables read when the firmware is built):
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
//!   keep the board's identity across rebuilds;
//! - `DUET_PEER_KEY`: the public key of the peer at `DUET_PEER` (base64, from `duet id`
//!   there); without it the board waits for `/pair` on its console.

use std::env;
use std::fs;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

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
    let config = network_config().map_err(|e| format!("duet-firmware build settings: {e}"))?;
    fs::write(out.join("config.rs"), config).map_err(|e| format!("write config.rs: {e}"))
}

#[allow(dead_code)]
#[path = "src/base64.rs"]
mod base64;

fn setting(name: &str, default: &str) -> String {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn network_config() -> Result<String, String> {
    let addr = setting("DUET_ADDR", "10.0.2.15/24");
    let (ip, prefix) = addr
        .split_once('/')
        .ok_or_else(|| format!("DUET_ADDR={addr:?}: expected ADDRESS/PREFIX, e.g. 10.0.2.15/24"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("DUET_ADDR={addr:?}: {e}"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("DUET_ADDR={addr:?}: the prefix must be 1 to 32"))?;

    let gateway = setting("DUET_GATEWAY", "10.0.2.2");
    let gateway: Ipv4Addr = gateway
        .parse()
        .map_err(|e| format!("DUET_GATEWAY={gateway:?}: {e}"))?;

    let port = setting("DUET_PORT", "7789");
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("DUET_PORT={port:?}: expected a port from 1 to 65535"))?;

    let peer = setting("DUET_PEER", "10.0.2.2:7788");
    let peer: SocketAddrV4 = peer
        .parse()
        .map_err(|e| format!("DUET_PEER={peer:?}: expected IPv4:PORT ({e})"))?;

    let mac = setting("DUET_MAC", "");
    let mac = if mac.is_empty() {
        None
    } else {
        let bytes: Vec<u8> = mac
            .split(':')
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("DUET_MAC={mac:?}: {e}"))?;
        let bytes: [u8; 6] = bytes
            .try_into()
            .map_err(|_| format!("DUET_MAC={mac:?}: expected six bytes like 02:00:00:00:00:01"))?;
        if bytes[0] & 1 != 0 {
            return Err(format!(
                "DUET_MAC={mac:?}: a multicast address cannot be a NIC's"
            ));
        }
        Some(bytes)
    };

    let secret = setting("DUET_BOARD_SECRET", "");
    let secret = if secret.is_empty() {
        random_key()?
    } else {
        base64::decode_key(&secret)
            .ok_or("DUET_BOARD_SECRET: expected a 32-byte key in base64 (44 characters)")?
    };
    let peer_key = setting("DUET_PEER_KEY", "");
    let peer_key = if peer_key.is_empty() {
        None
    } else {
        Some(
            base64::decode_key(&peer_key)
                .ok_or("DUET_PEER_KEY: expected a public key in base64, as `duet id` prints it")?,
        )
    };

    // Debug formatting of arrays and options is valid Rust source.
    Ok(format!(
        "/// The board's IPv4 address (`DUET_ADDR`).
pub const ADDRESS: [u8; 4] = {ip:?};
/// The prefix length of the board's subnet (`DUET_ADDR`).
pub const PREFIX_LEN: u8 = {prefix};
/// The default route (`DUET_GATEWAY`).
pub const GATEWAY: [u8; 4] = {gateway:?};
/// The UDP port duet binds (`DUET_PORT`).
pub const PORT: u16 = {port};
/// The peer greeted at boot (`DUET_PEER`).
pub const PEER_IP: [u8; 4] = {peer_ip:?};
/// The peer's port (`DUET_PEER`).
pub const PEER_PORT: u16 = {peer_port};
/// A fixed Ethernet address (`DUET_MAC`), or `None` for the chip's own.
pub const MAC: Option<[u8; 6]> = {mac:?};
/// The board's X25519 secret key (`DUET_BOARD_SECRET`, or random per build).
pub const BOARD_SECRET: [u8; 32] = {secret:?};
/// The public key of the peer at `PEER_IP:PEER_PORT` (`DUET_PEER_KEY`), if given.
pub const PEER_KEY: Option<[u8; 32]> = {peer_key:?};
",
        ip = ip.octets(),
        gateway = gateway.octets(),
        peer_ip = peer.ip().octets(),
        peer_port = peer.port(),
    ))
}

/// 32 bytes from the build machine's random source, for a board secret nobody chose.
fn random_key() -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| format!("no /dev/urandom for the board's key ({e}): set DUET_BOARD_SECRET"))?;
    Ok(key)
}
