//! The firmware's build-time settings: environment variables read by each board's
//! `build.rs`, checked, and written out as a Rust constant the board passes to the shared
//! application (`duet_firmware_app::Settings`). A bad value fails the build with a message
//! naming the variable, instead of failing on the board.
//!
//! Settings (each board chooses the defaults, see [`Defaults`]):
//! - `DUET_ADDR`: the board's IPv4 address and prefix, e.g. `10.0.2.15/24`;
//! - `DUET_GATEWAY`: the default route;
//! - `DUET_PORT`: the UDP port duet listens on;
//! - `DUET_PEER`: the peer the board greets at boot, `IPv4:PORT`;
//! - `DUET_MAC`: the Ethernet address, e.g. `02:00:00:00:00:01`; by default the board's own;
//! - `DUET_BOARD_SECRET`: the board's X25519 secret key in base64 (44 characters, as
//!   `duet id` prints a public key); without it see [`SecretDefault`];
//! - `DUET_PEER_KEY`: the public key of the peer at `DUET_PEER` (base64, from `duet id`
//!   there); without it the board waits for `/pair` on its console.
//!
//! Host-side only (build scripts run on the build machine), so this crate uses `std`.

use std::net::{Ipv4Addr, SocketAddrV4};

#[allow(dead_code)]
#[path = "../../app/src/base64.rs"]
mod base64;

/// Every variable this crate reads, for `cargo:rerun-if-env-changed`.
pub const VARIABLES: [&str; 7] = [
    "DUET_ADDR",
    "DUET_GATEWAY",
    "DUET_PORT",
    "DUET_PEER",
    "DUET_MAC",
    "DUET_BOARD_SECRET",
    "DUET_PEER_KEY",
];

/// Where the board's secret key comes from when `DUET_BOARD_SECRET` is not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretDefault {
    /// A fresh random key from the build machine, baked into the image: for a board with
    /// nowhere to keep a key (QEMU), so every build has its own identity.
    RandomPerBuild,
    /// None in the image: the board draws one from its hardware RNG at first boot and keeps
    /// it in flash.
    FromBoard,
}

/// A board's defaults for the settings left unset.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// `DUET_ADDR`.
    pub addr: &'static str,
    /// `DUET_GATEWAY`.
    pub gateway: &'static str,
    /// `DUET_PORT`.
    pub port: &'static str,
    /// `DUET_PEER`.
    pub peer: &'static str,
    /// Without `DUET_BOARD_SECRET`.
    pub secret: SecretDefault,
}

/// The settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The board's address.
    pub address: Ipv4Addr,
    /// Its subnet's prefix length, 1 to 32.
    pub prefix_len: u8,
    /// The default route.
    pub gateway: Ipv4Addr,
    /// duet's UDP port, never 0.
    pub port: u16,
    /// The peer greeted at boot.
    pub peer: SocketAddrV4,
    /// A fixed unicast Ethernet address, or the board's own.
    pub mac: Option<[u8; 6]>,
    /// The board's secret key, if the image carries one.
    pub board_secret: Option<[u8; 32]>,
    /// The public key of `peer`, if given.
    pub peer_key: Option<[u8; 32]>,
}

