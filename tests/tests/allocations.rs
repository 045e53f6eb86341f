//! No heap allocation per message on the host's hot path.
//!
//! Two sealed sessions (`Secure`) talk over real loopback sockets, each through the host's
//! own `Link` (the core's driver over `HostStack`) in its own thread, with the loop every
//! host mode runs: `Link::poll` (receive, open, session, seal, send), `poll_event` until
//! `None`, `Link::wait` (poll(2)) until the next datagram or deadline. After a warm-up (the
//! handshake, lazy statics), a counting global allocator watches both threads while 1000
//! messages of 16 to 1000 bytes go out one at a time and then 1000 more with the outbox kept
//! full: neither thread may allocate at all.
//!
//! The host's UI and storage (host/src/app.rs: formatting lines, the chat history) are not
//! part of this path and do allocate per message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;

use duet_core::secure::{Secure, SecureConfig, StaticKeys};
use duet_core::session::Event;
use duet_core::time::{Duration, Instant};
use duet_host::transport::Link;
use duet_host::transport::udp::HostStack;

/// The system allocator, counting the allocations of threads that asked to be watched.
struct Counting;

thread_local! {
    static WATCHED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator may run while a thread's locals are being torn down.
    let _ = WATCHED.try_with(|w| {
        if w.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is passed on to `System` unchanged; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many times `f` allocated on this thread.
fn allocations_in<T>(f: impl FnOnce() -> T) -> (u64, T) {
    ALLOCATIONS.with(|n| n.set(0));
    WATCHED.with(|w| w.set(true));
    let result = f();
    WATCHED.with(|w| w.set(false));
    (ALLOCATIONS.with(Cell::get), result)
}

type DuetLink = Link<HostStack, Secure>;

/// Two paired duets: `a` at `bind_a` knows `b` is at 127.0.0.1:port; `b` at `bind_b` waits.
fn pair(bind_a: &str, bind_b: &str) -> (DuetLink, DuetLink) {
    let (ka, kb) = (
        StaticKeys::from_secret([0x11; 32]),
        StaticKeys::from_secret([0x22; 32]),
    );
    let (pa, pb) = (ka.public(), kb.public());
    let now = Instant::now();
    let b = Link::bind_udp(
        bind_b.parse().expect("address"),
        Secure::new(now, SecureConfig::default(), kb, &[pa], None, [2; 32]),
    )
    .expect("bind b");
    let b_at = SocketAddr::from(([127, 0, 0, 1], b.local_addr().port()));
    let a = Link::bind_udp(
        bind_a.parse().expect("address"),
        Secure::new(
            now,
            SecureConfig::default(),
            ka,
            &[],
            Some((pb, b_at)),
            [1; 32],
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

/// Sleep until a datagram arrives or the protocol has work (at most 50 ms).
fn sleep(link: &DuetLink) {
    let limit = Instant::now() + Duration::from_millis(50);
    link.wait(link.protocol.poll_timeout(), None, Some(limit))
        .expect("wait");
}

/// What the receiving thread is doing.
const WARM_UP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The receiving duet in its own thread: shows every message until told to stop. Returns
/// (allocations while measuring, messages shown).
fn receiver(mut b: DuetLink, phase: Arc<AtomicU8>) -> thread::JoinHandle<(u64, u64)> {
    thread::spawn(move || {
        let mut shown = 0u64;
        ALLOCATIONS.with(|n| n.set(0));
        loop {
            let now = phase.load(Ordering::Relaxed);
            if now == STOP {
                break;
            }
            WATCHED.with(|w| w.set(now == MEASURE));
            turn(&mut b, |e| {
                if let Event::Message(text) = e {
                    std::hint::black_box(text);
                    shown += 1;
                }
            });
            sleep(&b);
        }
        WATCHED.with(|w| w.set(false));
        (ALLOCATIONS.with(Cell::get), shown)
    })
}

/// Send `text` and turn until it is delivered.
fn send_one(a: &mut DuetLink, text: &str) {
    let id = a
        .protocol
        .send_text(Instant::now(), text)
        .expect("an empty outbox has room");
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let mut delivered = false;
        turn(a, |e| delivered |= e == Event::Delivered(id));
        if delivered {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "message {id} not delivered in 10 s"
        );
        sleep(a);
    }
}

/// Send `count` messages from `texts` with the outbox kept full; turn until all delivered.
fn send_pipelined(a: &mut DuetLink, texts: &[String], count: usize) {
    let (mut sent, mut delivered) = (0, 0);
    let give_up = Instant::now() + Duration::from_secs(30);
    while delivered < count {
        while sent < count
            && a.protocol
                .send_text(Instant::now(), &texts[sent % texts.len()])
                .is_ok()
        {
            sent += 1;
        }
        let before = delivered;
        turn(a, |e| match e {
            Event::Delivered(_) => delivered += 1,
            Event::Failed(id, why) => panic!("message {id} failed: {why}"),
            _ => {}
        });
        assert!(
            Instant::now() < give_up,
            "{delivered} of {count} delivered in 30 s"
        );
        if delivered == before {
            sleep(a);
        }
    }
}

/// Texts of 16, 200 and 1000 bytes (the last in two parts), ASCII and Chinese.
fn texts() -> Vec<String> {
    let ascii = |n: usize| "duet allocation test ".chars().cycle().take(n).collect();
    let chinese = |n: usize| "你好，世界".chars().cycle().take(n).collect();
    vec![ascii(16), ascii(200), ascii(1000), chinese(5), chinese(300)]
}

fn assert_no_allocations_per_message(bind_a: &str, bind_b: &str) {
    let (mut a, b) = pair(bind_a, bind_b);
    let phase = Arc::new(AtomicU8::new(WARM_UP));
    let b = receiver(b, phase.clone());
    let texts = texts();
    let warm_up = 100;
    for text in texts.iter().cycle().take(warm_up) {
        send_one(&mut a, text);
    }
    assert!(a.protocol.is_established());
    phase.store(MEASURE, Ordering::Relaxed);
    let messages = 1000;
    let (sender, ()) = allocations_in(|| {
        for text in texts.iter().cycle().take(messages) {
            send_one(&mut a, text);
        }
        send_pipelined(&mut a, &texts, messages);
    });
    phase.store(STOP, Ordering::Relaxed);
    let (receiver, shown) = b.join().expect("receiver thread");
    assert_eq!(
        shown,
        (warm_up + 2 * messages) as u64,
        "every message shown once"
    );
    assert_eq!(
        (sender, receiver),
        (0, 0),
        "heap allocations (sender, receiver) in {} sealed messages over {bind_a} ↔ {bind_b}: \
         Link::poll, poll_event, Link::wait and send_text must not allocate",
        2 * messages
    );
}

#[test]
fn sealed_messages_through_the_host_link_allocate_nothing() {
    assert_no_allocations_per_message("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn sealed_messages_on_wildcard_sockets_allocate_nothing() {
    // `duet chat`'s default bind is 0.0.0.0: the dual-stack socket of std-embedded-nal.
    assert_no_allocations_per_message("0.0.0.0:0", "0.0.0.0:0");
}

#[test]
fn waiting_for_a_datagram_allocates_nothing() {
    let (a, _b) = pair("127.0.0.1:0", "127.0.0.1:0");
    let poke = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let limit = Some(Instant::now() + Duration::from_secs(1));
    // A datagram is waiting, so poll(2) returns at once; the wait itself must not allocate,
    // with or without an input descriptor beside the socket.
    poke.send_to(b"x", a.local_addr()).expect("send");
    let (count, woke) = allocations_in(|| {
        let alone = a.wait(None, None, limit).is_ok();
        let with_input = a.wait(None, Some(poke.as_fd()), limit).is_ok();
        alone && with_input
    });
    assert!(woke, "wait failed");
    assert_eq!(count, 0, "{count} heap allocations in two Link::wait calls");
}
