//! The real `duet` binaries on loopback, beside raw UDP measured in the same run: the path
//! users run (processes, pipes, the history store), not the core alone.
//!
//! Each round measures, one after the other on 127.0.0.1 (fresh ports and fresh paired
//! config directories for every run, nothing pinned):
//! - raw UDP: 20,000 datagrams of a line's size (and of a full duet datagram) blasted one way
//!   from one `std::net::UdpSocket` to another read in a thread with a large `SO_RCVBUF`,
//!   rated from the first send to the last receipt, three times in a row, the median
//!   taken; and the median of 2,000 ping-pongs;
//! - `duet chat b` in line mode with 20,000 lines of 40 bytes written to its stdin at once,
//!   to `duet listen --count 20000`: lines/s from the first write to listen having printed
//!   the last one, and to chat's exit (every line acknowledged). Then the receiver's
//!   `duet history` must hold every line exactly once, or the bench stops with an error;
//! - `duet send --to b` of the same 20,000 lines as arguments (one text, which send splits
//!   into messages of at most four datagrams): from spawning send to listen having printed
//!   every message and to send's exit; the history is checked the same way;
//! - the acknowledgement's round trip through the binaries: one line at a time into chat,
//!   waiting for its `* #N delivered` line on chat's stdout, median over 500 lines;
//! - after the rounds, in as many rounds again: a file (64 MiB) from `duet send --file` to
//!   `duet listen`, beside a raw blast of as many bytes in full datagrams, in MB/s; the
//!   saved copy must equal the original, or the bench stops with an error.
//!
//! Then, when `strace` is installed, the system calls per message of the sending chat and
//! of the receiving listen over a 2,000-line run (`strace -f -c`).
//!
//! It builds the release `duet` itself (`cargo build --release -p duet-host`) and runs only
//! that binary. Nothing here asserts a time: it prints a table of ratios to raw UDP from the
//! same round. The one check that stops it is a message missing from or doubled in the
//! history. Every wait has a deadline and every process is killed when dropped.
//!
//! Run: `cargo bench -p duet-tests --bench binaries`. Environment: `DUET_BENCH_ROUNDS`
//! (default 3; the summary gives the median and the range over rounds), `DUET_BENCH_LINES`
//! (default 20000, at most 99999), `DUET_BENCH_STRACE=0` to skip the system call profile,
//! `DUET_BENCH_FILE_MIB` (default 64; 0 skips the file), `DUET_BENCH_DUET` (a `duet` binary
//! to time instead of building the release one: to compare two builds).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use duet_core::MAX_DATAGRAM;
use duet_core::session::PART_TEXT;
use duet_host::app::conversation::messages_of;
use duet_tests::process::cargo_bin_release;
use duet_tests::{Home, duet_bin, free_port, local, pair_homes, use_duet_bin};

/// The file `duet send --file` carries, in MiB (`DUET_BENCH_FILE_MIB`; 0 skips it).
const FILE_MIB: usize = 64;
/// Bytes of every line, without its newline: `line 00001 ` and filler.
const LINE_LEN: usize = 40;
/// Lines per throughput run, unless `DUET_BENCH_LINES` says otherwise.
const LINES: usize = 20_000;
/// The most lines the five-digit numbering can tell apart.
const MAX_LINES: usize = 99_999;
/// Round trips measured through the binaries, after [`WARM_UP`] not measured.
const ROUND_TRIPS: usize = 500;
/// Round trips first, not measured: the handshake and SQLite's first pages.
const WARM_UP: usize = 20;
/// Raw UDP ping-pongs measured, after [`WARM_UP`].
const RAW_ROUND_TRIPS: usize = 2_000;
/// Lines of the run under strace.
const PROFILE_LINES: usize = 2_000;
/// The raw receiver's socket buffer (Linux doubles it and caps it at `net.core.rmem_max`).
const RCVBUF: usize = 4 << 20;
/// How long a raw receiver waits for one more datagram before it counts the rest lost.
const RAW_QUIET: Duration = Duration::from_millis(200);
/// How long a process may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);
/// The longest one run of the binaries may take before the bench gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// The longest one acknowledgement may take before the bench gives up.
const ACK_LIMIT: Duration = Duration::from_secs(10);
/// Output lines of a failed process shown in the error.
const SHOWN_ON_FAILURE: usize = 20;
/// Characters of each of those lines shown.
const SHOWN_CHARS: usize = 160;