/// Read and check the settings; `var` looks a variable up (`std::env::var(..).ok()` in a
/// build script), `random_key` supplies a key for [`SecretDefault::RandomPerBuild`].
pub fn read(
    var: impl Fn(&str) -> Option<String>,
    defaults: &Defaults,
    random_key: impl FnOnce() -> Result<[u8; 32], String>,
) -> Result<Settings, String> {
    let setting = |name: &str, default: &str| {
        var(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };

    let addr = setting("DUET_ADDR", defaults.addr);
    let (ip, prefix) = addr
        .split_once('/')
        .ok_or_else(|| format!("DUET_ADDR={addr:?}: expected ADDRESS/PREFIX, e.g. 10.0.2.15/24"))?;
    let address: Ipv4Addr = ip.parse().map_err(|e| format!("DUET_ADDR={addr:?}: {e}"))?;
    let prefix_len: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("DUET_ADDR={addr:?}: the prefix must be 1 to 32"))?;

    let gateway = setting("DUET_GATEWAY", defaults.gateway);
    let gateway: Ipv4Addr = gateway
        .parse()
        .map_err(|e| format!("DUET_GATEWAY={gateway:?}: {e}"))?;

    let port = setting("DUET_PORT", defaults.port);
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("DUET_PORT={port:?}: expected a port from 1 to 65535"))?;

    let peer = setting("DUET_PEER", defaults.peer);
    let peer: SocketAddrV4 = peer
        .parse()
        .map_err(|e| format!("DUET_PEER={peer:?}: expected IPv4:PORT ({e})"))?;

    let mac = setting("DUET_MAC", "");
    let mac = if mac.is_empty() {
        None
    } else {
        Some(parse_mac(&mac).map_err(|e| format!("DUET_MAC={mac:?}: {e}"))?)
    };

    let secret = setting("DUET_BOARD_SECRET", "");
    let board_secret = if !secret.is_empty() {
        Some(
            base64::decode_key(&secret)
                .ok_or("DUET_BOARD_SECRET: expected a 32-byte key in base64 (44 characters)")?,
        )
    } else {
        match defaults.secret {
            SecretDefault::RandomPerBuild => Some(random_key()?),
            SecretDefault::FromBoard => None,
        }
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

    Ok(Settings {
        address,
        prefix_len,
        gateway,
        port,
        peer,
        mac,
        board_secret,
        peer_key,
    })
}

/// `02:00:00:00:00:01` as six bytes; a multicast address (low bit of the first byte) is
/// refused, since no NIC can have one.
fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| {
            (b.len() == 2)
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
                .ok_or_else(|| format!("{b:?} is not a two-digit hex byte"))
        })
        .collect::<Result<_, _>>()?;
    let bytes: [u8; 6] = bytes
        .try_into()
        .map_err(|_| "expected six bytes like 02:00:00:00:00:01".to_owned())?;
    if bytes[0] & 1 != 0 {
        return Err("a multicast address cannot be a NIC's".to_owned());
    }
    Ok(bytes)
}

impl Settings {
    /// The settings as Rust source: `pub const SETTINGS: duet_firmware_app::Settings`, for
    /// the board to `include!`. Debug formatting of arrays and options is valid Rust.
    pub fn to_rust(&self) -> String {
        format!(
            "/// The build-time settings (see the `duet-board-config` crate).
pub const SETTINGS: duet_firmware_app::Settings = duet_firmware_app::Settings {{
    address: {address:?},
    prefix_len: {prefix_len},
    gateway: {gateway:?},
    port: {port},
    peer_ip: {peer_ip:?},
    peer_port: {peer_port},
    mac: {mac:?},
    board_secret: {board_secret:?},
    peer_key: {peer_key:?},
}};
",
            address = self.address.octets(),
            prefix_len = self.prefix_len,
            gateway = self.gateway.octets(),
            port = self.port,
            peer_ip = self.peer.ip().octets(),
            peer_port = self.peer.port(),
            mac = self.mac,
            board_secret = self.board_secret,
            peer_key = self.peer_key,
        )
    }
}

