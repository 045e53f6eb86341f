//! Two sessions in simulated time over a simulated link (see `duet_tests::sim`): what a
//! user of the chat would notice — messages arriving once, in order, whole; failures
//! reported in bounded time; peers coming and going.
//!
//! Every failing simulation prints its seed; `DUET_SIM_SEED=<seed>` reruns only that one.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use duet_core::session::{Config, MAX_MESSAGE, OUTBOX_PARTS, WINDOW};
use duet_core::wire::frame::MAX_PAYLOAD;
use duet_core::wire::{Body, Frame, Payload, Repr};
use duet_core::{Duration, FailReason, Instant, MessageId, SendError, Session, text};
use duet_tests::sim::{Endpoint, Happened, Link, Pair, Side, a_addr, addr, b_addr, epoch, seeds};

/// Text that exercises every width of UTF-8: 1-byte ASCII, 2-byte Latin and Cyrillic,
/// 3-byte CJK, 4-byte emoji.
const SNIPPETS: [&str; 6] = [
    "hello",
    "你好，世界",
    "naïve café",
    "Привет 👋",
    "😀🎉🚀",
    "ok",
];

/// The `i`th message `who` sends. Every 50th is ~2.5 kB of CJK and emoji, so it travels
/// in three parts; the rest fit in one. The index makes every text unique, so a duplicate
/// or a reordering is visible.
fn message(who: &str, i: usize) -> String {
    let head = format!("{who}#{i} {}", SNIPPETS[i % SNIPPETS.len()]);
    if i % 50 == 49 {
        let mut long = head;
        while long.len() < 2500 {
            long.push_str(" 长消息😀");
        }
        long
    } else {
        head
    }
}

fn parts(text: &str) -> usize {
    text::split(text, MAX_PAYLOAD).count()
}

/// What one side means to say, fed to its session as fast as the outbox allows.
struct Script {
    texts: Vec<String>,
    /// Texts after this index wait: lets a test pause a sender.
    limit: usize,
    next: usize,
    ids: Vec<MessageId>,
}

impl Script {
    fn new(who: &str, count: usize) -> Self {
        Script {
            texts: (0..count).map(|i| message(who, i)).collect(),
            limit: count,
            next: 0,
            ids: Vec::new(),
        }
    }

    /// Send until the outbox is full; checks that `has_room` predicts `send_text`.
    fn feed<const O: usize, const I: usize>(&mut self, pair: &mut Pair<O, I>, side: Side) {
        let now = pair.now;
        let session = &mut pair.side(side).session;
        while self.next < self.limit.min(self.texts.len()) {
            let text = &self.texts[self.next];
            let room = session.has_room(text);
            match session.send_text(now, text) {
                Ok(id) => {
                    assert!(room, "{side:?}: has_room said no, send_text said yes");
                    self.ids.push(id);
                    self.next += 1;
                }
                Err(SendError::OutboxFull) => {
                    assert!(!room, "{side:?}: has_room said yes, send_text said full");
                    break;
                }
                Err(e) => panic!("{side:?}: send_text({text:?}) failed: {e}"),
            }
        }
    }

    /// `count` messages of 400 to 2600 bytes: one to three parts each, so a few parts held
    /// ahead of a missing one fill a small receiver.
    fn long(who: &str, count: usize) -> Self {
        let mut script = Script::new(who, count);
        for (i, text) in script.texts.iter_mut().enumerate() {
            let len = 400 + i * 337 % 2200;
            while text.len() < len {
                text.push_str(" 长消息😀");
            }
        }
        script
    }

    fn all_sent(&self) -> bool {
        self.next == self.texts.len()
    }
}

/// Assert `got` is exactly `want`, naming the first difference instead of dumping both.
fn assert_same_messages<const O: usize, const I: usize>(
    pair: &Pair<O, I>,
    who: &str,
    got: &[&str],
    want: &[String],
) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{pair}: {who} message {i} is {:?}, expected {:?}",
            got[i], want[i]
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{pair}: {who} got {} messages, expected {}",
        got.len(),
        want.len()
    );
}

/// Every id is named by exactly one outcome event, and it is `Delivered`.
fn assert_all_delivered<const O: usize, const I: usize>(
    pair: &Pair<O, I>,
    side: Side,
    ids: &[MessageId],
) {
    let log = match side {
        Side::A => &pair.a.log,
        Side::B => &pair.b.log,
    };
    assert!(
        log.failed().is_empty(),
        "{pair}: {side:?} had failures: {:?}",
        log.failed()
    );
    let mut delivered = log.delivered();
    delivered.sort();
    let mut want = ids.to_vec();
    want.sort();
    assert_eq!(
        delivered, want,
        "{pair}: {side:?}'s Delivered events differ from the ids it sent"
    );
}

/// Feed both scripts until every message went both ways; then each side saw exactly the
/// other's texts, in order, once, and every id it sent was reported delivered.
fn exchange_all<const O: usize, const I: usize>(
    pair: &mut Pair<O, I>,
    from_a: Script,
    from_b: Script,
) {
    exchange_all_checking(pair, from_a, from_b, |_| {});
}

