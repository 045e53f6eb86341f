//! duet's interactive chat on a real terminal (a tmux pane): a message that arrives while
//! the user is typing is printed above the prompt, and the half-typed line stays on the
//! prompt, intact and still editable; the start-up lines (with the legacy warning) stay on
//! screen; `/quit`, ctrl-c and ctrl-d end the program and leave the terminal's settings as
//! they were.
//!
//! Each test runs its own tmux server (`-L`), killed on drop even when the test fails.
//! Needs tmux (and, for the legacy test, `/usr/bin/python3`).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use duet_tests::peers::{Tmux, duet_message, tutorial_next, tutorial_recv, tutorial_send};
use duet_tests::process::Home;
use duet_tests::{duet_bin, free_port, local};

/// How long any one expected thing may take.
const WAIT: Duration = Duration::from_secs(10);

/// What the user has typed but not yet sent when a message arrives: ASCII and double-width
/// CJK, so a redraw that gets widths wrong shows.
const HALF_TYPED: &str = "hello half typed 你好";

/// The last row of the screen with anything on it.
fn last_row(screen: &[String]) -> &str {
    screen
        .iter()
        .rev()
        .find(|row| !row.is_empty())
        .map_or("", String::as_str)
}

/// Runs duet under a shell that, once duet has exited, prints one row with duet's exit
/// status and whether the terminal's settings (`stty -g`) are what they were before. (tmux's
/// own `pane_dead_status` is not reliable: it sometimes never reaps the process.)
const WRAPPER: &str = r#"before=$(stty -g); "$@"; status=$?; after=$(stty -g)
if [ "$before" = "$after" ]; then settings=same; else settings=changed; fi
echo "[duet exited with status $status; terminal settings $settings]""#;

/// The config directory of the legacy-mode tests: legacy mode reads no keys, but duet
/// makes sure the directory exists, and a test must not touch the user's.
fn legacy_config() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("legacy-config")
}

/// Start `duet chat --bind BIND ARGS --name alice` with the config directory `config` on a
/// UTF-8 terminal in a fresh tmux pane, and wait for its prompt (duet binds its socket
/// before it starts the editor, so the prompt means it is listening).
fn alice_in_tmux(test: &str, config: &Path, bind: &str, args: &[&str]) -> Tmux {
    let bin = duet_bin();
    let bin = bin.to_str().expect("a UTF-8 path to duet");
    let config = config.to_str().expect("a UTF-8 config path");
    let mut command = vec!["sh", "-c", WRAPPER, "sh"];
    command.extend_from_slice(&["env", "TERM=xterm-256color", "LANG=C.UTF-8"]);
    command.extend_from_slice(&[bin, "--config-dir", config, "chat", "--bind", bind]);
    command.extend_from_slice(args);
    command.extend_from_slice(&["--name", "alice"]);
    let tmux = Tmux::start(test, 200, 50, &command);
    tmux.wait_for_screen("duet's prompt", WAIT, |screen| last_row(screen) == "alice>");
    tmux
}

/// Wait until duet has exited; return the wrapper's row about it.
fn exit_report(tmux: &Tmux) -> String {
    let screen = tmux.wait_for_screen("duet's exit", WAIT, |s| {
        s.iter()
            .any(|row| row.contains("[duet exited with status "))
    });
    let row = screen
        .iter()
        .find(|row| row.contains("[duet exited with status "))
        .expect("the exit row");
    row[row.find('[').unwrap_or(0)..].to_owned()
}

/// Whether the screen is exactly duet's start-up lines and then the prompt: row `i`
/// starts (after the clock) with `banner[i][0]` and contains every fragment of `banner[i]`.
fn shows_banner_then_prompt(screen: &[String], banner: &[&[&str]]) -> bool {
    let rows: Vec<&str> = screen
        .iter()
        .map(String::as_str)
        .filter(|r| !r.is_empty())
        .collect();
    rows.len() == banner.len() + 1
        && rows.last() == Some(&"alice>")
        && rows.iter().zip(banner).all(|(row, want)| {
            row.split_once(' ').is_some_and(|(_, text)| {
                text.starts_with(want[0]) && want.iter().all(|w| text.contains(w))
            })
        })
}