type Res<T> = Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let rounds = env_usize("DUET_BENCH_ROUNDS", 3).max(1);
    let count = env_usize("DUET_BENCH_LINES", LINES).clamp(1, MAX_LINES);
    // Another build to compare with this one, run by the same bench (A/B on a noisy
    // machine: alternate the two, one round each).
    let bin = match std::env::var_os("DUET_BENCH_DUET") {
        Some(path) => std::path::PathBuf::from(path),
        None => cargo_bin_release("duet-host", "duet"),
    };
    if !use_duet_bin(bin.clone()) {
        return Err("another duet binary was chosen before the release build".into());
    }
    println!("{}", machine());
    println!(
        "duet: {}; {rounds} round(s) of {count} lines of {LINE_LEN} bytes",
        bin.display()
    );
    // History files on the workspace's disk, like a user's config directory, not in a
    // temporary directory that may be in memory.
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("binaries");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let lines = numbered_lines(count);
    let started = Instant::now();
    let mut rows = Vec::new();
    for round in 1..=rounds {
        let row = measure(round, &scratch, &lines)?;
        println!("{}", row.line());
        rows.push(row);
    }
    print!("{}", summary(&rows, count));
    let mib = env_usize("DUET_BENCH_FILE_MIB", FILE_MIB);
    if mib == 0 {
        println!("\nfile transfer: skipped (DUET_BENCH_FILE_MIB=0)");
    } else {
        let mut runs = Vec::new();
        for round in 1..=rounds {
            let run = file_to_listen(&scratch, mib)?;
            println!("{}", run.line(round));
            runs.push(run);
        }
        print!("{}", file_summary(&runs));
    }
    let strace_wanted = std::env::var("DUET_BENCH_STRACE").map_or(true, |v| v != "0");
    if !strace_wanted {
        println!("\nsystem call profile: skipped (DUET_BENCH_STRACE=0)");
    } else if !strace_installed() {
        println!("\nsystem call profile: skipped, strace is not installed");
    } else {
        print!("{}", profile(&scratch)?);
    }
    println!(
        "\ntotal {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The machine, as far as /proc tells it.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {model}, {cpus} CPU(s), Linux {}; load average at the start {}",
        kernel.trim(),
        load_average()
    )
}

/// The 1-, 5- and 15-minute load averages: other work on the machine skews every figure.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `line 00001 abc…`, [`LINE_LEN`] bytes each, numbered from 1.
fn numbered_lines(count: usize) -> Vec<String> {
    const FILLER: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
    (1..=count)
        .map(|n| {
            let mut line = format!("line {n:05} ");
            let room = LINE_LEN - line.len();
            line.push_str(&FILLER[..room]);
            line
        })
        .collect()
}

/// The index of a numbered line, from its text.
fn line_index(text: &str) -> Option<usize> {
    text.strip_prefix("line ")?
        .get(..5)?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// "median (min–max)" of one figure over the rounds.
fn spread(v: Vec<f64>, decimals: usize) -> String {
    let finite: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        return "–".into();
    }
    let (lo, hi) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let m = median(finite.clone());
    if finite.len() == 1 || (hi - lo) < 0.5 * 10f64.powi(-(decimals as i32)) {
        format!("{m:.decimals$}")
    } else {
        format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
    }
}

/// A whole number with thousands separators.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Raw UDP
// ---------------------------------------------------------------------------------------

/// One raw one-way blast.
#[derive(Clone, Copy, Debug)]
struct Blast {
    /// Datagrams received per second, from the first send to the last receipt.
    rate: f64,
    /// The share of datagrams sent that never arrived.
    lost: f64,
}

fn loopback() -> Res<UdpSocket> {
    UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind a loopback socket: {e}"))
}

/// `count` datagrams of `size` bytes one way, as fast as the sender goes.
/// Raw blasts in a row, of which [`raw_blast_median`] takes the middle one.
const RAW_BLASTS: usize = 3;

/// The median of [`RAW_BLASTS`] raw blasts (by rate; the largest loss of them). One blast
/// of 20,000 datagrams takes ~30 ms, and on two shared CPUs its rate varied by a third from
/// one to the next (where the two threads happened to run), which made every ratio to it
/// swing as much; the median of three is as likely to be the faster as the slower.
fn raw_blast_median(size: usize, count: usize) -> Res<Blast> {
    let mut blasts = (0..RAW_BLASTS)
        .map(|_| raw_blast(size, count))
        .collect::<Res<Vec<Blast>>>()?;
    let lost = blasts.iter().map(|b| b.lost).fold(0.0, f64::max);
    blasts.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let middle = blasts[blasts.len() / 2];
    Ok(Blast {
        rate: middle.rate,
        lost,
    })
}

fn raw_blast(size: usize, count: usize) -> Res<Blast> {
    let rx = loopback()?;
    let tx = loopback()?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    // Best effort: a smaller buffer only loses more datagrams, which the figure shows.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&rx, RCVBUF);
    rx.set_read_timeout(Some(RAW_QUIET))
        .map_err(|e| e.to_string())?;
    let ready = Arc::new(Barrier::new(2));
    let receiver = {
        let ready = Arc::clone(&ready);
        thread::spawn(move || {
            let mut buf = [0u8; MAX_DATAGRAM + 1];
            let (mut received, mut last) = (0usize, None);
            ready.wait();
            // Bounded: every datagram counted was sent, and a quiet socket ends it.
            while received < count {
                match rx.recv_from(&mut buf) {
                    Ok(_) => {
                        received += 1;
                        last = Some(Instant::now());
                    }
                    Err(_) => break,
                }
            }
            (received, last)
        })
    };
    let payload = vec![b'x'; size];
    ready.wait();
    let start = Instant::now();
    let mut sent = 0usize;
    for _ in 0..count {
        if tx.send_to(&payload, to).is_ok() {
            sent += 1;
        }
    }
    let (received, last) = receiver
        .join()
        .map_err(|_| "the raw receiver panicked".to_owned())?;
    let span = last.map_or(0.0, |l| (l - start).as_secs_f64());
    Ok(Blast {
        rate: if span > 0.0 {
            received as f64 / span
        } else {
            f64::NAN
        },
        lost: 1.0 - received as f64 / sent.max(1) as f64,
    })
}