/// [`exchange_all`], calling `check` between every two steps.
fn exchange_all_checking<const O: usize, const I: usize>(
    pair: &mut Pair<O, I>,
    mut from_a: Script,
    mut from_b: Script,
    mut check: impl FnMut(&Pair<O, I>),
) {
    let (count_a, count_b) = (from_a.texts.len(), from_b.texts.len());
    pair.drive_until(
        "all messages delivered both ways",
        Duration::from_secs(3600),
        |p| {
            check(p);
            from_a.feed(p, Side::A);
            from_b.feed(p, Side::B);
            from_a.all_sent()
                && from_b.all_sent()
                && p.a.session.pending() == 0
                && p.b.session.pending() == 0
                && p.b.session.stats().messages_in as usize >= count_a
                && p.a.session.stats().messages_in as usize >= count_b
        },
    );
    assert_same_messages(pair, "B", &pair.b.log.messages(), &from_a.texts);
    assert_same_messages(pair, "A", &pair.a.log.messages(), &from_b.texts);
    assert_all_delivered(pair, Side::A, &from_a.ids);
    assert_all_delivered(pair, Side::B, &from_b.ids);
}

fn both_up(pair: &mut Pair) -> bool {
    pair.a.session.is_peer_up() && pair.b.session.is_peer_up()
}

#[test]
fn thousand_messages_each_way_arrive_once_in_order_over_a_lossy_link() {
    const COUNT: usize = 1000;
    for seed in seeds(&[1, 2, 3, 4, 5]) {
        let mut pair = Pair::connected(seed, Link::lossy(0.3), Config::default());
        let bundles = count_bundles(&mut pair, false);
        exchange_all(&mut pair, Script::new("A", COUNT), Script::new("B", COUNT));
        // Most messages went several to a part, in bundles, lost and resent whole.
        assert!(
            bundles.get() > 100,
            "{pair}: {} bundles sent",
            bundles.get()
        );
        // The link really lost, duplicated and reordered: otherwise this proves little.
        let (a, b) = (pair.a.session.stats(), pair.b.session.stats());
        assert!(
            a.retransmits > 0 && b.retransmits > 0,
            "{pair}: {a:?} {b:?}"
        );
        assert!(a.duplicates > 0 && b.duplicates > 0, "{pair}: {a:?} {b:?}");
    }
}

/// With a peer that never says it takes bundles (an older duet, or the board), every
/// message goes in parts of its own, and all of them arrive as before.
#[test]
fn a_peer_that_never_sends_features_gets_no_bundle() {
    const COUNT: usize = 300;
    for seed in seeds(&[6, 7]) {
        let mut pair = Pair::connected(seed, Link::lossy(0.2), Config::default());
        let bundles = count_bundles(&mut pair, true);
        exchange_all(&mut pair, Script::new("A", COUNT), Script::new("B", COUNT));
        assert_eq!(bundles.get(), 0, "{pair}");
        assert!(!pair.a.session.peer_takes_bundles() && !pair.b.session.peer_takes_bundles());
    }
}

/// The same with a small board's receive buffer: 4 KiB of text instead of ~34 KiB, from
/// senders with twice that in flight. The receiver holds parts that arrive ahead of a
/// missing one only while the missing ones still fit, so it runs out of room often (long
/// messages, 30% loss, reordering) and must still take every message once, in order, and
/// never wait forever for a part that has no room.
#[test]
fn small_buffers_still_deliver_every_message_once_in_order_over_a_lossy_link() {
    const COUNT: usize = 300;
    for seed in seeds(&[11, 12, 13]) {
        // A part can go unacknowledged for longer than the default 30 s here (a third of
        // everything is lost, and a small receiver drops parts far ahead): a message that
        // fails would be a lost message in this test, so the timeout is out of the way.
        let config = Config {
            delivery_timeout: Duration::from_secs(600),
            ..Config::default()
        };
        let mut pair = Pair::<8192, 4096>::connected_sized(seed, Link::lossy(0.3), config);
        exchange_all(
            &mut pair,
            Script::long("A", COUNT),
            Script::long("B", COUNT),
        );
        assert!(
            pair.a.session.stats().out_of_window + pair.b.session.stats().out_of_window > 0,
            "{pair}: the receivers never ran out of room: the test tests nothing"
        );
    }
}

/// Both sessions hold acknowledgements until their application confirms
/// ([`Config::confirm_receipt`]).
fn confirming() -> Config {
    Config {
        confirm_receipt: true,
        ..Config::default()
    }
}

/// The sender may report delivered only what the receiving application confirmed: checked
/// between every two steps, in both directions.
fn assert_delivered_only_when_confirmed<const O: usize, const I: usize>(pair: &Pair<O, I>) {
    for (side, sender, receiver) in [("A", &pair.a, &pair.b), ("B", &pair.b, &pair.a)] {
        let delivered = sender.log.delivered().len();
        assert!(
            delivered <= receiver.confirmed,
            "{pair}: {side} was told {delivered} messages were delivered, its peer confirmed \
             only {} of the {} it took",
            receiver.confirmed,
            receiver.log.messages().len()
        );
    }
}