#[test]
fn startup_lines_and_legacy_warning_stay_on_screen_above_the_prompt() {
    // The banner is the one place a legacy user learns that nothing is acknowledged or
    // encrypted. Whether it survives the editor's start has been a race, so start several
    // times; once the prompt is up, a banner still on its way needs milliseconds.
    const STARTS: usize = 5;
    let mut lost = Vec::new();
    for start in 0..STARTS {
        let peer = local(free_port());
        let talking = format!("* talking to {peer}");
        let banner: [&[&str]; 2] = [
            &[
                "* listening on 127.0.0.1:",
                "UNACKNOWLEDGED and UNENCRYPTED",
            ],
            &[&talking],
        ];
        let alice = local(free_port());
        let tmux = alice_in_tmux(
            &format!("banner-{start}"),
            &legacy_config(),
            &alice,
            &["--legacy", "--peer", &peer],
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut screen = tmux.screen();
        while !shows_banner_then_prompt(&screen, &banner) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            screen = tmux.screen();
        }
        if !shows_banner_then_prompt(&screen, &banner) {
            lost.push(screen.join("\n").trim().to_owned());
        }
    }
    assert!(
        lost.is_empty(),
        "the start-up lines were not all on screen above the prompt in {} of {STARTS} starts; \
         screens:\n{}",
        lost.len(),
        lost.join("\n---\n")
    );
}

/// Type half a line, let `deliver` make `incoming` arrive from `from`, and check the screen:
/// the message whole on its own row above the prompt, the half line whole on the prompt
/// row and nowhere else. Then finish the line; the caller checks it reaches the peer.
fn half_line_survives_incoming_message(
    tmux: &Tmux,
    from: &str,
    incoming: &str,
    deliver: impl FnOnce(),
) {
    tmux.type_text(HALF_TYPED);
    let prompt = format!("alice> {HALF_TYPED}");
    tmux.wait_for_screen("the half-typed line", WAIT, |s| last_row(s) == prompt);

    deliver();

    // Both at once: the message printed and the prompt drawn again under it.
    let screen = tmux.wait_for_screen("the incoming message above the prompt", WAIT, |s| {
        s.iter().any(|row| row.contains(incoming)) && last_row(s).starts_with("alice>")
    });
    let shown = screen.join("\n");
    let message_row = screen
        .iter()
        .position(|row| duet_message(row, from) == Some(incoming))
        .unwrap_or_else(|| panic!("the incoming message is not whole on one row:\n{shown}"));
    let prompt_row = screen
        .iter()
        .rposition(|row| !row.is_empty())
        .expect("a non-empty screen");
    assert_eq!(
        screen[prompt_row], prompt,
        "the half-typed line is not intact on the prompt row:\n{shown}"
    );
    assert!(
        message_row < prompt_row,
        "the message is not above the prompt:\n{shown}"
    );
    assert_eq!(
        screen.iter().filter(|row| row.contains(HALF_TYPED)).count(),
        1,
        "the half-typed line is drawn more than once:\n{shown}"
    );
    // The cursor sits right after the half line ("alice> " is 7 columns, each CJK 2).
    let columns = 7 + HALF_TYPED
        .chars()
        .map(|c| if c.is_ascii() { 1 } else { 2 })
        .sum::<usize>();
    assert_eq!(
        tmux.pane("#{cursor_x} #{cursor_y}"),
        format!("{columns} {prompt_row}"),
        "the cursor is not at the end of the half-typed line:\n{shown}"
    );

    // The editor's buffer is intact too: typing goes on where it stopped.
    tmux.type_text(" more");
    let finished = format!("{prompt} more");
    tmux.wait_for_screen("the finished line", WAIT, |s| last_row(s) == finished);
    tmux.press("Enter");
}

#[test]
fn incoming_message_prints_above_the_half_typed_line_and_leaves_it_intact() {
    let (alice, bob) = (local(free_port()), local(free_port()));
    let (alice_home, bob_home) = (Home::new("alice"), Home::new("bob"));
    alice_home.add_peer("bob", &bob_home, Some(&bob));
    bob_home.add_peer("alice", &alice_home, Some(&alice));
    let tmux = alice_in_tmux("half-line", alice_home.path(), &alice, &["--peer", "bob"]);
    let mut bob_chat = bob_home.duet(&["chat", "--bind", &bob, "--peer", "alice", "--name", "bob"]);
    bob_chat.expect(&format!("* listening on {bob}"), WAIT);

    let incoming = "来自 bob 的消息 🎉 arriving mid-line";
    half_line_survives_incoming_message(&tmux, &format!("bob@{bob}"), incoming, || {
        bob_chat.type_line(incoming);
        bob_chat.expect("delivered", WAIT);
    });

    let sent = format!("{HALF_TYPED} more");
    let from_alice = format!("alice@{alice}");
    let line = bob_chat.expect(&format!("{from_alice}: "), WAIT);
    assert_eq!(duet_message(&line, &from_alice), Some(sent.as_str()));
    let delivered = format!("delivered: {sent}");
    tmux.wait_for_screen("alice's delivery report", WAIT, |s| {
        s.iter().any(|row| row.contains(&delivered))
    });
}