/// What a board's `build.rs` does: read the settings from the environment (asking cargo to
/// rerun when one changes) and write them to `OUT_DIR/config.rs`.
pub fn write_config(defaults: &Defaults) -> Result<(), String> {
    use std::io::Read as _;
    for name in VARIABLES {
        println!("cargo:rerun-if-env-changed={name}");
    }
    let random_key = || {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| {
                format!("no /dev/urandom for the board's key ({e}): set DUET_BOARD_SECRET")
            })?;
        Ok(key)
    };
    let settings = read(|name| std::env::var(name).ok(), defaults, random_key)
        .map_err(|e| format!("firmware build settings: {e}"))?;
    let out = std::env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?;
    let path = std::path::Path::new(&out).join("config.rs");
    std::fs::write(&path, settings.to_rust()).map_err(|e| format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const QEMU: Defaults = Defaults {
        addr: "10.0.2.15/24",
        gateway: "10.0.2.2",
        port: "7789",
        peer: "10.0.2.2:7788",
        secret: SecretDefault::RandomPerBuild,
    };
    const BOARD: Defaults = Defaults {
        secret: SecretDefault::FromBoard,
        ..QEMU
    };
    /// A key and its base64, as `duet id` would print it.
    const KEY_TEXT: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn with(vars: &[(&str, &str)], defaults: &Defaults) -> Result<Settings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(|name| vars.get(name).cloned(), defaults, || Ok([7; 32]))
    }

    fn error(vars: &[(&str, &str)]) -> String {
        with(vars, &QEMU).expect_err("the settings were accepted")
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = with(&[], &QEMU).unwrap();
        assert_eq!(s.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(s.prefix_len, 24);
        assert_eq!(s.gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(s.port, 7789);
        assert_eq!(s.peer, "10.0.2.2:7788".parse().unwrap());
        assert_eq!((s.mac, s.peer_key), (None, None));
        assert_eq!(s.board_secret, Some([7; 32]), "the per-build random key");
    }

    #[test]
    fn a_board_with_a_hardware_rng_gets_no_secret_in_its_image() {
        assert_eq!(with(&[], &BOARD).unwrap().board_secret, None);
        let set = with(&[("DUET_BOARD_SECRET", KEY_TEXT)], &BOARD).unwrap();
        let expected: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(
            set.board_secret,
            Some(expected),
            "a given secret still wins"
        );
    }

    #[test]
    fn given_settings_replace_the_defaults() {
        let s = with(
            &[
                ("DUET_ADDR", "192.168.1.50/16"),
                ("DUET_GATEWAY", "192.168.1.1"),
                ("DUET_PORT", "9000"),
                ("DUET_PEER", "192.168.1.20:7788"),
                ("DUET_MAC", "02:00:00:aB:cd:01"),
                ("DUET_PEER_KEY", KEY_TEXT),
            ],
            &QEMU,
        )
        .unwrap();
        assert_eq!(
            (s.address, s.prefix_len),
            (Ipv4Addr::new(192, 168, 1, 50), 16)
        );
        assert_eq!(s.gateway, Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(s.port, 9000);
        assert_eq!(s.peer, "192.168.1.20:7788".parse().unwrap());
        assert_eq!(s.mac, Some([2, 0, 0, 0xab, 0xcd, 1]));
        assert_eq!(s.peer_key.map(|k| k[31]), Some(31));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (vars, needle) in [
            (&[("DUET_ADDR", "10.0.2.15")][..], "DUET_ADDR"),
            (&[("DUET_ADDR", "10.0.2.15/33")], "prefix"),
            (&[("DUET_ADDR", "10.0.2.15/0")], "prefix"),
            (&[("DUET_ADDR", "10.0.2/24")], "DUET_ADDR"),
            (&[("DUET_GATEWAY", "gateway")], "DUET_GATEWAY"),
            (&[("DUET_PORT", "0")], "DUET_PORT"),
            (&[("DUET_PORT", "65536")], "DUET_PORT"),
            (&[("DUET_PEER", "10.0.2.2")], "DUET_PEER"),
            (&[("DUET_PEER", "[::1]:7788")], "DUET_PEER"),
            (&[("DUET_MAC", "02:00:00:00:00")], "six bytes"),
            (&[("DUET_MAC", "02:00:00:00:00:1")], "two-digit"),
            (&[("DUET_MAC", "03:00:00:00:00:01")], "multicast"),
            (&[("DUET_BOARD_SECRET", "short")], "DUET_BOARD_SECRET"),
            (&[("DUET_PEER_KEY", &KEY_TEXT[1..])], "DUET_PEER_KEY"),
        ] {
            let e = error(vars);
            assert!(
                e.contains(needle),
                "{vars:?}: {e:?} does not mention {needle:?}"
            );
        }
    }

    #[test]
    fn the_generated_source_carries_every_setting() {
        let s = with(&[("DUET_MAC", "02:00:00:00:00:01")], &QEMU).unwrap();
        let rust = s.to_rust();
        for needle in [
            "address: [10, 0, 2, 15],",
            "prefix_len: 24,",
            "gateway: [10, 0, 2, 2],",
            "port: 7789,",
            "peer_ip: [10, 0, 2, 2],",
            "peer_port: 7788,",
            "mac: Some([2, 0, 0, 0, 0, 1]),",
            "peer_key: None,",
        ] {
            assert!(rust.contains(needle), "no {needle:?} in:\n{rust}");
        }
    }
}