#[test]
fn receiver_that_never_confirms_gets_nothing_reported_delivered() {
    let config = confirming();
    for seed in seeds(&[21]) {
        let mut pair = Pair::connected(seed, Link::PERFECT, config);
        pair.drive_until("both peers up", Duration::from_secs(1), both_up);
        let sent_at = pair.now;
        let texts = [message("A", 0), message("A", 49), message("A", 2)];
        assert_eq!(
            parts(&texts[1]),
            3,
            "the test needs a message in three parts"
        );
        let ids: Vec<MessageId> = texts
            .iter()
            .map(|t| pair.a.session.send_text(pair.now, t).unwrap())
            .collect();
        // B's application takes every message and never manages to store one.
        let bound = config.delivery_timeout + config.max_rto;
        pair.drive_until("every message failed", bound, |p| {
            assert_delivered_only_when_confirmed(p);
            p.a.log.failed().len() == ids.len()
        });
        assert_eq!(
            pair.b.log.messages(),
            texts,
            "{pair}: shown once each, in order"
        );
        assert_eq!(pair.b.session.unconfirmed(), ids.len(), "{pair}");
        assert!(
            pair.b.session.stats().duplicates > 0,
            "{pair}: A never resent what B did not acknowledge"
        );
        for (failed_at, id, why) in pair.a.log.failed() {
            assert!(ids.contains(&id) && why == FailReason::Timeout, "{pair}");
            assert!(
                failed_at >= sent_at + config.delivery_timeout,
                "{pair}: {id} failed after {} ms, before the delivery timeout",
                (failed_at - sent_at).as_millis()
            );
            assert_eq!(pair.a.log.outcomes_of(id), 1, "{pair}");
        }
        // Acknowledgements and pings still flowed: the peers never looked gone.
        for endpoint in [&pair.a, &pair.b] {
            assert_eq!(endpoint.log.peer_changes().len(), 1, "{pair}");
        }

        // A late confirmation does not revive what failed, and the next message goes through.
        pair.b.confirm();
        let next = pair
            .a
            .session
            .send_text(pair.now, "after the failures")
            .unwrap();
        pair.b.confirm_every = Some(1);
        pair.drive_until("the next message delivered", Duration::from_secs(2), |p| {
            p.a.log.delivered().contains(&next)
        });
        assert_eq!(pair.a.log.delivered(), [next], "{pair}");
        assert_eq!(pair.b.log.messages().len(), ids.len() + 1, "{pair}");
    }
}

#[test]
fn messages_confirmed_together_are_reported_delivered_in_order_once() {
    const K: usize = 10;
    let config = confirming();
    for seed in seeds(&[22]) {
        let mut pair = Pair::connected(seed, Link::PERFECT, config);
        pair.drive_until("both peers up", Duration::from_secs(1), both_up);
        let script = Script::new("A", K);
        let ids: Vec<MessageId> = script
            .texts
            .iter()
            .map(|t| pair.a.session.send_text(pair.now, t).unwrap())
            .collect();
        pair.drive_until("B took every message", Duration::from_secs(1), |p| {
            p.b.log.messages().len() == K
        });
        // Several retransmission rounds: the messages are resent, not shown again, and not
        // acknowledged while B's application has not stored them.
        pair.advance(Duration::from_secs(5));
        assert!(
            pair.a.log.delivered().is_empty(),
            "{pair}: delivered before B confirmed: {:?}",
            pair.a.log.delivered()
        );
        assert!(pair.a.session.stats().retransmits > 0, "{pair}");
        assert_same_messages(&pair, "B", &pair.b.log.messages(), &script.texts);
        assert_eq!(pair.b.session.unconfirmed(), K, "{pair}");

        // One transaction stores them all.
        pair.b.confirm();
        let confirmed_at = pair.now;
        pair.drive_until("all delivered", Duration::from_millis(50), |p| {
            p.a.log.delivered().len() == K
        });
        assert!(
            pair.now - confirmed_at <= Link::PERFECT.latency,
            "{pair}: the acknowledgement waited {} ms after the confirmation",
            (pair.now - confirmed_at).as_millis()
        );
        pair.advance(Duration::from_secs(10));
        assert_eq!(pair.a.log.delivered(), ids, "{pair}: in order, once each");
        assert!(pair.a.log.failed().is_empty(), "{pair}");
        assert_same_messages(&pair, "B", &pair.b.log.messages(), &script.texts);
        assert_eq!(pair.b.session.unconfirmed(), 0, "{pair}");
    }
}

/// The lossy exchange with both applications storing in batches: each confirms what it
/// took only every few turns, so several messages wait unconfirmed at a time.
#[test]
fn batched_confirmations_over_a_lossy_link_deliver_every_message_once_in_order() {
    const COUNT: usize = 300;
    for seed in seeds(&[31, 32, 33]) {
        let mut pair = Pair::connected(seed, Link::lossy(0.3), confirming());
        pair.a.confirm_every = Some(3);
        pair.b.confirm_every = Some(7);
        let mut most_unconfirmed = 0;
        exchange_all_checking(
            &mut pair,
            Script::new("A", COUNT),
            Script::new("B", COUNT),
            |p| {
                assert_delivered_only_when_confirmed(p);
                most_unconfirmed = most_unconfirmed
                    .max(p.a.session.unconfirmed())
                    .max(p.b.session.unconfirmed());
            },
        );
        assert!(
            most_unconfirmed > 1,
            "{pair}: no application ever held more than one message unconfirmed"
        );
        assert_delivered_only_when_confirmed(&pair);
    }
}

