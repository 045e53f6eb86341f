//! duet over real loopback sockets, beside raw UDP and the tutorial's Python loop, in one run.
//!
//! For 16-, 200- and 1000-byte messages it measures, one after the other on 127.0.0.1:
//! - raw: two `std::net::UdpSocket`s in two threads, blocking `send_to`/`recv_from`:
//!   one-way datagrams/s (counted by the receiver) and ping-pong round trips;
//! - python: `tests/benches/tutorial_loop.py` under `/usr/bin/python3`, the tutorial's
//!   `sendto(text.encode())` / `recvfrom(1024)` / `data.decode()` loop, the same two ways
//!   (skipped when Python is missing);
//! - duet: two `Secure` sessions with fixed test keys, each driven by the host's
//!   `Link` over `HostStack` in its own thread: acknowledged messages/s with the outbox kept
//!   full (messages reported `Delivered`, so each one was sealed, sent, opened, taken by the
//!   receiving application and acknowledged), and the round trip of one message to its
//!   `Delivered` (p50/p99).
//!
//! It prints duet's figures as ratios to raw UDP's and Python's from the same round, and the
//! issue's targets next to them. Nothing here asserts on time: it reports.
//!
//! Where the two ends run decides the figures more than anything else, so every measurement
//! pins its two ends (threads, and the Python processes) and is made twice:
//! - `same`: both ends on CPU 0. A datagram wakes a thread on the CPU that sent it: no
//!   cross-CPU wake-up, but the two ends share one CPU's time;
//! - `split`: one end on CPU 0, the other on CPU 1. Both run at once, but every wake-up of a
//!   sleeping end crosses CPUs (in a VM, an idle virtual CPU is woken by the hypervisor).
//!
//! Run: `cargo bench -p duet-tests --bench loopback`. Environment: `DUET_BENCH_SECONDS`
//! (each measurement's window, default 1), `DUET_BENCH_ROUNDS` (default 2: every figure is
//! measured in each round, the summary gives the median and the spread),
//! `DUET_BENCH_PLACEMENT` (`both`, `same`, `split`, or `free` for no pinning; default
//! `both`), `DUET_BENCH_PYTHON` (default `/usr/bin/python3`), `DUET_BENCH_OUT` (where the CSV
//! files for `tests/benches/plot.py` go, default `target/tmp/loopback`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use duet_core::secure::{Secure, SecureConfig, StaticKeys};
use duet_core::session::Event;
use duet_core::time::{Duration as CoreDuration, Instant as CoreInstant};
use duet_host::transport::Link;
use duet_host::transport::udp::HostStack;

const SIZES: [usize; 3] = [16, 200, 1000];
/// One byte more than any datagram the tests send, so nothing is cut silently.
const RX_BUF: usize = 2048;

type DuetLink = Link<HostStack, Secure>;

/// The CPUs of (the measuring end, the other end); `None`: any.
type Cpus = (Option<usize>, Option<usize>);

/// Where the two ends of a measurement run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Both ends on CPU 0.
    Same,
    /// The measuring end on CPU 0, the other on CPU 1.
    Split,
    /// Wherever the scheduler puts them.
    Free,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Same => "same",
            Placement::Split => "split",
            Placement::Free => "free",
        }
    }
    fn cpus(self) -> Cpus {
        match self {
            Placement::Same => (Some(0), Some(0)),
            Placement::Split => (Some(0), Some(1)),
            Placement::Free => (None, None),
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Placement::Same => "both ends on CPU 0",
            Placement::Split => "ends on CPUs 0 and 1",
            Placement::Free => "ends where the scheduler puts them",
        }
    }
}