#[test]
fn legacy_chat_shows_a_tutorial_message_above_the_half_typed_line() {
    let (mut receiver, receiver_port) = tutorial_recv("gbk", 1, WAIT);
    let alice = local(free_port());
    let peer = local(receiver_port);
    let tmux = alice_in_tmux(
        "legacy-half-line",
        &legacy_config(),
        &alice,
        &["--legacy", "--encoding", "gbk", "--peer", &peer],
    );
    let alice_port = alice
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let (mut sender, sender_port) = tutorial_send(alice_port, "gbk", WAIT);

    let incoming = "来自教程程序的消息，用 GBK 编码";
    half_line_survives_incoming_message(&tmux, &local(sender_port), incoming, || {
        sender.type_line(incoming);
    });

    assert_eq!(
        tutorial_next(&mut receiver, WAIT),
        (alice_port, format!("{HALF_TYPED} more"))
    );
}

/// The ways out of the chat at an empty prompt.
const WAYS_OUT: [(&str, &[&str]); 3] = [
    ("quit", &["/quit", "Enter"]),
    ("ctrl-c", &["C-c"]),
    ("ctrl-d", &["C-d"]),
];

/// Start alice, leave by `keys` (typed literally when they start with '/', else pressed),
/// and return the wrapper's exit row. Legacy mode needs no pairing, and leaving is the same
/// chat loop in both modes.
fn leave_by(test: &str, keys: &[&str]) -> String {
    let alice = local(free_port());
    let nobody = local(free_port());
    let tmux = alice_in_tmux(
        test,
        &legacy_config(),
        &alice,
        &["--legacy", "--peer", &nobody],
    );
    for key in keys {
        if key.starts_with('/') {
            tmux.type_text(key);
        } else {
            tmux.press(key);
        }
    }
    exit_report(&tmux)
}

#[test]
fn quit_command_ctrl_c_and_ctrl_d_each_end_the_interactive_chat() {
    for (way, keys) in WAYS_OUT {
        let report = leave_by(way, keys);
        assert!(
            report.starts_with("[duet exited with status 0;"),
            "{way}: {report}"
        );
    }
}

#[test]
fn every_way_out_leaves_the_terminal_settings_as_it_found_them() {
    // Whether the editor re-entered raw mode before duet exited has been a race: leave
    // several times each way.
    const TIMES: usize = 4;
    let mut changed = Vec::new();
    for (way, keys) in WAYS_OUT {
        for time in 0..TIMES {
            let report = leave_by(&format!("restore-{way}-{time}"), keys);
            if !report.ends_with("terminal settings same]") {
                changed.push(format!("{way} (try {time}): {report}"));
            }
        }
    }
    assert!(
        changed.is_empty(),
        "duet left the terminal in other settings (raw mode?): {changed:#?}"
    );
}

/// Start `duet --config-dir CONFIG --bind BIND` (a chat with nobody named) on a terminal in
/// a fresh tmux pane, under the exit-reporting wrapper.
fn bare_duet_in_tmux_at(test: &str, config: &Path, bind: &str) -> Tmux {
    let bin = duet_bin();
    let bin = bin.to_str().expect("a UTF-8 path to duet");
    let config = config.to_str().expect("a UTF-8 config path");
    let command = [
        "sh",
        "-c",
        WRAPPER,
        "sh",
        "env",
        "TERM=xterm-256color",
        "LANG=C.UTF-8",
        bin,
        "--config-dir",
        config,
        "--bind",
        bind,
    ];
    Tmux::start(test, 200, 50, &command)
}

/// [`bare_duet_in_tmux_at`] a free loopback port.
fn bare_duet_in_tmux(test: &str, config: &Path) -> Tmux {
    bare_duet_in_tmux_at(test, config, &local(free_port()))
}

#[test]
fn ctrl_c_or_ctrl_d_at_the_talk_to_prompt_leaves_quietly() {
    let (me, bob) = (Home::new("prompt-me"), Home::new("prompt-bob"));
    me.add_peer("bob", &bob, None);
    for (way, key) in [("ctrl-c", "C-c"), ("ctrl-d", "C-d")] {
        let tmux = bare_duet_in_tmux(&format!("prompt-{way}"), me.path());
        tmux.wait_for_screen("the talk-to question", WAIT, |screen| {
            last_row(screen).starts_with("talk to (")
        });
        tmux.press(key);
        let report = exit_report(&tmux);
        assert!(
            report.starts_with("[duet exited with status 0;") && report.ends_with("same]"),
            "{way}: {report}"
        );
        let screen = tmux.scrollback().join("\n");
        assert!(!screen.contains("error"), "{way}: {screen}");
    }
}