#[test]
fn cut_link_fails_messages_within_the_delivery_timeout() {
    let config = Config::default();
    for seed in seeds(&[4]) {
        let mut pair = Pair::connected(seed, Link::PERFECT, config);
        pair.drive_until("both peers up", Duration::from_secs(1), both_up);
        let before = pair
            .a
            .session
            .send_text(pair.now, "before the cut")
            .unwrap();
        pair.drive_until("first message delivered", Duration::from_secs(1), |p| {
            p.a.log.delivered().contains(&before)
        });

        pair.cut = true;
        let sent_at = pair.now;
        let lost = pair
            .a
            .session
            .send_text(pair.now, "lost in the cut")
            .unwrap();
        let bound = config.delivery_timeout + config.max_rto;
        pair.drive_until("the message failed", bound, |p| {
            !p.a.log.failed().is_empty()
        });
        let failed = pair.a.log.failed();
        assert_eq!(failed.len(), 1, "{pair}: {failed:?}");
        let (failed_at, id, why) = failed[0];
        assert_eq!((id, why), (lost, FailReason::Timeout), "{pair}");
        assert!(
            failed_at >= sent_at + config.delivery_timeout && failed_at <= sent_at + bound,
            "{pair}: failed {} ms after the send, outside [{}, {}]",
            (failed_at - sent_at).as_millis(),
            config.delivery_timeout,
            bound
        );
        for (side, endpoint) in [("A", &pair.a), ("B", &pair.b)] {
            assert!(
                endpoint
                    .log
                    .peer_changes()
                    .iter()
                    .any(|&(at, up)| at > sent_at && up.is_none()),
                "{pair}: {side} did not report PeerDown while the link was cut"
            );
        }

        pair.cut = false;
        let after = pair.a.session.send_text(pair.now, "after the cut").unwrap();
        pair.drive_until(
            "the message after the cut delivered",
            config.keepalive + Duration::from_secs(1),
            |p| p.a.log.delivered().contains(&after),
        );
        // B never saw the failed message and did not wait for it.
        assert_eq!(
            pair.b.log.messages(),
            ["before the cut", "after the cut"],
            "{pair}"
        );
        assert_eq!(pair.a.log.outcomes_of(lost), 1, "{pair}");
        pair.drive_until(
            "both peers up again",
            config.keepalive + Duration::from_secs(1),
            both_up,
        );
    }
}

/// Count the bundles either side sends from now on (a filter that lets everything through,
/// or, with `older_peer`, everything but FEATURES frames, as if the other side were a duet
/// from before them).
fn count_bundles<const O: usize, const I: usize>(
    pair: &mut Pair<O, I>,
    older_peer: bool,
) -> Rc<Cell<usize>> {
    let bundles = Rc::new(Cell::new(0));
    let seen = Rc::clone(&bundles);
    pair.filter = Some(Box::new(move |w| {
        let bundle = Frame::new_checked(&w.bytes[..])
            .ok()
            .and_then(|f| Repr::parse(&f).ok())
            .is_some_and(|r| {
                matches!(
                    r.body,
                    Body::Data {
                        payload: Payload::Bundle(_),
                        ..
                    }
                )
            });
        seen.set(seen.get() + usize::from(bundle));
        !(older_peer && w.bytes.get(3) == Some(&duet_core::wire::frame::kind::FEATURES))
    }));
    bundles
}

/// Parses a datagram as a DATA frame: `(sender epoch, seq)`.
fn data_seq(bytes: &[u8]) -> Option<(u32, u32)> {
    let repr = Repr::parse(&Frame::new_checked(bytes).ok()?).ok()?;
    match repr.body {
        Body::Data { seq, .. } => Some((repr.epoch, seq)),
        _ => None,
    }
}

#[test]
fn message_that_failed_half_delivered_is_never_shown_in_part() {
    let config = Config::default();
    // Which of the three parts get through: the head alone, or the tail without its head.
    for seed in seeds(&[5]) {
        for (case, gets_through) in [("head", 0..1), ("tail", 1..3)] {
            let mut pair = Pair::connected(seed, Link::PERFECT, config);
            pair.drive_until("both peers up", Duration::from_secs(1), both_up);
            let long = message("A", 49);
            assert_eq!(parts(&long), 3, "the test needs a message in three parts");
            let id = pair.a.session.send_text(pair.now, &long).unwrap();
            // Everything else still flows, so the peers stay up while the message times out.
            let first = id.0;
            pair.filter = Some(Box::new(move |w| match data_seq(&w.bytes) {
                Some((_, seq)) if (first..first + 3).contains(&seq) => {
                    gets_through.contains(&(seq - first))
                }
                _ => true,
            }));
            pair.drive_until(
                "the half-sent message failed",
                config.delivery_timeout + config.max_rto,
                |p| !p.a.log.failed().is_empty(),
            );
            assert_eq!(pair.a.log.failed()[0].1, id, "{pair} ({case})");
            pair.filter = None;
            let next = pair.a.session.send_text(pair.now, "next").unwrap();
            pair.drive_until("the next message delivered", Duration::from_secs(2), |p| {
                p.a.log.delivered().contains(&next)
            });
            assert_eq!(pair.b.log.messages(), ["next"], "{pair} ({case})");
            assert!(
                pair.b.log.peer_changes().iter().all(|(_, up)| up.is_some()),
                "{pair} ({case}): B's peer never went away"
            );
        }
    }
}