/// Pin the calling thread (and the processes it starts from now on) to `cpu`; `None`: any.
fn pin(cpu: Option<usize>) {
    let mut set = rustix::thread::CpuSet::new();
    match cpu {
        Some(c) => set.set(c),
        // Every CPU this machine may have; the kernel ignores those it lacks.
        None => (0..rustix::thread::CpuSet::MAX_CPU).for_each(|c| set.set(c)),
    }
    // Best effort: a failed pin only makes the figures noisier.
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a size filter, e.g. `200`.
    let filter: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes: Vec<usize> = SIZES
        .into_iter()
        .filter(|s| filter.is_empty() || filter.contains(s))
        .collect();
    let window = Duration::from_secs_f64(env_f64("DUET_BENCH_SECONDS", 1.0));
    let rounds = env_f64("DUET_BENCH_ROUNDS", 2.0).max(1.0) as usize;
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let placements = match std::env::var("DUET_BENCH_PLACEMENT").as_deref() {
        Ok("same") => vec![Placement::Same],
        Ok("split") => vec![Placement::Split],
        Ok("free") => vec![Placement::Free],
        _ if cpus < 2 => vec![Placement::Same],
        _ => vec![Placement::Same, Placement::Split],
    };
    let python = std::env::var("DUET_BENCH_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let python = Path::new(&python).exists().then_some(PathBuf::from(python));
    let out = std::env::var_os("DUET_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("loopback"));
    std::fs::create_dir_all(&out).expect("create the output directory");

    println!("{}", machine());
    println!(
        "window {:.1} s per measurement, {rounds} round(s); python: {}",
        window.as_secs_f64(),
        python
            .as_deref()
            .map_or("not found, skipped".into(), |p| p.display().to_string())
    );
    let started = Instant::now();
    let mut results: Vec<Row> = Vec::new();
    for round in 1..=rounds {
        for &placement in &placements {
            for &size in &sizes {
                let row = measure(round, placement, size, window, python.as_deref(), &out);
                println!("{}", row.line());
                results.push(row);
            }
        }
    }
    pin(None);
    for &placement in &placements {
        println!("\n## {} ({})\n", placement.name(), placement.describe());
        let rows: Vec<&Row> = results
            .iter()
            .filter(|r| r.placement == placement)
            .collect();
        print!("{}", summary(&sizes, &rows));
    }
    write_csv(&out, &results);
    println!(
        "\nraw figures: {} (plot: python tests/benches/plot.py {}, with matplotlib)",
        out.display(),
        out.display()
    );
    println!(
        "total {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

fn env_f64(name: &str, default: f64) -> f64 {
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

/// Round-trip samples in microseconds.
#[derive(Default, Clone)]
struct Latency {
    samples: Vec<f64>,
}

impl Latency {
    fn percentile(&self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let i = ((s.len() - 1) as f64 * p).round() as usize;
        s[i]
    }
    fn p50(&self) -> f64 {
        self.percentile(0.50)
    }
    fn p99(&self) -> f64 {
        self.percentile(0.99)
    }
}

/// Everything measured for one size in one round.
struct Row {
    round: usize,
    placement: Placement,
    size: usize,
    raw_rate: f64,
    raw_loss: f64,
    raw_rtt: Latency,
    py_rate: Option<f64>,
    py_rtt: Option<Latency>,
    duet_rate: f64,
    duet_retransmits: u32,
    duet_duplicates: u32,
    duet_rtt: Latency,
}

impl Row {
    fn line(&self) -> String {
        let py = match (self.py_rate, &self.py_rtt) {
            (Some(r), Some(l)) => format!("{r:>8.0}/s rtt {:>6.1} µs", l.p50()),
            _ => "skipped".into(),
        };
        format!(
            "round {} {:<5} {:>4} B | raw {:>8.0}/s (loss {:>4.1}%) rtt {:>5.1} µs | python {py} | duet {:>8.0} msg/s ({} retransmits, {} duplicates) ack rtt {:>5.1} µs",
            self.round,
            self.placement.name(),
            self.size,
            self.raw_rate,
            self.raw_loss * 100.0,
            self.raw_rtt.p50(),
            self.duet_rate,
            self.duet_retransmits,
            self.duet_duplicates,
            self.duet_rtt.p50()
        )
    }
}

fn measure(
    round: usize,
    placement: Placement,
    size: usize,
    window: Duration,
    python: Option<&Path>,
    out: &Path,
) -> Row {
    let cpus = placement.cpus();
    pin(cpus.0);
    let (raw_rate, raw_loss) = raw_one_way(cpus, size, window);
    let raw_rtt = raw_ping_pong(cpus, size, window);
    let (py_rate, py_rtt) = match python {
        Some(p) => (
            Some(python_one_way(p, cpus, size, window)),
            Some(python_ping_pong(p, cpus, size, window, out)),
        ),
        None => (None, None),
    };
    let (duet_rate, duet_retransmits, duet_duplicates) = duet_throughput(cpus, size, window);
    let duet_rtt = duet_round_trips(cpus, size, window);
    Row {
        round,
        placement,
        size,
        raw_rate,
        raw_loss,
        raw_rtt,
        py_rate,
        py_rtt,
        duet_rate,
        duet_retransmits,
        duet_duplicates,
        duet_rtt,
    }
}

fn text(size: usize) -> String {
    "x".repeat(size)
}

fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket")
}

/// Raw UDP one way: datagrams/s as the receiver counts them, and the share lost.
fn raw_one_way(cpus: Cpus, size: usize, window: Duration) -> (f64, f64) {
    let rx = loopback();
    let tx = loopback();
    let to = rx.local_addr().expect("local address");
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let receiver = thread::spawn(move || {
        pin(cpus.1);
        let mut buf = [0u8; RX_BUF];
        let (mut count, mut first, mut last) = (0u64, None, Instant::now());
        while let Ok((n, _)) = rx.recv_from(&mut buf) {
            std::hint::black_box(&buf[..n]);
            last = Instant::now();
            first.get_or_insert(last);
            count += 1;
        }
        let span = first.map_or(0.0, |f| (last - f).as_secs_f64());
        (count, span)
    });
    let payload = text(size);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < window {
        for _ in 0..32 {
            if tx.send_to(payload.as_bytes(), to).is_ok() {
                sent += 1;
            }
        }
    }
    let (count, span) = receiver.join().expect("receiver thread");
    let rate = if span > 0.0 {
        (count.saturating_sub(1)) as f64 / span
    } else {
        0.0
    };
    (rate, 1.0 - count as f64 / sent.max(1) as f64)
}

/// Raw UDP ping-pong: one datagram there, the same back, repeated for the window.
fn raw_ping_pong(cpus: Cpus, size: usize, window: Duration) -> Latency {
    let echo = loopback();
    let pinger = loopback();
    let to = echo.local_addr().expect("local address");
    echo.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    pinger
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    let echoer = thread::spawn(move || {
        pin(cpus.1);
        let mut buf = [0u8; RX_BUF];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let payload = text(size);
    let mut buf = [0u8; RX_BUF];
    let mut latency = Latency::default();
    let start = Instant::now();
    while start.elapsed() < window {
        let t0 = Instant::now();
        pinger.send_to(payload.as_bytes(), to).expect("send");
        if pinger.recv_from(&mut buf).is_err() {
            continue;
        }
        latency.samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let _ = pinger.send_to(&[], to);
    echoer.join().expect("echo thread");
    latency
}

fn tutorial_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/tutorial_loop.py")
}

/// Start the script in `mode` and read its "ready PORT" line.
fn python_ready(python: &Path, mode: &str) -> (Child, BufReader<std::process::ChildStdout>, u16) {
    let mut child = Command::new(python)
        .arg(tutorial_script())
        .arg(mode)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("python's ready line");
    let port = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("python said {line:?}, not `ready PORT`"));
    (child, out, port)
}

/// The Python processes inherit the CPU of the thread that starts them.
fn python_one_way(python: &Path, cpus: Cpus, size: usize, window: Duration) -> f64 {
    pin(cpus.1);
    let (mut receiver, mut out, port) = python_ready(python, "recv");
    pin(cpus.0);
    let sender = Command::new(python)
        .arg(tutorial_script())
        .args([
            "send",
            &port.to_string(),
            &size.to_string(),
            &window.as_secs_f64().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run the python sender");
    assert!(sender.success(), "the python sender failed");
    let mut line = String::new();
    out.read_line(&mut line).expect("python's count");
    let _ = receiver.wait();
    let mut words = line.split_whitespace().skip(1);
    let count: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    let span: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    if span > 0.0 {
        (count - 1.0) / span
    } else {
        0.0
    }
}

fn python_ping_pong(
    python: &Path,
    cpus: Cpus,
    size: usize,
    window: Duration,
    out: &Path,
) -> Latency {
    pin(cpus.1);
    let (mut echo, _out, port) = python_ready(python, "echo");
    pin(cpus.0);
    let file = out.join(format!("python-rtt-{size}.txt"));
    let status = Command::new(python)
        .arg(tutorial_script())
        .args([
            "ping",
            &port.to_string(),
            &size.to_string(),
            &window.as_secs_f64().to_string(),
        ])
        .arg(&file)
        .stdout(Stdio::null())
        .status()
        .expect("run the python pinger");
    assert!(status.success(), "the python pinger failed");
    let _ = echo.wait();
    let samples = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    Latency { samples }
}

/// Two paired duets on loopback: `a` knows where `b` is, `b` waits for `a`.
fn duet_pair() -> (DuetLink, DuetLink) {
    let (ka, kb) = (
        StaticKeys::from_secret([0xa1; 32]),
        StaticKeys::from_secret([0xb2; 32]),
    );
    let (pa, pb) = (ka.public(), kb.public());
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let now = CoreInstant::now();
    let b = Link::bind_udp(
        bind,
        Secure::new(now, SecureConfig::default(), kb, &[pa], None, [0x0b; 32]),
    )
    .expect("bind b");
    let a = Link::bind_udp(
        bind,
        Secure::new(
            now,
            SecureConfig::default(),
            ka,
            &[],
            Some((pb, b.local_addr())),
            [0x0a; 32],
        ),
    )
    .expect("bind a");
    (a, b)
}

/// Run the driver and hand every event to `on_event`.
fn turn(link: &mut DuetLink, mut on_event: impl FnMut(Event<'_>)) {
    link.poll().expect("driver poll");
    while let Some(e) = link.protocol.poll_event() {
        on_event(e);
    }
}

/// Sleep until a datagram arrives or the protocol has work, at most `limit`. The deadline
/// is asked after the events were taken: taking a message makes its acknowledgement due.
fn sleep(link: &DuetLink, limit: Duration) {
    let deadline = link.protocol.poll_timeout();
    let limit = CoreInstant::now() + CoreDuration::from_millis(limit.as_millis() as u64);
    link.wait(deadline, None, Some(limit)).expect("wait");
}

/// The receiving duet, in its own thread until `stop`: takes every message. Returns the
/// duplicates it received (the sender's retransmissions that were not needed).
fn spawn_receiver(
    mut b: DuetLink,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<u32> {
    thread::spawn(move || {
        pin(cpu);
        while !stop.load(Ordering::Relaxed) {
            turn(&mut b, |e| {
                if let Event::Message(m) = e {
                    std::hint::black_box(m);
                }
            });
            sleep(&b, Duration::from_millis(20));
        }
        b.protocol.session_stats().duplicates
    })
}

/// Send one message and turn until it is delivered; its round trip in microseconds.
fn one_round_trip(a: &mut DuetLink, payload: &str) -> f64 {
    let t0 = Instant::now();
    let id = a
        .protocol
        .send_text(CoreInstant::now(), payload)
        .expect("an empty outbox has room");
    loop {
        let mut delivered = false;
        turn(a, |e| delivered |= e == Event::Delivered(id));
        if delivered {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no delivery in 10 s"
        );
        sleep(a, Duration::from_secs(1));
    }
    t0.elapsed().as_secs_f64() * 1e6
}

/// Acknowledged messages/s with the outbox kept full; the retransmissions it took, and how
/// many of them the receiver already had.
fn duet_throughput(cpus: Cpus, size: usize, window: Duration) -> (f64, u32, u32) {
    let (mut a, b) = duet_pair();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = spawn_receiver(b, cpus.1, stop.clone());
    let payload = text(size);
    // The handshake and the first message, outside the window.
    one_round_trip(&mut a, &payload);
    let before = a.protocol.session_stats().retransmits;
    let start = Instant::now();
    let mut delivered = 0u64;
    while start.elapsed() < window {
        while a.protocol.send_text(CoreInstant::now(), &payload).is_ok() {}
        let before = delivered;
        turn(&mut a, |e| match e {
            Event::Delivered(_) => delivered += 1,
            Event::Failed(id, why) => panic!("message {id} failed: {why}"),
            _ => {}
        });
        if delivered == before {
            sleep(&a, Duration::from_millis(20));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let retransmits = a.protocol.session_stats().retransmits - before;
    stop.store(true, Ordering::Relaxed);
    let duplicates = receiver.join().expect("receiver thread");
    (delivered as f64 / elapsed, retransmits, duplicates)
}

/// One message at a time, each timed from `send_text` to its `Delivered`.
fn duet_round_trips(cpus: Cpus, size: usize, window: Duration) -> Latency {
    let (mut a, b) = duet_pair();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = spawn_receiver(b, cpus.1, stop.clone());
    let payload = text(size);
    one_round_trip(&mut a, &payload);
    let mut latency = Latency::default();
    let start = Instant::now();
    while start.elapsed() < window {
        latency.samples.push(one_round_trip(&mut a, &payload));
    }
    stop.store(true, Ordering::Relaxed);
    receiver.join().expect("receiver thread");
    latency
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

/// "median (min–max)" of one figure over the rounds.
fn spread(v: Vec<f64>, decimals: usize) -> String {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        return "–".into();
    }
    let (lo, hi) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let m = median(finite.clone());
    if finite.len() == 1 {
        format!("{m:.decimals$}")
    } else {
        format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
    }
}

fn summary(sizes: &[usize], rows: &[&Row]) -> String {
    let mut s = String::new();
    let of = |size: usize| rows.iter().copied().filter(move |r| r.size == size);
    let _ = writeln!(
        s,
        "Throughput (median of rounds, min–max in brackets)\n\n\
         | size | raw UDP one-way datagrams/s | Python tutorial datagrams/s | duet acked msgs/s | duet ÷ raw | duet ÷ Python |\n\
         |---:|---:|---:|---:|---:|---:|"
    );
    for &size in sizes {
        let raw: Vec<f64> = of(size).map(|r| r.raw_rate).collect();
        let py: Vec<f64> = of(size).filter_map(|r| r.py_rate).collect();
        let duet: Vec<f64> = of(size).map(|r| r.duet_rate).collect();
        let vs_raw: Vec<f64> = of(size).map(|r| r.duet_rate / r.raw_rate).collect();
        let vs_py: Vec<f64> = of(size)
            .filter_map(|r| r.py_rate.map(|p| r.duet_rate / p))
            .collect();
        let _ = writeln!(
            s,
            "| {size} B | {} | {} | {} | {} | {} |",
            spread(raw, 0),
            spread(py, 0),
            spread(duet, 0),
            spread(vs_raw, 2),
            spread(vs_py, 2)
        );
    }
    let _ = writeln!(
        s,
        "\nRound trip, µs (p50 / p99; median of rounds)\n\n\
         | size | raw UDP ping-pong | Python tutorial ping-pong | duet message → Delivered | duet ÷ raw (p50) | duet ÷ Python (p50) |\n\
         |---:|---:|---:|---:|---:|---:|"
    );
    for &size in sizes {
        let pair = |get: &dyn Fn(&Row) -> Option<&Latency>| {
            let p50: Vec<f64> = of(size).filter_map(|r| get(r).map(Latency::p50)).collect();
            let p99: Vec<f64> = of(size).filter_map(|r| get(r).map(Latency::p99)).collect();
            if p50.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.1} / {:.1}", median(p50), median(p99))
            }
        };
        let vs_raw: Vec<f64> = of(size)
            .map(|r| r.duet_rtt.p50() / r.raw_rtt.p50())
            .collect();
        let vs_py: Vec<f64> = of(size)
            .filter_map(|r| r.py_rtt.as_ref().map(|p| r.duet_rtt.p50() / p.p50()))
            .collect();
        let _ = writeln!(
            s,
            "| {size} B | {} | {} | {} | {} | {} |",
            pair(&|r| Some(&r.raw_rtt)),
            pair(&|r| r.py_rtt.as_ref()),
            pair(&|r| Some(&r.duet_rtt)),
            spread(vs_raw, 2),
            spread(vs_py, 2)
        );
    }
    let _ = writeln!(s, "\nTargets (per size, median of rounds):");
    for &size in sizes {
        let tput = median(of(size).map(|r| r.duet_rate / r.raw_rate).collect());
        let rtt = median(
            of(size)
                .map(|r| r.duet_rtt.p50() / r.raw_rtt.p50())
                .collect(),
        );
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let _ = writeln!(
            s,
            "  {size:>4} B: acked msgs/s ≥ 50% of raw one-way: {:.0}% {} (stretch 75%: {}); \
             ack round trip p50 ≤ 1.5× raw ping-pong: {rtt:.2}× {}",
            tput * 100.0,
            verdict(tput >= 0.5),
            verdict(tput >= 0.75),
            verdict(rtt <= 1.5)
        );
    }
    s
}

fn write_csv(out: &Path, rows: &[Row]) {
    let mut summary = String::from(
        "round,placement,size,raw_rate,raw_loss,raw_rtt_p50,raw_rtt_p99,python_rate,python_rtt_p50,python_rtt_p99,duet_rate,duet_retransmits,duet_duplicates,duet_rtt_p50,duet_rtt_p99\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for r in rows {
        let _ = writeln!(
            summary,
            "{},{},{},{:.1},{:.4},{:.3},{:.3},{},{},{},{:.1},{},{},{:.3},{:.3}",
            r.round,
            r.placement.name(),
            r.size,
            r.raw_rate,
            r.raw_loss,
            r.raw_rtt.p50(),
            r.raw_rtt.p99(),
            opt(r.py_rate),
            opt(r.py_rtt.as_ref().map(Latency::p50)),
            opt(r.py_rtt.as_ref().map(Latency::p99)),
            r.duet_rate,
            r.duet_retransmits,
            r.duet_duplicates,
            r.duet_rtt.p50(),
            r.duet_rtt.p99()
        );
    }
    std::fs::write(out.join("summary.csv"), summary).expect("write summary.csv");
    // The last round's samples, for the latency plot.
    let mut samples = String::from("placement,what,size,rtt_us\n");
    let last = rows.iter().map(|r| r.round).max().unwrap_or(1);
    for r in rows.iter().filter(|r| r.round == last) {
        for (what, lat) in [("raw", Some(&r.raw_rtt)), ("duet", Some(&r.duet_rtt))]
            .into_iter()
            .chain([("python", r.py_rtt.as_ref())])
        {
            for x in lat.map(|l| l.samples.as_slice()).unwrap_or_default() {
                let _ = writeln!(samples, "{},{what},{},{x:.2}", r.placement.name(), r.size);
            }
        }
    }
    std::fs::write(out.join("rtt_samples.csv"), samples).expect("write rtt_samples.csv");
}
