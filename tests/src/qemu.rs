//! The firmware under QEMU: build it once, measure it with `llvm-size`, and boot boards on
//! QEMU's `mps2-an385` with user networking (no root), each on its own host port.
//!
//! A [`Board`] is the firmware's own runner (`firmware/qemu-run.sh`, what `cargo run`
//! uses) with its console on a pipe; it is ready once it printed `duet ready at`, and QEMU
//! is killed when the handle is dropped, even when the test fails. A [`Host`] is a host
//! duet identity in its own config directory; [`Host::pair`] pairs it and a board both
//! ways, as a person would: `duet pair add` on the host, `/pair` on the board's console.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::peers::require_tool;
use crate::process::{Home, Proc, duet_bin, free_port, local, workspace_root};

/// The firmware's folder (its own cargo workspace).
pub fn firmware_dir() -> PathBuf {
    workspace_root().join("firmware")
}

/// Where the firmware is built: `$CARGO_TARGET_DIR/firmware` when the tests were given a
/// target directory (a shared or read-only checkout builds nothing inside the source tree),
/// else the firmware's own `firmware/target`. A subdirectory, not the directory itself:
/// the firmware is another workspace with another target triple, whose build must not mix
/// with the host's. A relative `CARGO_TARGET_DIR` is taken from the workspace root, where
/// cargo is usually run.
pub fn firmware_target_dir() -> PathBuf {
    firmware_target_dir_for(std::env::var_os("CARGO_TARGET_DIR").as_deref())
}

fn firmware_target_dir_for(cargo_target_dir: Option<&std::ffi::OsStr>) -> PathBuf {
    match cargo_target_dir.filter(|d| !d.is_empty()) {
        Some(dir) => workspace_root().join(dir).join("firmware"),
        None => firmware_dir().join("target"),
    }
}

/// How long a booted board may take to print its readiness line.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Build the firmware (`cargo build --release` in `firmware/`, into
/// [`firmware_target_dir`]) once per test process and return the ELF's path. `DUET_FIRMWARE_ELF` names a prebuilt ELF instead (say, one built
/// with `DEFMT_LOG=trace` to debug a failure).
pub fn firmware_elf() -> PathBuf {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| {
        if let Some(elf) = std::env::var_os("DUET_FIRMWARE_ELF") {
            return PathBuf::from(elf);
        }
        let dir = firmware_dir();
        let target = firmware_target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release"])
            .current_dir(&dir)
            // The firmware is its own workspace with its own target folder and target triple
            // (.cargo/config.toml); what the outer `cargo test` was told about its build
            // target or host flags must not leak into it, and its target dir only as the
            // parent of the firmware's own.
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            // The tests expect the default network settings (build.rs).
            .env_remove("DUET_ADDR")
            .env_remove("DUET_GATEWAY")
            .env_remove("DUET_PORT")
            .env_remove("DUET_PEER")
            .env_remove("DUET_MAC")
            .env_remove("DUET_PEER_KEY")
            .env_remove("DUET_BOARD_SECRET")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .expect("cannot run cargo to build the firmware");
        assert!(
            status.success(),
            "building the firmware failed: run `cargo build --release` in {}",
            dir.display()
        );
        let elf = target
            .join("thumbv7m-none-eabi")
            .join("release")
            .join("duet-firmware");
        assert!(elf.is_file(), "no firmware ELF at {}", elf.display());
        elf
    })
    .clone()
}

/// What the firmware occupies, from `llvm-size`'s Berkeley columns.
#[derive(Clone, Copy, Debug)]
pub struct FirmwareSize {
    /// Code and read-only data (`.vector_table`, `.text`, `.rodata`).
    pub text: u64,
    /// Initialised statics: their image in flash, their home in RAM.
    pub data: u64,
    /// Zeroed statics.
    pub bss: u64,
}

impl FirmwareSize {
    /// Bytes of flash: code, constants and the initial values of `.data`.
    pub fn flash(&self) -> u64 {
        self.text + self.data
    }

    /// Bytes of RAM taken by statics (the stack comes on top).
    pub fn static_ram(&self) -> u64 {
        self.data + self.bss
    }
}

/// The `llvm-size` of the pinned toolchain (rustup component `llvm-tools`).
pub fn llvm_size() -> PathBuf {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(firmware_dir())
        .output()
        .expect("cannot run rustc --print sysroot");
    assert!(sysroot.status.success(), "rustc --print sysroot failed");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let tool = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host_triple())
        .join("bin/llvm-size");
    assert!(
        tool.is_file(),
        "no llvm-size at {}: rustup component add llvm-tools",
        tool.display()
    );
    tool
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("cannot run rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .expect("rustc -vV names no host")
}

/// Measure `elf` with `llvm-size`.
pub fn firmware_size(elf: &Path) -> FirmwareSize {
    let out = Command::new(llvm_size())
        .arg("--format=berkeley")
        .arg(elf)
        .output()
        .expect("cannot run llvm-size");
    assert!(
        out.status.success(),
        "llvm-size failed on {}",
        elf.display()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // "   text    data     bss     dec     hex filename" then one row of numbers.
    let row: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|n| n.parse().ok())
        .collect();
    match row[..] {
        [text, data, bss] => FirmwareSize { text, data, bss },
        _ => panic!("cannot read llvm-size's output:\n{text}"),
    }
}

