//! duet-core's micro-benchmarks, for 16-, 200- and 1000-byte messages (a 1000-byte message
//! is two parts: a part carries at most [`PART_TEXT`] = 952 bytes of text).
//!
//! - `frame/emit`, `frame/parse`: the inner frames of one message, written and read back;
//! - `aead/seal`, `aead/open`: ChaCha20-Poly1305 on those frames with the 16-byte transport
//!   header as associated data, through the same `clatter` cipher state `Secure` uses: the
//!   AEAD's share of a round, on its own;
//! - `text/split`, and with `--features gbk` `text/gbk_encode`, `text/gbk_decode`;
//! - `round/plain`, `round/sealed`: one whole round between two sessions in memory,
//!   `send_text → poll_transmit → handle_datagram → poll_event (Message) → poll_transmit
//!   (ACK) → handle_datagram → poll_event (Delivered)`, for `Session` and `Secure`.
//!
//! Run: `cargo bench -p duet-core --features gbk` (docs/PERFORMANCE.md has the figures).
//! Time stands still in these rounds: no timer fires, so every datagram is one the
//! protocol sends on a fault-free link.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use clatter::cipherstate::CipherState;
use clatter::crypto::cipher::ChaChaPoly;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duet_core::session::{Config, Event, PART_TEXT, SendError, Session};
use duet_core::text;
use duet_core::time::Instant;
use duet_core::wire::sealed;
use duet_core::wire::{AckInfo, Body, Frame, Payload, Repr};
use duet_core::{MAX_DATAGRAM, MessageId, Secure, SecureConfig, StaticKeys, Transmit};

/// Message sizes in bytes of UTF-8.
const SIZES: [usize; 3] = [16, 200, 1000];

/// An ASCII message of exactly `len` bytes.
fn ascii(len: usize) -> String {
    "duet benchmark text, ".chars().cycle().take(len).collect()
}

/// A Chinese-and-ASCII message of at most `len` bytes of UTF-8 (whole characters).
fn chinese(len: usize) -> String {
    let mut s = String::new();
    for c in "你好，duet！这是一条中文消息。".chars().cycle() {
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    s
}

/// The inner frames of `text`'s parts, as a session would send them.
fn frames_of(text: &str) -> Vec<Vec<u8>> {
    let parts: Vec<&str> = text::split(text, PART_TEXT).collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let repr = data_repr(i as u32, i == 0, i + 1 == parts.len(), part);
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Frame::new_unchecked(&mut buf[..]));
            buf
        })
        .collect()
}

fn data_repr(seq: u32, first: bool, last: bool, text: &str) -> Repr<'_> {
    Repr {
        epoch: 0x1234_5678,
        base: seq,
        ack: Some(AckInfo {
            epoch: 0x0bad_cafe,
            next: 42,
            bits: 0b101,
        }),
        body: Body::Data {
            seq,
            first,
            last,
            id: if first { 0x0123_4567_89ab_cdef } else { 0 },
            payload: Payload::Text(text),
        },
    }
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for len in SIZES {
        let text = ascii(len);
        let parts: Vec<&str> = text::split(&text, PART_TEXT).collect();
        group.throughput(Throughput::Bytes(len as u64));
        let mut buf = [0u8; MAX_DATAGRAM];
        group.bench_with_input(BenchmarkId::new("emit", len), &parts, |b, parts| {
            b.iter(|| {
                for (i, part) in parts.iter().enumerate() {
                    let repr = data_repr(i as u32, i == 0, i + 1 == parts.len(), part);
                    let n = repr.buffer_len();
                    repr.emit(&mut Frame::new_unchecked(&mut buf[..n]));
                    black_box(&buf[..n]);
                }
            })
        });
        let frames = frames_of(&text);
        group.bench_with_input(BenchmarkId::new("parse", len), &frames, |b, frames| {
            b.iter(|| {
                for f in frames {
                    let repr = Frame::new_checked(black_box(&f[..])).and_then(|f| Repr::parse(&f));
                    black_box(repr.is_ok());
                }
            })
        });
    }
    group.finish();
}

fn aead(c: &mut Criterion) {
    let mut group = c.benchmark_group("aead");
    let key = [7u8; 32];
    let header = [0x64, 0x75, 2, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
    for len in SIZES {
        let frames = frames_of(&ascii(len));
        group.throughput(Throughput::Bytes(len as u64));
        let mut send = CipherState::<ChaChaPoly>::new(&key, 0);
        let mut out = [0u8; MAX_DATAGRAM];
        group.bench_with_input(BenchmarkId::new("seal", len), &frames, |b, frames| {
            b.iter(|| {
                for f in frames {
                    let n = f.len() + sealed::TAG_LEN;
                    let ok = send.encrypt_with_ad(&header, f, &mut out[..n]).is_ok();
                    black_box((ok, &out[..n]));
                }
            })
        });
        // Seal once, then open the same messages again and again (the nonce is set back
        // each time, as `Secure` sets it from the counter in the header).
        let mut seal = CipherState::<ChaChaPoly>::new(&key, 0);
        let sealed_frames: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| {
                let mut c = vec![0u8; f.len() + sealed::TAG_LEN];
                seal.encrypt_with_ad(&header, f, &mut c).expect("seal");
                c
            })
            .collect();
        let mut recv = CipherState::<ChaChaPoly>::new(&key, 0);
        let mut plain = [0u8; MAX_DATAGRAM];
        group.bench_with_input(
            BenchmarkId::new("open", len),
            &sealed_frames,
            |b, sealed_frames| {
                b.iter(|| {
                    for (nonce, c) in sealed_frames.iter().enumerate() {
                        recv.set_nonce(nonce as u64);
                        let n = c.len() - sealed::TAG_LEN;
                        let ok = recv.decrypt_with_ad(&header, c, &mut plain[..n]).is_ok();
                        assert!(ok, "a sealed frame did not open");
                        black_box(&plain[..n]);
                    }
                })
            },
        );
    }
    group.finish();
}