#[test]
fn a_first_run_explains_pairing_instead_of_asking_whom_to_talk_to() {
    let me = Home::new("first-run");
    let tmux = bare_duet_in_tmux("first-run", me.path());
    tmux.wait_for_screen("the offer to pair", WAIT, |screen| {
        last_row(screen).starts_with("pair now?")
    });
    // Not now: it says how to pair later, and leaves with the not-paired status.
    tmux.press("Enter");
    let report = exit_report(&tmux);
    let screen = tmux.scrollback().join("\n");
    assert!(
        report.starts_with("[duet exited with status 12;") && report.ends_with("same]"),
        "{report}\n{screen}"
    );
    assert!(screen.contains("nobody is paired yet"), "{screen}");
    assert!(screen.contains("not paired with anyone yet"), "{screen}");
    assert!(screen.contains("duet pair invite"), "{screen}");
    assert!(!screen.contains("talk to ("), "asked first: {screen}");
}

#[test]
fn a_first_run_pairs_by_invite_and_goes_on_to_chat_with_the_new_peer() {
    // `duet` on a fresh machine: invite from the first run, the other side joins with the
    // code shown, and the chat that follows talks to the one who joined.
    let (me, bob) = (Home::new("first-pair-me"), Home::new("first-pair-bob"));
    let bind = local(free_port());
    let tmux = bare_duet_in_tmux_at("first-pair", me.path(), &bind);
    tmux.wait_for_screen("the offer to pair", WAIT, |screen| {
        last_row(screen).starts_with("pair now?")
    });
    tmux.type_text("i");
    tmux.press("Enter");
    tmux.wait_for_screen("the name question", WAIT, |screen| {
        last_row(screen).starts_with("their name")
    });
    tmux.type_text("bob");
    tmux.press("Enter");
    let screen = tmux.wait_for_screen("the code", WAIT, |screen| {
        screen.iter().any(|row| row.starts_with("code: "))
    });
    let code = screen
        .iter()
        .find_map(|row| row.strip_prefix("code: "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a code")
        .to_owned();
    let (status, out) = bob.run(&["pair", "join", "alice", &code, "--addr", &bind]);
    assert_eq!(status, 0, "{out}");
    tmux.wait_for_screen("the chat with bob", WAIT, |screen| {
        screen.iter().any(|row| row.contains("talking to bob"))
    });
    // Bob writes: the chat shows it; the pairing holds on both sides.
    let (status, out) = bob.run(&["send", "--to", "alice", "hello from the joiner"]);
    assert_eq!(status, 0, "{out}");
    tmux.wait_for_screen("bob's message", WAIT, |screen| {
        screen
            .iter()
            .any(|row| row.contains(": hello from the joiner"))
    });
    tmux.type_text("/quit");
    tmux.press("Enter");
    let report = exit_report(&tmux);
    assert!(
        report.starts_with("[duet exited with status 0;") && report.ends_with("same]"),
        "{report}\n{}",
        tmux.scrollback().join("\n")
    );
    let (status, peers) = me.run(&["pair", "list"]);
    assert_eq!(status, 0, "{peers}");
    assert!(peers.contains("bob"), "{peers}");
}

#[test]
fn a_first_run_joins_an_invite_by_its_code_and_asks_again_for_a_needed_address() {
    let (me, bob) = (Home::new("first-join-me"), Home::new("first-join-bob"));
    let bob_bind = local(free_port());
    let mut invite = bob.duet(&["pair", "invite", "alice", "--bind", &bob_bind]);
    let line = invite.expect("code: ", WAIT);
    let code = line
        .split("code: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a code")
        .to_owned();
    let tmux = bare_duet_in_tmux("first-join", me.path());
    tmux.wait_for_screen("the offer to pair", WAIT, |screen| {
        last_row(screen).starts_with("pair now?")
    });
    for (answer, next) in [
        ("j", "their name"),
        ("bob", "the code they see"),
        (code.as_str(), "their address"),
    ] {
        tmux.type_text(answer);
        tmux.press("Enter");
        tmux.wait_for_screen(next, WAIT, |screen| last_row(screen).starts_with(next));
    }
    // The DHT is off in tests: an address is needed, and asked for again.
    tmux.press("Enter");
    tmux.wait_for_screen("the address asked for again", WAIT, |screen| {
        let rows: Vec<&String> = screen.iter().filter(|row| !row.is_empty()).collect();
        rows.len() >= 2
            && rows[rows.len() - 2].starts_with("the address is needed")
            && rows[rows.len() - 1].starts_with("their address")
    });
    tmux.type_text(&bob_bind);
    tmux.press("Enter");
    tmux.wait_for_screen("the chat with bob", WAIT, |screen| {
        screen
            .iter()
            .any(|row| row.contains(&format!("talking to bob at {bob_bind}")))
    });
    assert!(invite.wait(WAIT).success(), "{:?}", invite.seen);
    tmux.type_text("/quit");
    tmux.press("Enter");
    let report = exit_report(&tmux);
    assert!(
        report.starts_with("[duet exited with status 0;") && report.ends_with("same]"),
        "{report}"
    );
}