/// The median raw UDP round trip in µs: one datagram of `size` there, the same back.
fn raw_ping_pong(size: usize, count: usize) -> Res<f64> {
    let echo = loopback()?;
    let pinger = loopback()?;
    let to = echo.local_addr().map_err(|e| e.to_string())?;
    echo.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    pinger
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let echoer = thread::spawn(move || {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        // Ends on the empty datagram below, or when nothing came for two seconds.
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let payload = vec![b'x'; size];
    let mut buf = [0u8; MAX_DATAGRAM + 1];
    let mut samples = Vec::with_capacity(count);
    for i in 0..WARM_UP + count {
        let t0 = Instant::now();
        pinger
            .send_to(&payload, to)
            .map_err(|e| format!("raw ping: {e}"))?;
        if pinger.recv_from(&mut buf).is_ok() && i >= WARM_UP {
            samples.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = pinger.send_to(&[], to);
    echoer
        .join()
        .map_err(|_| "the echo thread panicked".to_owned())?;
    Ok(median(samples))
}

// ---------------------------------------------------------------------------------------
// The binaries
// ---------------------------------------------------------------------------------------

/// A line of a process's output and when the bench read it.
type Stamped = (Instant, String);

/// How a process ended.
struct Exit {
    /// When the bench saw it gone (within a millisecond).
    at: Instant,
    status: ExitStatus,
    /// CPU seconds it used, all threads, user and system (`None` if /proc did not say).
    cpu: Option<f64>,
}

/// A running process whose output lines arrive stamped on a channel; killed when dropped.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Vec<Stamped>>,
    /// Lines received and not read yet.
    unread: VecDeque<Stamped>,
    /// The last lines read, for error messages.
    recent: VecDeque<String>,
    name: String,
}

/// Send the complete lines of each read of `from`, stamped with the time of that read, until
/// it ends. A batch per read, not a message per line: the bench shares the machine's two
/// CPUs with the processes it measures, and a wake-up of the reading thread for each of
/// 20,000 lines took CPU from them.
fn forward_lines(mut from: impl Read, prefix: &str, to: &Sender<Vec<Stamped>>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let at = Instant::now();
        let ended = n == 0;
        partial.extend_from_slice(&buf[..n]);
        let complete = if ended {
            partial.len()
        } else {
            partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        };
        let mut batch = Vec::new();
        let mut rest = &partial[..complete];
        while !rest.is_empty() {
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            batch.push((at, format!("{prefix}{}", String::from_utf8_lossy(line))));
            rest = next;
        }
        partial.drain(..complete);
        if (!batch.is_empty() && to.send(batch).is_err()) || ended {
            return;
        }
    }
}

impl Running {
    /// `duet --config-dir HOME ARGS`, under `strace -f -c -o FILE` when `trace` names a file.
    fn duet(home: &Home, args: &[&str], stdin: bool, trace: Option<&Path>) -> Res<Running> {
        let name = format!(
            "duet {}",
            args.iter().take(6).copied().collect::<Vec<_>>().join(" ")
        );
        let bin = duet_bin();
        let mut command = match trace {
            Some(file) => {
                let mut c = Command::new("strace");
                c.args(["-f", "-c", "-o"]).arg(file).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        command.args(home.args(args));
        let mut child = command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let (tx, lines) = mpsc::channel();
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let tx2 = tx.clone();
        if let Some(out) = out {
            thread::spawn(move || forward_lines(out, "", &tx));
        }
        if let Some(err) = err {
            thread::spawn(move || forward_lines(err, "stderr: ", &tx2));
        }
        Ok(Running {
            stdin: child.stdin.take(),
            child,
            lines,
            unread: VecDeque::new(),
            recent: VecDeque::new(),
            name,
        })
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "{}: {what}; its last output:\n{}",
            self.name,
            self.recent
                .iter()
                .map(|line| {
                    // A message of `send` is a few kilobytes: the start says enough.
                    let mut shown: String = line.chars().take(SHOWN_CHARS).collect();
                    if shown.len() < line.len() {
                        shown.push('…');
                    }
                    shown
                })
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn take_stdin(&mut self) -> Res<ChildStdin> {
        self.stdin
            .take()
            .ok_or_else(|| self.failure("no stdin to write to"))
    }

    /// The next output line, or an error at `deadline` or when the output ended.
    fn next_line(&mut self, deadline: Instant) -> Res<Stamped> {
        if self.unread.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(batch) => self.unread.extend(batch),
                Err(RecvTimeoutError::Timeout) => return Err(self.failure("no output in time")),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.failure("its output ended"));
                }
            }
        }
        let (at, line) = self
            .unread
            .pop_front()
            .ok_or_else(|| self.failure("an empty batch of output"))?;
        if self.recent.len() == SHOWN_ON_FAILURE {
            self.recent.pop_front();
        }
        self.recent.push_back(line.clone());
        Ok((at, line))
    }

    /// Read lines until one contains `needle`.
    fn wait_for(&mut self, needle: &str, deadline: Instant) -> Res<Stamped> {
        loop {
            let (at, line) = self.next_line(deadline)?;
            if line.contains(needle) {
                return Ok((at, line));
            }
        }
    }

    /// Every line not read yet, up to the end of the output (call after the exit).
    fn rest(&mut self, deadline: Instant) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok((_, line)) = self.next_line(deadline) {
            rest.push(line);
        }
        rest
    }

    /// Wait for the process to end, and read its CPU time while it is a zombie.
    fn exit(&mut self, deadline: Instant) -> Res<Exit> {
        loop {
            let now = Instant::now();
            if let Some(('Z', cpu)) = proc_stat(self.child.id()) {
                let status = self
                    .child
                    .wait()
                    .map_err(|e| self.failure(&e.to_string()))?;
                return Ok(Exit {
                    at: now,
                    status,
                    cpu: Some(cpu),
                });
            }
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return Ok(Exit {
                        at: now,
                        status,
                        cpu: None,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(self.failure(&e.to_string())),
            }
            if now >= deadline {
                return Err(self.failure("did not exit in time"));
            }
            // Exit has no event to block on here; a millisecond is the figures' resolution.
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// An error unless `exit` is a success.
    fn check(&mut self, exit: &Exit) -> Res<()> {
        if exit.status.success() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        self.rest(deadline);
        Err(self.failure(&format!("exited with {}", exit.status)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // strace's tracee first: killing strace alone would leave it running.
        for pid in children(self.child.id()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The direct children of `pid`.
fn children(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A process's state letter and the CPU seconds it used (all threads, user and system).
fn proc_stat(pid: u32) -> Option<(char, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let state = fields.first()?.chars().next()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((state, (utime + stime) / ticks))
}

/// Two freshly paired config directories and the ports they talk on: `a` at `a_port` calls
/// the other `b`, `b` at `b_port` calls it `a`.
struct Pair {
    a: Home,
    b: Home,
    a_port: u16,
    b_port: u16,
}

fn pair(scratch: &Path) -> Pair {
    let (a_port, b_port) = (free_port(), free_port());
    let (a, b) = pair_homes(
        Home::new_in(scratch, "a"),
        Home::new_in(scratch, "b"),
        Some(&local(a_port)),
        Some(&local(b_port)),
    );
    Pair {
        a,
        b,
        a_port,
        b_port,
    }
}

impl Pair {
    /// `duet listen` on b, started and listening.
    fn listen(&self, count: usize, trace: Option<&Path>) -> Res<Running> {
        let (bind, count) = (local(self.b_port), count.to_string());
        let mut listen = Running::duet(
            &self.b,
            &["listen", "--bind", &bind, "--count", &count],
            false,
            trace,
        )?;
        listen.wait_for("* listening on", Instant::now() + START_LIMIT)?;
        Ok(listen)
    }

    /// `duet chat b` on a, in line mode, started and talking.
    fn chat(&self, trace: Option<&Path>) -> Res<Running> {
        let bind = local(self.a_port);
        let mut chat = Running::duet(&self.a, &["chat", "b", "--bind", &bind], true, trace)?;
        chat.wait_for("* talking to b", Instant::now() + START_LIMIT)?;
        Ok(chat)
    }

    /// The texts b's `duet history` holds from a, oldest first.
    fn received(&self) -> Res<Vec<String>> {
        let (code, out) = self.b.run(&["history", "--limit", "1000000"]);
        if code != 0 {
            return Err(format!("duet history failed ({code}):\n{out}"));
        }
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(" <- a: ").map(|(_, text)| text.to_owned()))
            .collect())
    }

    /// Every one of `lines` exactly once in b's history, and nothing else from a.
    fn check_history(&self, lines: &[String]) -> Res<()> {
        let received = self.received()?;
        let mut times = vec![0u32; lines.len()];
        let mut strange = Vec::new();
        for text in &received {
            match line_index(text).filter(|&i| lines.get(i) == Some(text)) {
                Some(i) => times[i] += 1,
                None => strange.push(text.clone()),
            }
        }
        let missing = times.iter().filter(|&&t| t == 0).count();
        let doubled = times.iter().filter(|&&t| t > 1).count();
        if missing + doubled + strange.len() > 0 {
            return Err(format!(
                "the receiver's history holds {} of {} lines: {missing} missing, {doubled} more \
                 than once, {} not sent (first: {:?})",
                received.len(),
                lines.len(),
                strange.len(),
                strange.first()
            ));
        }
        Ok(())
    }
}

/// One throughput run through the binaries.
#[derive(Clone, Copy, Debug)]
struct Flow {
    /// Lines carried.
    lines: usize,
    /// Messages they went as.
    messages: usize,
    /// Datagrams those messages needed (parts).
    parts: usize,
    /// From the first write (or the spawn of send) to listen printing the last message.
    to_printed: Duration,
    /// From the same moment to the sender's exit, everything acknowledged.
    to_exit: Duration,
    /// CPU seconds of the sending and the receiving process.
    sender_cpu: Option<f64>,
    receiver_cpu: Option<f64>,
}

impl Flow {
    fn lines_per_s(&self, span: Duration) -> f64 {
        self.lines as f64 / span.as_secs_f64()
    }
    /// CPU µs per line of a process.
    fn cpu_per_line(&self, cpu: Option<f64>) -> f64 {
        cpu.map_or(f64::NAN, |c| c * 1e6 / self.lines as f64)
    }
}

/// Count listen's message lines until `expected`; when it printed the last.
fn printed(listen: &mut Running, expected: usize, deadline: Instant) -> Res<Instant> {
    let mut count = 0;
    let mut last = Instant::now();
    while count < expected {
        let (at, line) = listen.next_line(deadline)?;
        // `HH:MM:SS a@ADDR: TEXT`; the banner and notices are `HH:MM:SS * …`.
        if line.contains(" a@") {
            count += 1;
            last = at;
        }
    }
    Ok(last)
}

/// `lines` written at once into `duet chat b` (line mode) to `duet listen --count N`.
fn chat_to_listen(scratch: &Path, lines: &[String], trace: Option<(&Path, &Path)>) -> Res<Flow> {
    let n = lines.len();
    let pair = pair(scratch);
    let mut listen = pair.listen(n, trace.map(|t| t.1))?;
    let mut chat = pair.chat(trace.map(|t| t.0))?;
    let mut input = lines.join("\n");
    input.push('\n');
    let mut stdin = chat.take_stdin()?;
    let start = Instant::now();
    // chat reads its input as the outbox makes room, so the writing blocks: a thread of its
    // own. The end of the input is chat's cue to leave once everything is acknowledged.
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let deadline = start + RUN_LIMIT;
    let last = printed(&mut listen, n, deadline)?;
    let chat_exit = chat.exit(deadline)?;
    chat.check(&chat_exit)?;
    let delivered = chat
        .rest(deadline)
        .iter()
        .filter(|l| l.contains(" delivered: line "))
        .count();
    writer
        .join()
        .map_err(|_| "the writer thread panicked".to_owned())?
        .map_err(|e| format!("writing chat's input: {e}"))?;
    let listen_exit = listen.exit(deadline)?;
    listen.check(&listen_exit)?;
    if delivered != n {
        return Err(format!("chat reported {delivered} of {n} lines delivered"));
    }
    pair.check_history(lines)?;
    Ok(Flow {
        lines: n,
        messages: n,
        parts: n,
        to_printed: last - start,
        to_exit: chat_exit.at - start,
        sender_cpu: chat_exit.cpu,
        receiver_cpu: listen_exit.cpu,
    })
}

/// `lines` as the arguments of one `duet send --to b`, to `duet listen --count N`.
fn send_to_listen(scratch: &Path, lines: &[String]) -> Res<Flow> {
    let text = lines.join(" ");
    let pieces = messages_of(&text, false);
    let parts = pieces
        .iter()
        .map(|p| duet_core::text::split(p, PART_TEXT).count())
        .sum();
    let pair = pair(scratch);
    let mut listen = pair.listen(pieces.len(), None)?;
    let bind = local(pair.a_port);
    let mut args = vec!["send", "--to", "b", "--bind", &bind];
    args.extend(lines.iter().map(String::as_str));
    let start = Instant::now();
    let mut send = Running::duet(&pair.a, &args, false, None)?;
    let deadline = start + RUN_LIMIT;
    let last = printed(&mut listen, pieces.len(), deadline)?;
    let send_exit = send.exit(deadline)?;
    send.check(&send_exit)?;
    let said = if pieces.len() > 1 {
        format!("as {} messages", pieces.len())
    } else {
        "* delivered to".to_owned()
    };
    if !send.rest(deadline).iter().any(|l| l.contains(&said)) {
        return Err(send.failure(&format!("did not say it delivered {said}")));
    }
    let listen_exit = listen.exit(deadline)?;
    listen.check(&listen_exit)?;
    if pair.received()? != pieces {
        return Err(format!(
            "the receiver's history does not hold the {} messages send made, in order",
            pieces.len()
        ));
    }
    Ok(Flow {
        lines: lines.len(),
        messages: pieces.len(),
        parts,
        to_printed: last - start,
        to_exit: send_exit.at - start,
        sender_cpu: send_exit.cpu,
        receiver_cpu: listen_exit.cpu,
    })
}

/// One line at a time through chat: µs from writing it to chat printing it delivered.
fn chat_round_trips(scratch: &Path, count: usize) -> Res<Vec<f64>> {
    let lines = numbered_lines(WARM_UP + count);
    let pair = pair(scratch);
    let mut listen = pair.listen(lines.len(), None)?;
    let mut chat = pair.chat(None)?;
    let mut stdin = chat.take_stdin()?;
    let mut samples = Vec::with_capacity(count);
    for (i, line) in lines.iter().enumerate() {
        // The quote in `* #N delivered: QUOTE` is the whole line: it fits a quote's 40
        // characters.
        let needle = format!("delivered: {line}");
        let t0 = Instant::now();
        writeln!(stdin, "{line}").map_err(|e| chat.failure(&format!("write: {e}")))?;
        let (at, _) = chat.wait_for(&needle, t0 + ACK_LIMIT)?;
        if i >= WARM_UP {
            samples.push((at - t0).as_secs_f64() * 1e6);
        }
    }
    drop(stdin);
    let deadline = Instant::now() + RUN_LIMIT;
    let chat_exit = chat.exit(deadline)?;
    chat.check(&chat_exit)?;
    let listen_exit = listen.exit(deadline)?;
    listen.check(&listen_exit)?;
    pair.check_history(&lines)?;
    Ok(samples)
}

// ---------------------------------------------------------------------------------------
// Rounds and the summary
// ---------------------------------------------------------------------------------------

/// Everything measured in one round.
struct Row {
    round: usize,
    load_before: String,
    load_after: String,
    raw_line: Blast,
    raw_full: Blast,
    raw_rtt: f64,
    chat: Flow,
    send: Flow,
    /// `duet send` of one line: what every send pays before its text.
    send_one: Flow,
    duet_rtt: Vec<f64>,
}

fn measure(round: usize, scratch: &Path, lines: &[String]) -> Res<Row> {
    let load_before = load_average();
    let raw_line = raw_blast_median(LINE_LEN, lines.len())?;
    let raw_full = raw_blast_median(MAX_DATAGRAM, lines.len())?;
    let raw_rtt = raw_ping_pong(LINE_LEN, RAW_ROUND_TRIPS)?;
    let chat = chat_to_listen(scratch, lines, None)?;
    let send = send_to_listen(scratch, lines)?;
    let send_one = send_to_listen(scratch, &lines[..1])?;
    let duet_rtt = chat_round_trips(scratch, ROUND_TRIPS)?;
    Ok(Row {
        round,
        load_before,
        load_after: load_average(),
        raw_line,
        raw_full,
        raw_rtt,
        chat,
        send,
        send_one,
        duet_rtt,
    })
}

impl Row {
    fn chat_rate(&self) -> f64 {
        self.chat.lines_per_s(self.chat.to_printed)
    }
    fn chat_exit_rate(&self) -> f64 {
        self.chat.lines_per_s(self.chat.to_exit)
    }
    fn send_rate(&self) -> f64 {
        self.send.lines_per_s(self.send.to_printed)
    }
    fn send_exit_rate(&self) -> f64 {
        self.send.lines_per_s(self.send.to_exit)
    }
    /// Lines/s of send beyond what a one-line send costs (start-up, handshake, goodbye).
    fn send_marginal_rate(&self) -> f64 {
        let extra = self.send.to_exit.saturating_sub(self.send_one.to_exit);
        (self.send.lines - 1) as f64 / extra.as_secs_f64()
    }
    fn send_messages_rate(&self) -> f64 {
        self.send.messages as f64 / self.send.to_printed.as_secs_f64()
    }
    fn send_parts_rate(&self) -> f64 {
        self.send.parts as f64 / self.send.to_printed.as_secs_f64()
    }
    fn rtt(&self) -> f64 {
        median(self.duet_rtt.clone())
    }

    fn line(&self) -> String {
        format!(
            "round {} (load {} → {}) | raw {}/s of {LINE_LEN} B (lost {:.1}%), {}/s of {MAX_DATAGRAM} B (lost {:.1}%), ping-pong {:.1} µs | chat→listen {} lines/s (÷ raw {:.3}), to chat's exit {}/s | send {} lines/s as {} messages (÷ raw {:.3}) | round trip {:.0} µs (p99 {:.0}; {:.1}× raw)",
            self.round,
            self.load_before,
            self.load_after,
            thousands(self.raw_line.rate),
            self.raw_line.lost * 100.0,
            thousands(self.raw_full.rate),
            self.raw_full.lost * 100.0,
            self.raw_rtt,
            thousands(self.chat_rate()),
            self.chat_rate() / self.raw_line.rate,
            thousands(self.chat_exit_rate()),
            thousands(self.send_rate()),
            self.send.messages,
            self.send_rate() / self.raw_line.rate,
            self.rtt(),
            percentile(self.duet_rtt.clone(), 0.99),
            self.rtt() / self.raw_rtt,
        )
    }
}

fn summary(rows: &[Row], lines: usize) -> String {
    let of = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let count = |f: &dyn Fn(&Row) -> f64| {
        let v = of(f);
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if v.len() > 1 && hi / lo > 1.005 {
            format!(
                "{} ({}–{})",
                thousands(median(v)),
                thousands(lo),
                thousands(hi)
            )
        } else {
            thousands(median(v))
        }
    };
    let loads: Vec<String> = rows
        .iter()
        .map(|r| format!("{} → {}", r.load_before, r.load_after))
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## The real binaries ({} round(s); median, range over rounds in brackets)\n\nload average (1, 5, 15 min) per round: {}\n",
        rows.len(),
        loads.join("; ")
    );
    let _ = writeln!(
        s,
        "| measurement | duet | raw UDP, same round | duet ÷ raw |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| `duet chat` line mode → `duet listen`, {lines} lines: lines/s to the last printed | {} | {} datagrams/s ({LINE_LEN} B one way) | **{}** |",
        count(&|r| r.chat_rate()),
        count(&|r| r.raw_line.rate),
        spread(of(&|r| r.chat_rate() / r.raw_line.rate), 4)
    );
    let _ = writeln!(
        s,
        "| the same, lines/s to chat's exit (every line acknowledged) | {} | | {} |",
        count(&|r| r.chat_exit_rate()),
        spread(of(&|r| r.chat_exit_rate() / r.raw_line.rate), 4)
    );
    let _ = writeln!(
        s,
        "| `duet send` of the {lines} lines ({} messages, {} datagrams): lines/s to the last printed | {} | {} datagrams/s ({LINE_LEN} B) | **{}** |",
        rows[0].send.messages,
        rows[0].send.parts,
        count(&|r| r.send_rate()),
        count(&|r| r.raw_line.rate),
        spread(of(&|r| r.send_rate() / r.raw_line.rate), 3)
    );
    let _ = writeln!(
        s,
        "| the same, lines/s to send's exit | {} | | {} |",
        count(&|r| r.send_exit_rate()),
        spread(of(&|r| r.send_exit_rate() / r.raw_line.rate), 3)
    );
    let _ = writeln!(
        s,
        "| the same in messages/s (to the last printed) | {} | | |",
        count(&|r| r.send_messages_rate()),
    );
    let _ = writeln!(
        s,
        "| the same in datagrams/s (to the last printed) | {} | {} datagrams/s ({MAX_DATAGRAM} B one way) | {} |",
        count(&|r| r.send_parts_rate()),
        count(&|r| r.raw_full.rate),
        spread(of(&|r| r.send_parts_rate() / r.raw_full.rate), 3)
    );
    let _ = writeln!(
        s,
        "| `duet send` of one line, to its exit (start-up, handshake, storing, one round trip) | {} ms | | |",
        spread(of(&|r| r.send_one.to_exit.as_secs_f64() * 1e3), 0)
    );
    let _ = writeln!(
        s,
        "| the {lines}-line send's time less the one-line send's, lines/s | {} | | {} |",
        count(&|r| r.send_marginal_rate()),
        spread(of(&|r| r.send_marginal_rate() / r.raw_line.rate), 3)
    );
    let _ = writeln!(
        s,
        "| ack round trip through chat (write a line → `* #N delivered`), p50 over {ROUND_TRIPS} | {} µs | {} µs (ping-pong, {LINE_LEN} B) | **{}×** |",
        spread(of(&|r| r.rtt()), 0),
        spread(of(&|r| r.raw_rtt), 1),
        spread(of(&|r| r.rtt() / r.raw_rtt), 1)
    );
    let _ = writeln!(
        s,
        "\nraw one-way datagrams lost (the receiver's buffer was asked for {} MiB): {} of {LINE_LEN} B, {} of {MAX_DATAGRAM} B",
        RCVBUF >> 20,
        spread(of(&|r| r.raw_line.lost * 100.0), 1) + "%",
        spread(of(&|r| r.raw_full.lost * 100.0), 1) + "%"
    );
    let _ = writeln!(
        s,
        "CPU per line (user + system, all threads): chat {} µs, listen {} µs; send {} µs, its listen {} µs",
        spread(of(&|r| r.chat.cpu_per_line(r.chat.sender_cpu)), 0),
        spread(of(&|r| r.chat.cpu_per_line(r.chat.receiver_cpu)), 0),
        spread(of(&|r| r.send.cpu_per_line(r.send.sender_cpu)), 1),
        spread(of(&|r| r.send.cpu_per_line(r.send.receiver_cpu)), 1),
    );
    let chat_ratio = median(of(&|r| r.chat_rate() / r.raw_line.rate));
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let _ = writeln!(
        s,
        "\nTarget: chat line mode ≥ 0.5× the raw blast (stretch 0.75×): {:.4}× {} (stretch {})",
        chat_ratio,
        verdict(chat_ratio >= 0.5),
        verdict(chat_ratio >= 0.75)
    );
    s
}

// ---------------------------------------------------------------------------------------
// System calls per message
// ---------------------------------------------------------------------------------------

fn strace_installed() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `strace -c` output: calls (and failed calls) per system call.
fn strace_counts(file: &Path) -> Res<Vec<(String, u64, u64)>> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut counts = Vec::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        // `% time  seconds  usecs/call  calls  [errors]  syscall`
        if t.len() < 5 || t[0].parse::<f64>().is_err() || t[t.len() - 1] == "total" {
            continue;
        }
        let calls = t[3].parse().unwrap_or(0);
        let errors = if t.len() == 6 {
            t[4].parse().unwrap_or(0)
        } else {
            0
        };
        counts.push((t[t.len() - 1].to_owned(), calls, errors));
    }
    if counts.is_empty() {
        return Err(format!("{}: no system call counts", file.display()));
    }
    Ok(counts)
}

/// The system calls the brief asks about, and those any loop makes per message.
const PROFILED: [&str; 18] = [
    "pwrite64",
    "pread64",
    "fsync",
    "fdatasync",
    "fcntl",
    "futex",
    "getrandom",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "write",
    "read",
    "ppoll",
    "poll",
    "epoll_wait",
];

fn profile(scratch: &Path) -> Res<String> {
    let lines = numbered_lines(PROFILE_LINES);
    let sender = scratch.join("strace-chat.txt");
    let receiver = scratch.join("strace-listen.txt");
    let load = load_average();
    chat_to_listen(scratch, &lines, Some((&sender, &receiver)))?;
    let (tx, rx) = (strace_counts(&sender)?, strace_counts(&receiver)?);
    let per = |counts: &[(String, u64, u64)], name: &str| {
        counts
            .iter()
            .find(|c| c.0 == name)
            .map_or((0, 0), |c| (c.1, c.2))
    };
    let total = |counts: &[(String, u64, u64)]| counts.iter().map(|c| c.1).sum::<u64>();
    let n = PROFILE_LINES as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## System calls per message ({PROFILE_LINES} lines, chat → listen, each under `strace -f -c`; load average {load})\n"
    );
    let _ = writeln!(
        s,
        "| system call | sender (`duet chat`) per message | receiver (`duet listen`) per message |"
    );
    let _ = writeln!(s, "|---|---:|---:|");
    let cell = |(calls, errors): (u64, u64)| {
        if errors > 0 {
            format!("{:.2} ({:.2} failed)", calls as f64 / n, errors as f64 / n)
        } else {
            format!("{:.2}", calls as f64 / n)
        }
    };
    for name in PROFILED {
        let (a, b) = (per(&tx, name), per(&rx, name));
        if a.0 + b.0 == 0 && !matches!(name, "fsync" | "fdatasync" | "getrandom") {
            continue;
        }
        let _ = writeln!(s, "| {name} | {} | {} |", cell(a), cell(b));
    }
    let others = |counts: &[(String, u64, u64)]| {
        total(counts) - PROFILED.iter().map(|p| per(counts, p).0).sum::<u64>()
    };
    let _ = writeln!(
        s,
        "| all others (start-up and exit included) | {:.2} | {:.2} |",
        others(&tx) as f64 / n,
        others(&rx) as f64 / n
    );
    let _ = writeln!(
        s,
        "| **all** | **{:.1}** | **{:.1}** |",
        total(&tx) as f64 / n,
        total(&rx) as f64 / n
    );
    let _ = writeln!(
        s,
        "\nraw strace -c output: {} and {}",
        sender.display(),
        receiver.display()
    );
    Ok(s)
}

/// One file through the binaries, beside a raw blast of as many bytes in full datagrams
/// measured just before it.
struct FileRun {
    bytes: usize,
    /// From spawning `duet send --file` to listen printing that it saved the file.
    to_saved: Duration,
    /// From the same moment to send's exit (the peer said it saved it).
    to_exit: Duration,
    raw: Blast,
    sender_cpu: Option<f64>,
    receiver_cpu: Option<f64>,
    load: String,
}

impl FileRun {
    fn rate(&self, span: Duration) -> f64 {
        self.bytes as f64 / span.as_secs_f64()
    }
    fn raw_rate(&self) -> f64 {
        self.raw.rate * MAX_DATAGRAM as f64
    }
    fn line(&self, round: usize) -> String {
        format!(
            "file round {round} (load {}) | raw {} MB/s in {MAX_DATAGRAM} B datagrams (lost {:.1}%) | duet send --file {} MiB: {} MB/s to saved (÷ raw {:.3}), {} MB/s to send's exit; CPU send {} s, listen {} s",
            self.load,
            thousands(self.raw_rate() / 1e6),
            self.raw.lost * 100.0,
            self.bytes >> 20,
            thousands(self.rate(self.to_saved) / 1e6),
            self.rate(self.to_saved) / self.raw_rate(),
            thousands(self.rate(self.to_exit) / 1e6),
            spread(vec![self.sender_cpu.unwrap_or(f64::NAN)], 2),
            spread(vec![self.receiver_cpu.unwrap_or(f64::NAN)], 2),
        )
    }
}

/// Bytes no compressor shrinks (splitmix64), so nothing on the way profits from repeats.
fn file_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A file of `mib` MiB from `duet send --to b --file` to `duet listen --count 1`; the saved
/// copy must equal the original byte for byte.
fn file_to_listen(scratch: &Path, mib: usize) -> Res<FileRun> {
    let bytes = mib << 20;
    let load = load_average();
    let raw = raw_blast(MAX_DATAGRAM, bytes / MAX_DATAGRAM)?;
    let pair = pair(scratch);
    let content = file_bytes(bytes);
    let source = pair.a.path().join("file.bin");
    std::fs::write(&source, &content).map_err(|e| format!("{}: {e}", source.display()))?;
    let save = pair.b.path().join("in");
    let (bind_b, bind_a) = (local(pair.b_port), local(pair.a_port));
    let save_arg = save.display().to_string();
    let mut listen = Running::duet(
        &pair.b,
        &[
            "listen",
            "--bind",
            &bind_b,
            "--count",
            "1",
            "--save-dir",
            &save_arg,
        ],
        false,
        None,
    )?;
    listen.wait_for("* listening on", Instant::now() + START_LIMIT)?;
    let source_arg = source.display().to_string();
    let start = Instant::now();
    let mut send = Running::duet(
        &pair.a,
        &[
            "send",
            "--to",
            "b",
            "--bind",
            &bind_a,
            "--file",
            &source_arg,
        ],
        false,
        None,
    )?;
    let deadline = start + RUN_LIMIT;
    let (saved_at, _) = listen.wait_for(" saved to ", deadline)?;
    let send_exit = send.exit(deadline)?;
    send.check(&send_exit)?;
    let listen_exit = listen.exit(deadline)?;
    listen.check(&listen_exit)?;
    let saved = std::fs::read(save.join("file.bin")).map_err(|e| format!("the saved file: {e}"))?;
    if saved != content {
        return Err("the saved file differs from the one sent".into());
    }
    Ok(FileRun {
        bytes,
        to_saved: saved_at - start,
        to_exit: send_exit.at - start,
        raw,
        sender_cpu: send_exit.cpu,
        receiver_cpu: listen_exit.cpu,
        load,
    })
}

fn file_summary(runs: &[FileRun]) -> String {
    let of = |f: &dyn Fn(&FileRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## A file through the binaries ({} round(s); median, range over rounds in brackets)\n",
        runs.len()
    );
    let _ = writeln!(
        s,
        "| measurement | duet | raw UDP, same round | duet ÷ raw |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| `duet send --file` of {} MiB → `duet listen`: MB/s to listen's `saved to` | {} | {} MB/s ({MAX_DATAGRAM} B datagrams one way) | **{}** |",
        runs[0].bytes >> 20,
        spread(of(&|r| r.rate(r.to_saved) / 1e6), 1),
        spread(of(&|r| r.raw_rate() / 1e6), 1),
        spread(of(&|r| r.rate(r.to_saved) / r.raw_rate()), 3)
    );
    let _ = writeln!(
        s,
        "| the same, to send's exit (the peer said it saved it) | {} | | {} |",
        spread(of(&|r| r.rate(r.to_exit) / 1e6), 1),
        spread(of(&|r| r.rate(r.to_exit) / r.raw_rate()), 3)
    );
    let _ = writeln!(
        s,
        "| CPU seconds: send, listen | {}, {} | | |",
        spread(of(&|r| r.sender_cpu.unwrap_or(f64::NAN)), 2),
        spread(of(&|r| r.receiver_cpu.unwrap_or(f64::NAN)), 2)
    );
    s
}