fn text_conversion(c: &mut Criterion) {
    let mut group = c.benchmark_group("text");
    for len in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        let mixed = chinese(len);
        group.bench_with_input(BenchmarkId::new("split", len), &mixed, |b, t| {
            b.iter(|| black_box(text::split(black_box(t), PART_TEXT).count()))
        });
        #[cfg(feature = "gbk")]
        {
            use duet_core::text::{Encoding, Piece};
            group.bench_with_input(BenchmarkId::new("gbk_encode", len), &mixed, |b, t| {
                b.iter(|| {
                    let mut bytes = 0;
                    let r = text::encode(black_box(t), Encoding::Gbk, MAX_DATAGRAM, |p| {
                        bytes += p.len()
                    });
                    black_box((r, bytes))
                })
            });
            let mut gbk = Vec::new();
            text::encode(&mixed, Encoding::Gbk, MAX_DATAGRAM, |p| {
                gbk.extend_from_slice(p)
            })
            .expect("GBK encodes");
            group.bench_with_input(BenchmarkId::new("gbk_decode", len), &gbk, |b, bytes| {
                b.iter(|| {
                    let mut chars = 0;
                    text::decode(black_box(bytes), Encoding::Gbk, |p| {
                        if let Piece::Text(t) = p {
                            chars += t.len()
                        }
                    });
                    black_box(chars)
                })
            });
        }
    }
    #[cfg(not(feature = "gbk"))]
    eprintln!("text/gbk_*: skipped, run with `--features gbk`");
    group.finish();
}

/// What a round needs of a session; `Session` and `Secure` have the same calls.
trait Peer {
    fn send(&mut self, now: Instant, text: &str) -> Result<MessageId, SendError>;
    fn transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit>;
    fn receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    fn event(&mut self) -> Option<Event<'_>>;
}

macro_rules! peer {
    ($t:ty) => {
        impl Peer for $t {
            fn send(&mut self, now: Instant, text: &str) -> Result<MessageId, SendError> {
                self.send_text(now, text)
            }
            fn transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
                self.poll_transmit(now, buf)
            }
            fn receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
                self.handle_datagram(now, from, datagram)
            }
            fn event(&mut self) -> Option<Event<'_>> {
                self.poll_event()
            }
        }
    };
}
peer!(Session);
peer!(Secure);

/// Two sessions wired back to back in memory.
struct Pair<P> {
    a: P,
    b: P,
    buf: [u8; MAX_DATAGRAM],
}

const NOW: Instant = Instant::from_millis(1_000);

fn addr_a() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 7789))
}
fn addr_b() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 7789))
}

impl<P: Peer> Pair<P> {
    /// Move datagrams both ways until `a` hears that its message was delivered.
    fn round(&mut self, text: &str) {
        let id = self.a.send(NOW, text).expect("the outbox has room");
        // A round is two datagrams per part and never more than a few turns.
        for _ in 0..16 {
            while let Some(t) = self.a.transmit(NOW, &mut self.buf) {
                self.b.receive(NOW, addr_a(), &self.buf[..t.len]);
            }
            while let Some(e) = self.b.event() {
                if let Event::Message(m) = e {
                    black_box(m);
                }
            }
            while let Some(t) = self.b.transmit(NOW, &mut self.buf) {
                self.a.receive(NOW, addr_b(), &self.buf[..t.len]);
            }
            while let Some(e) = self.a.event() {
                if e == Event::Delivered(id) {
                    return;
                }
            }
        }
        panic!("message {id} was not delivered in memory");
    }
}

fn plain_pair() -> Pair<Session> {
    let mut p = Pair {
        a: Session::new(NOW, Config::default(), 0xa, Some(addr_b())),
        b: Session::new(NOW, Config::default(), 0xb, Some(addr_a())),
        buf: [0; MAX_DATAGRAM],
    };
    p.round("warm-up");
    p
}

fn sealed_pair() -> Pair<Secure> {
    let (ka, kb) = (
        StaticKeys::from_secret([1; 32]),
        StaticKeys::from_secret([2; 32]),
    );
    let (pa, pb) = (ka.public(), kb.public());
    let mut p = Pair {
        a: Secure::new(
            NOW,
            SecureConfig::default(),
            ka,
            &[],
            Some((pb, addr_b())),
            [0xa1; 32],
        ),
        b: Secure::new(NOW, SecureConfig::default(), kb, &[pa], None, [0xb2; 32]),
        buf: [0; MAX_DATAGRAM],
    };
    // The handshake happens here, outside the measurement.
    p.round("warm-up");
    assert!(p.a.is_established() && p.b.is_established());
    p
}

fn round(c: &mut Criterion) {
    let mut group = c.benchmark_group("round");
    for len in SIZES {
        let text = ascii(len);
        group.throughput(Throughput::Bytes(len as u64));
        let mut plain = plain_pair();
        group.bench_with_input(BenchmarkId::new("plain", len), &text, |b, t| {
            b.iter(|| plain.round(t))
        });
        let mut sealed = sealed_pair();
        group.bench_with_input(BenchmarkId::new("sealed", len), &text, |b, t| {
            b.iter(|| sealed.round(t))
        });
    }
    group.finish();
}

/// Thirty benchmarks: short windows keep `cargo bench` near a minute and a half.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(StdDuration::from_millis(500))
        .measurement_time(StdDuration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = frame, aead, text_conversion, round
}
criterion_main!(benches);