#[test]
fn part_lost_in_a_burst_is_resent_promptly_once_the_burst_ends() {
    let config = Config::default();
    for seed in seeds(&[20]) {
        let mut pair = Pair::connected(seed, Link::PERFECT, config);
        pair.drive_until("both peers up", Duration::from_secs(1), both_up);
        let unlucky = pair.a.session.send_text(pair.now, "unlucky").unwrap();
        // Every copy of the unlucky part is lost for a second, while later messages get
        // through and are acknowledged: each acknowledgement makes A resend it early.
        let burst = Rc::new(Cell::new(true));
        let in_burst = Rc::clone(&burst);
        pair.filter = Some(Box::new(move |w| {
            !(in_burst.get() && data_seq(&w.bytes).is_some_and(|(_, seq)| seq == unlucky.0))
        }));
        // The unlucky part holds the send window's base: room for WINDOW - 1 more.
        for i in 0..WINDOW - 1 {
            pair.a
                .session
                .send_text(pair.now, &format!("lucky {i}"))
                .unwrap();
            pair.advance(Duration::from_millis(70));
        }
        assert!(
            pair.a.session.stats().retransmits >= WINDOW as u32 - 1,
            "{pair}: the burst did not cause early resends"
        );
        burst.set(false);
        let ended = pair.now;
        pair.drive_until("the unlucky message delivered", config.max_rto, |p| {
            p.a.log.delivered().contains(&unlucky)
        });
        // Early resends are not timeouts: they must not have backed the timer off to
        // max_rto (RFC 6298 backs off on expiry only).
        assert!(
            pair.now - ended < Duration::from_secs(1),
            "{pair}: resent {} ms after the burst ended",
            (pair.now - ended).as_millis()
        );
        // B held the lucky ones back until the unlucky one, sent first, arrived.
        let mut want = vec!["unlucky".to_owned()];
        want.extend((0..WINDOW - 1).map(|i| format!("lucky {i}")));
        assert_same_messages(&pair, "B", &pair.b.log.messages(), &want);
    }
}

#[test]
fn restarted_peer_is_recognised() {
    let config = Config::default();
    for seed in seeds(&[6, 7, 8, 9]) {
        let mut pair = Pair::connected(seed, Link::lossy(0.2), config);
        let mut from_a = Script::new("A", 80);
        from_a.limit = 40;
        let mut from_old_b = Script::new("B1", 40);
        // Restart B mid-conversation: messages of both directions are still in flight.
        pair.drive_until("half the conversation", Duration::from_secs(600), |p| {
            from_a.feed(p, Side::A);
            from_old_b.feed(p, Side::B);
            p.a.log.messages().len() >= 30 && p.b.log.messages().len() >= 30
        });
        let restart_epoch = (pair.random() as u32).max(1);
        let restarted = Session::new(pair.now, config, restart_epoch, Some(a_addr()));
        pair.b = Endpoint::new(b_addr(), restarted);
        let restarted_at = pair.now;
        let a_sent_before = from_a.next;
        from_a.limit = 80;
        let mut from_new_b = Script::new("B2", 40);
        pair.drive_until("the rest delivered", Duration::from_secs(600), |p| {
            from_a.feed(p, Side::A);
            from_new_b.feed(p, Side::B);
            from_a.all_sent()
                && from_new_b.all_sent()
                && p.a.session.pending() == 0
                && p.b.session.pending() == 0
                && p.a.log.messages().iter().any(|m| m.starts_with("B2#39 "))
        });
        // Let stragglers of the old run arrive: they must change nothing.
        pair.advance(Duration::from_secs(2));

        let at_a = pair.a.log.messages();
        let unique: HashSet<&str> = at_a.iter().copied().collect();
        assert_eq!(unique.len(), at_a.len(), "{pair}: A showed a message twice");
        let old_run: Vec<&str> = at_a
            .iter()
            .copied()
            .filter(|m| m.starts_with("B1#"))
            .collect();
        let new_run: Vec<&str> = at_a
            .iter()
            .copied()
            .filter(|m| m.starts_with("B2#"))
            .collect();
        assert_same_messages(
            &pair,
            "A (from the restarted B)",
            &new_run,
            &from_new_b.texts,
        );
        assert!(
            is_in_order(&old_run, &from_old_b.texts),
            "{pair}: A showed the old run out of order: {old_run:?}"
        );
        let first_new = at_a.iter().position(|m| m.starts_with("B2#"));
        let last_old = at_a.iter().rposition(|m| m.starts_with("B1#"));
        assert!(
            last_old < first_new,
            "{pair}: A showed the old run after the new one: {at_a:?}"
        );

        // The restarted B shows what A sent after the restart exactly once, in order.
        let at_new_b = pair.b.log.messages();
        let unique: HashSet<&str> = at_new_b.iter().copied().collect();
        assert_eq!(
            unique.len(),
            at_new_b.len(),
            "{pair}: new B showed a duplicate"
        );
        assert!(
            is_in_order(&at_new_b, &from_a.texts),
            "{pair}: new B showed A's messages out of order: {at_new_b:?}"
        );
        for text in &from_a.texts[a_sent_before..] {
            assert!(
                at_new_b.contains(&text.as_str()),
                "{pair}: A sent {text:?} after the restart; the new B never showed it"
            );
        }
        // A learnt the outcome of every message once, and nothing sent to the new run failed.
        for &id in &from_a.ids {
            assert_eq!(pair.a.log.outcomes_of(id), 1, "{pair}: outcomes of {id}");
        }
        for &(at, id, _) in &pair.a.log.failed() {
            assert!(
                id < from_a.ids[a_sent_before],
                "{pair}: {id}, sent after the restart at {restarted_at:?}, failed at {at:?}"
            );
        }
        assert_all_delivered(&pair, Side::B, &from_new_b.ids);
    }
}

/// Whether `got` is a subsequence of `sent`: nothing reordered, nothing invented.
fn is_in_order(got: &[&str], sent: &[String]) -> bool {
    let mut sent = sent.iter();
    got.iter().all(|g| sent.any(|s| s == g))
}