/// A board running the firmware under QEMU, console on pipes. QEMU dies with the handle.
pub struct Board {
    /// The console: lines the board printed, and a way to type.
    pub console: Proc,
    /// The host UDP port forwarded to the board's duet port.
    pub port: u16,
    /// Where the board's raw defmt frames go (`defmt-print -e ELF < FILE` decodes them).
    pub defmt_log: PathBuf,
    /// The board's public key, as its console printed it (`duet id KEY`).
    pub key: String,
}

impl Board {
    /// Build the firmware if needed, boot it with its duet port forwarded from a free host
    /// port, and wait for its readiness line.
    pub fn boot() -> Board {
        require_tool("qemu-system-arm", "qemu-system-arm");
        let elf = firmware_elf();
        let port = free_port();
        let defmt_log = std::env::temp_dir().join(format!("duet-board-{port}.defmt"));
        let mut command = Command::new(firmware_dir().join("qemu-run.sh"));
        command
            .arg(&elf)
            .env("DUET_BOARD_PORT", port.to_string())
            .env("DUET_DEFMT_OUT", &defmt_log)
            .env_remove("DUET_GUEST_PORT")
            .env_remove("DUET_NIC");
        let console = Proc::spawn(&mut command, &format!("board on 127.0.0.1:{port}"));
        let mut board = Board {
            console,
            port,
            defmt_log,
            key: String::new(),
        };
        let id = board.expect("duet id ", BOOT_TIMEOUT);
        board.key = id
            .trim_end_matches('\r')
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(board.key.len(), 44, "no key in the board's id line {id:?}");
        board.expect("duet ready at 10.0.2.15:7789", BOOT_TIMEOUT);
        eprintln!(
            "board on 127.0.0.1:{port}; defmt log: defmt-print -e {} < {}",
            elf.display(),
            board.defmt_log.display()
        );
        board
    }

    /// `127.0.0.1:PORT`: where a host duet reaches the board.
    pub fn addr(&self) -> String {
        local(self.port)
    }

    /// Wait for a console line containing `needle`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        self.console.expect(needle, timeout)
    }

    /// Type a line on the board's console.
    pub fn type_line(&mut self, line: &str) {
        self.console.type_line(line);
    }

    /// Every console line so far that starts with `prefix`, in order, without the prefix
    /// and the terminal's CR.
    pub fn lines_with(&self, prefix: &str) -> Vec<String> {
        self.console
            .seen
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect()
    }

    /// Point the board at the host duet with public key `key` on host port `port`
    /// (`/pair KEY 10.0.2.2:PORT`: the host as the board sees it through QEMU).
    pub fn pair(&mut self, key: &str, port: u16) {
        self.type_line(&format!("/pair {key} 10.0.2.2:{port}"));
        self.expect(
            &format!("paired with {key} at 10.0.2.2:{port}"),
            Duration::from_secs(10),
        );
    }

    /// Type `/status` and return its lines.
    pub fn status(&mut self) -> Vec<String> {
        self.type_line("/status");
        [
            "board",
            "peer",
            "duet id",
            "sealed",
            "datagrams",
            "nic",
            "ram",
        ]
        .iter()
        .map(|part| {
            let line = self.expect(&format!("status: {part}"), Duration::from_secs(10));
            line.trim_end_matches('\r').to_owned()
        })
        .collect()
    }

    /// Type `/status` and read one counter from it (`unauthenticated`, `messages in`, ...).
    pub fn status_counter(&mut self, name: &str) -> u64 {
        let lines = self.status();
        lines
            .iter()
            .find_map(|line| counter(line, name))
            .unwrap_or_else(|| panic!("no counter {name:?} in /status:\n{}", lines.join("\n")))
    }
}

/// A host duet: its own identity in its own config directory ([`Home`]), removed on drop.
pub struct Host {
    home: Home,
    /// Its public key, as `duet id` printed it.
    pub key: String,
}

impl Host {
    /// A fresh identity (`duet id` creates it).
    pub fn create() -> Host {
        let home = Home::new("firmware");
        let key = home.key();
        assert_eq!(key.len(), 44, "duet id printed no key: {key:?}");
        Host { home, key }
    }

    /// Run `duet ARGS` to the end; its standard output. Panics if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(duet_bin())
            .args(self.home.args(args))
            .output()
            .expect("cannot run duet");
        assert!(
            out.status.success(),
            "duet {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `duet ARGS` (see [`Proc`]).
    pub fn spawn(&self, args: &[&str]) -> Proc {
        self.home.duet(args)
    }

    /// Pair with `board` both ways: the host knows it as `board` at its forwarded port,
    /// the board knows the host's key at host port `port`.
    pub fn pair(&self, board: &mut Board, port: u16) {
        self.add(board);
        board.pair(&self.key, port);
    }

    /// The host half of pairing: `duet pair add board KEY --addr 127.0.0.1:PORT` (a
    /// `duet listen` refuses to start before it has a peer).
    pub fn add(&self, board: &Board) {
        self.run(&["pair", "add", "board", &board.key, "--addr", &board.addr()]);
    }
}

/// The number after `name ` in a `/status` line.
pub fn counter(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!("{name} "))? + name.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod test {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_firmware_builds_under_cargo_target_dir_when_one_is_set() {
        assert_eq!(
            firmware_target_dir_for(Some(OsStr::new("/build/duet"))),
            Path::new("/build/duet/firmware")
        );
        assert_eq!(
            firmware_target_dir_for(Some(OsStr::new("out"))),
            workspace_root().join("out").join("firmware")
        );
        assert_eq!(firmware_target_dir_for(None), firmware_dir().join("target"));
        assert_eq!(
            firmware_target_dir_for(Some(OsStr::new(""))),
            firmware_dir().join("target")
        );
    }
}