#[test]
fn stale_frame_from_before_a_restart_is_not_shown_again() {
    let config = Config::default();
    for seed in seeds(&[10]) {
        let mut pair = Pair::connected(seed, Link::PERFECT, config);
        let old_epoch = pair.b.session.epoch();
        // Record every DATA frame of B's first run, to replay one late.
        let captured = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&captured);
        pair.filter = Some(Box::new(move |w| {
            if data_seq(&w.bytes).is_some_and(|(epoch, _)| epoch == old_epoch) {
                sink.borrow_mut().push(w.clone());
            }
            true
        }));
        pair.b
            .session
            .send_text(pair.now, "from the old run")
            .unwrap();
        pair.drive_until("the old run's message shown", Duration::from_secs(1), |p| {
            p.a.log.messages().len() == 1
        });

        let restarted = Session::new(pair.now, config, old_epoch ^ 0x5a5a, Some(a_addr()));
        pair.b = Endpoint::new(b_addr(), restarted);
        pair.b
            .session
            .send_text(pair.now, "from the new run")
            .unwrap();
        pair.drive_until("the new run's message shown", Duration::from_secs(1), |p| {
            p.a.log.messages().len() == 2
        });
        // The network delivers a copy of the old run's frame late.
        let stale = captured.borrow()[0].clone();
        pair.inject(stale.from, stale.to, &stale.bytes);
        pair.advance(Duration::from_millis(100));
        let id = pair
            .b
            .session
            .send_text(pair.now, "still the new run")
            .unwrap();
        let reply = pair.a.session.send_text(pair.now, "hello new run").unwrap();
        pair.drive_until("both directions delivered", Duration::from_secs(10), |p| {
            p.b.log.delivered().contains(&id) && p.a.log.delivered().contains(&reply)
        });
        pair.advance(Duration::from_secs(1));
        assert_eq!(
            pair.a.log.messages(),
            ["from the old run", "from the new run", "still the new run"],
            "{pair}"
        );
        assert_eq!(pair.b.log.messages(), ["hello new run"], "{pair}");
    }
}

#[test]
fn peer_liveness() {
    let config = Config::default();
    for seed in seeds(&[11]) {
        let mut pair = Pair::connected(seed, Link::PERFECT, config);
        pair.drive_until("both peers up", Duration::from_secs(1), both_up);
        pair.advance(Duration::from_millis(10));
        assert_eq!(
            pair.a
                .log
                .peer_changes()
                .iter()
                .map(|c| c.1)
                .collect::<Vec<_>>(),
            [Some(b_addr())],
            "{pair}"
        );
        assert_eq!(
            pair.b
                .log
                .peer_changes()
                .iter()
                .map(|c| c.1)
                .collect::<Vec<_>>(),
            [Some(a_addr())],
            "{pair}"
        );

        // A quiet minute: keepalives keep both up.
        pair.advance(Duration::from_secs(60));
        assert_eq!(pair.a.log.peer_changes().len(), 1, "{pair}: A flapped");
        assert_eq!(pair.b.log.peer_changes().len(), 1, "{pair}: B flapped");

        pair.cut = true;
        pair.drive_until(
            "both peers down",
            config.idle_timeout + Duration::from_secs(1),
            |p| !p.a.session.is_peer_up() && !p.b.session.is_peer_up(),
        );
        pair.advance(Duration::from_millis(1));
        for endpoint in [&pair.a, &pair.b] {
            let changes = endpoint.log.peer_changes();
            let heard = endpoint.last_arrival.unwrap();
            let (down_at, down) = changes[changes.len() - 1];
            assert_eq!(down, None, "{pair}: {changes:?}");
            // Silence is measured from the last datagram heard, not from the cut.
            assert!(
                down_at >= heard + config.idle_timeout
                    && down_at <= heard + config.idle_timeout + config.min_rto,
                "{pair}: peer down {} ms after last heard, idle timeout {}",
                (down_at - heard).as_millis(),
                config.idle_timeout
            );
        }

        pair.cut = false;
        let restored = pair.now;
        pair.drive_until(
            "both peers up again",
            config.keepalive + Duration::from_secs(1),
            both_up,
        );
        pair.advance(Duration::from_millis(10));
        for (endpoint, there) in [(&pair.a, b_addr()), (&pair.b, a_addr())] {
            let changes = endpoint.log.peer_changes();
            assert_eq!(
                changes.iter().map(|c| c.1).collect::<Vec<_>>(),
                [Some(there), None, Some(there)],
                "{pair}"
            );
            assert!(changes[2].0 > restored, "{pair}");
        }
    }
}

#[test]
fn stranger_cannot_take_over_a_live_peer() {
    let config = Config::default();
    let stranger = addr(3, 6000);
    for seed in seeds(&[12, 13]) {
        // A listens and adopts whoever speaks first: B.
        let a = Session::new(Instant::ZERO, config, epoch(seed, 1), None);
        let b = Session::new(Instant::ZERO, config, epoch(seed, 2), Some(a_addr()));
        let mut pair = Pair::new(
            seed,
            Link::lossy(0.1),
            Endpoint::new(a_addr(), a),
            Endpoint::new(b_addr(), b),
        );
        // B pings every keepalive until a ping gets through.
        pair.drive_until("A adopted B", config.keepalive.saturating_mul(4), both_up);

        // The stranger sends valid frames of its own epoch to A, and retransmits them.
        let mut c = Session::new(pair.now, config, epoch(seed, 3), Some(a_addr()));
        let claim = c.send_text(pair.now, "I am your peer now").unwrap();
        pair.bystanders.push(Endpoint::new(stranger, c));
        let give_up = pair.now + config.delivery_timeout + config.max_rto;
        // A and B talk all the while: the stranger meets a live peer throughout.
        let mut from_a = Script::new("A", 40);
        let mut from_b = Script::new("B", 40);
        for second in 1..=40 {
            from_a.limit = second;
            from_b.limit = second;
            from_a.feed(&mut pair, Side::A);
            from_b.feed(&mut pair, Side::B);
            pair.advance(Duration::from_secs(1));
        }
        pair.drive_until(
            "A and B done, the stranger given up",
            Duration::from_secs(120),
            |p| {
                from_a.feed(p, Side::A);
                from_b.feed(p, Side::B);
                from_a.all_sent()
                    && from_b.all_sent()
                    && p.a.session.pending() == 0
                    && p.b.session.pending() == 0
                    && p.now > give_up
            },
        );

        let heard = pair.arrivals(stranger, a_addr());
        assert!(heard > 3, "{pair}: the stranger barely reached A");
        assert_eq!(
            u64::from(pair.a.session.stats().foreign),
            heard,
            "{pair}: every stranger frame counts as foreign"
        );
        assert_eq!(pair.a.session.peer(), Some(b_addr()), "{pair}");
        assert_eq!(
            pair.a
                .log
                .peer_changes()
                .iter()
                .map(|c| c.1)
                .collect::<Vec<_>>(),
            [Some(b_addr())],
            "{pair}: A's peer changed"
        );
        assert_same_messages(&pair, "A", &pair.a.log.messages(), &from_b.texts);
        assert_same_messages(&pair, "B", &pair.b.log.messages(), &from_a.texts);
        assert_eq!(
            pair.arrivals(a_addr(), stranger),
            0,
            "{pair}: A answered the stranger"
        );
        let c = &pair.bystanders[0];
        assert_eq!(
            c.log.entries.iter().map(|e| &e.1).collect::<Vec<_>>(),
            [&Happened::Failed(claim, FailReason::Timeout)],
            "{pair}: the stranger learns only that it was not heard"
        );
    }
}

#[test]
fn peer_that_left_can_be_replaced_from_a_new_address() {
    let config = Config::default();
    let newcomer = addr(3, 6000);
    for seed in seeds(&[14]) {
        let a = Session::new(Instant::ZERO, config, epoch(seed, 1), None);
        let b = Session::new(Instant::ZERO, config, epoch(seed, 2), Some(a_addr()));
        let mut pair = Pair::new(
            seed,
            Link::PERFECT,
            Endpoint::new(a_addr(), a),
            Endpoint::new(b_addr(), b),
        );
        // B pings every keepalive until a ping gets through.
        pair.drive_until("A adopted B", config.keepalive.saturating_mul(4), both_up);
        pair.b.session.close();
        pair.drive_until("A saw B leave", Duration::from_secs(1), |p| {
            !p.a.session.is_peer_up()
        });

        let c = Session::new(pair.now, config, epoch(seed, 3), Some(a_addr()));
        pair.b = Endpoint::new(newcomer, c);
        pair.b.session.send_text(pair.now, "hi, I'm new").unwrap();
        pair.drive_until("A shows the newcomer", Duration::from_secs(2), |p| {
            p.a.log.messages().contains(&"hi, I'm new")
        });
        let reply = pair.a.session.send_text(pair.now, "welcome").unwrap();
        pair.drive_until("the reply delivered", Duration::from_secs(2), |p| {
            p.a.log.delivered().contains(&reply)
        });
        assert_eq!(pair.b.log.messages(), ["welcome"], "{pair}");
        assert_eq!(
            pair.a
                .log
                .peer_changes()
                .iter()
                .map(|c| c.1)
                .collect::<Vec<_>>(),
            [Some(b_addr()), None, Some(newcomer)],
            "{pair}"
        );
    }
}

#[test]
fn peer_that_changes_address_is_followed() {
    let config = Config::default();
    let moved = addr(2, 5999);
    for seed in seeds(&[15]) {
        let mut pair = Pair::connected(seed, Link::PERFECT, config);
        pair.drive_until("both peers up", Duration::from_secs(1), both_up);
        // B's NAT gives it a new port; its session goes on.
        pair.b.addr = moved;
        let id = pair
            .b
            .session
            .send_text(pair.now, "from my new port")
            .unwrap();
        pair.drive_until("delivered from the new port", Duration::from_secs(5), |p| {
            p.b.log.delivered().contains(&id)
        });
        let reply = pair.a.session.send_text(pair.now, "got it").unwrap();
        pair.drive_until("the reply delivered", Duration::from_secs(5), |p| {
            p.a.log.delivered().contains(&reply)
        });
        assert_eq!(pair.b.log.messages(), ["got it"], "{pair}");
        assert_eq!(pair.a.session.peer(), Some(moved), "{pair}");
        assert_eq!(
            pair.a
                .log
                .peer_changes()
                .iter()
                .map(|c| c.1)
                .collect::<Vec<_>>(),
            [Some(b_addr()), Some(moved)],
            "{pair}"
        );
    }
}

#[test]
fn full_outbox_refuses_without_losing_anything() {
    let config = Config::default();
    for seed in seeds(&[16]) {
        let mut pair = Pair::connected(seed, Link::lossy(0.2), config);
        let now = pair.now;
        let mut ids = Vec::new();
        let mut texts = Vec::new();
        // One part each, so OUTBOX_PARTS messages fill the outbox exactly.
        for i in 0..OUTBOX_PARTS {
            texts.push(format!("A#{i} {}", SNIPPETS[i % SNIPPETS.len()]));
            ids.push(pair.a.session.send_text(now, &texts[i]).unwrap());
        }
        assert!(!pair.a.session.has_room("x"), "{pair}");
        assert_eq!(
            pair.a.session.send_text(now, "one too many"),
            Err(SendError::OutboxFull),
            "{pair}"
        );
        assert_eq!(
            pair.a.session.pending(),
            OUTBOX_PARTS,
            "{pair}: refused yet queued"
        );
        pair.drive_until("room again", Duration::from_secs(60), |p| {
            p.a.session.has_room("x")
        });
        texts.push("one too many".to_owned());
        ids.push(pair.a.session.send_text(pair.now, "one too many").unwrap());
        pair.drive_until("everything delivered", Duration::from_secs(60), |p| {
            p.a.session.pending() == 0
        });
        assert_same_messages(&pair, "B", &pair.b.log.messages(), &texts);
        assert_all_delivered(&pair, Side::A, &ids);
    }
}

#[test]
fn longest_message_arrives_whole_and_longer_is_refused() {
    let config = Config::default();
    for seed in seeds(&[17]) {
        let mut pair = Pair::connected(seed, Link::lossy(0.2), config);
        // 4-byte characters fill every part exactly: the longest message there is.
        let longest = "😀".repeat(MAX_MESSAGE / 4);
        assert_eq!(longest.len(), MAX_MESSAGE);
        let now = pair.now;
        assert_eq!(
            pair.a.session.send_text(now, &format!("{longest}!")),
            Err(SendError::TooLong),
            "{pair}"
        );
        assert_eq!(
            pair.a.session.send_text(now, ""),
            Err(SendError::Empty),
            "{pair}"
        );
        assert_eq!(
            pair.a.session.pending(),
            0,
            "{pair}: a refused message was queued"
        );
        let id = pair.a.session.send_text(now, &longest).unwrap();
        pair.drive_until(
            "the longest message delivered",
            Duration::from_secs(60),
            |p| p.a.log.delivered().contains(&id),
        );
        pair.advance(Duration::from_secs(1));
        assert_eq!(pair.b.log.messages(), [longest.as_str()], "{pair}");
    }
}

#[test]
fn closing_tells_the_peer_at_once() {
    let config = Config::default();
    for seed in seeds(&[18]) {
        let mut pair = Pair::connected(seed, Link::PERFECT, config);
        pair.drive_until("both peers up", Duration::from_secs(1), both_up);
        pair.a.session.close();
        let closed_at = pair.now;
        pair.drive_until("B saw A leave", Duration::from_secs(1), |p| {
            !p.b.session.is_peer_up()
        });
        assert!(
            pair.now < closed_at + Duration::from_millis(100),
            "{pair}: B learnt of the close only by timeout"
        );
        assert!(pair.a.session.is_closed(), "{pair}");
        assert_eq!(pair.a.session.poll_timeout(), None, "{pair}");
        assert_eq!(
            pair.a.session.send_text(pair.now, "too late"),
            Err(SendError::Closed),
            "{pair}"
        );
    }
}

#[test]
fn closing_before_any_peer_was_heard_leaves_nothing_due() {
    let mut session = Session::new(Instant::ZERO, Config::default(), 1, None);
    session.close();
    let now = Instant::from_millis(10);
    session.handle_timeout(now);
    let mut buf = [0u8; duet_core::MAX_DATAGRAM];
    assert_eq!(session.poll_transmit(now, &mut buf), None);
    // A deadline at or before `now` that no call clears would make the host spin.
    assert!(
        session.poll_timeout().is_none_or(|t| t > now),
        "deadline {:?} stays due forever",
        session.poll_timeout()
    );
    assert!(session.is_closed());
}

#[test]
fn message_written_before_the_peer_is_heard_is_sent_once_it_is() {
    let config = Config::default();
    for seed in seeds(&[19]) {
        let mut a = Session::new(Instant::ZERO, config, epoch(seed, 1), None);
        let id = a.send_text(Instant::ZERO, "waiting for you").unwrap();
        let b = Session::new(Instant::ZERO, config, epoch(seed, 2), Some(a_addr()));
        let mut pair = Pair::new(
            seed,
            Link::lossy(0.2),
            Endpoint::new(a_addr(), a),
            Endpoint::new(b_addr(), b),
        );
        pair.drive_until("delivered", Duration::from_secs(30), |p| {
            p.a.log.delivered().contains(&id)
        });
        pair.advance(Duration::from_secs(1));
        assert_eq!(pair.b.log.messages(), ["waiting for you"], "{pair}");
    }
}

#[test]
fn a_live_peer_does_not_flap_down_on_a_lossy_quiet_link() {
    // Unanswered PINGs are repeated sooner than the keepalive, so a few lost PINGs or ACKs
    // on a path that drops one datagram in five do not make a live peer look gone.
    let config = Config::default();
    for seed in seeds(&[101, 102, 103]) {
        let mut pair = Pair::connected(seed, Link::lossy(0.2), config);
        pair.drive_until("both peers up", Duration::from_secs(10), both_up);
        let before = (
            pair.a.log.peer_changes().len(),
            pair.b.log.peer_changes().len(),
        );
        pair.advance(Duration::from_secs(3600));
        let after = (
            pair.a.log.peer_changes().len(),
            pair.b.log.peer_changes().len(),
        );
        assert_eq!(
            before, after,
            "{pair}: a live peer was reported down during a quiet hour"
        );
    }
}
