//! `duet web` in a real browser: a headless Chromium (driven by Playwright, tests/web/
//! browser.py) opens the chat page of a `duet web` paired with a terminal `duet chat`.
//! The page shows the history on load and new messages live, shows hostile text as text,
//! sends what is typed in it and marks it delivered; requests without the token, from a
//! foreign Host or a foreign Origin get nothing.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use duet_tests::process::workspace_root;
use duet_tests::{Home, Proc, free_port, local, paired};

const T: Duration = Duration::from_secs(20);

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on loopback")
}

/// The Python that has Playwright: `DUET_PLAYWRIGHT_PYTHON`, else a virtual environment
/// under the target directory, made here (`pip install playwright`) when .ci/test-all
/// has not made it yet. The browser is the system's Chromium (apt `chromium`).
fn playwright_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("DUET_PLAYWRIGHT_PYTHON") {
                return PathBuf::from(p);
            }
            let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-venv");
            let python = venv.join("bin/python");
            let has = |python: &PathBuf| {
                Command::new(python)
                    .args(["-c", "import playwright.sync_api"])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !has(&python) {
                let made = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .is_ok_and(|s| s.success())
                    && Command::new(&python)
                        .args(["-m", "pip", "install", "-q", "playwright"])
                        .status()
                        .is_ok_and(|s| s.success());
                assert!(
                    made && has(&python),
                    "cannot install Playwright in {venv:?}"
                );
            }
            assert!(
                std::path::Path::new("/usr/bin/chromium").exists(),
                "no /usr/bin/chromium: install Debian's `chromium` (.ci/test-all does)"
            );
            python
        })
        .clone()
}

/// The headless browser, steered one command at a time.
struct Browser {
    proc: Proc,
}

impl Browser {
    fn start() -> Browser {
        let script = workspace_root().join("tests/web/browser.py");
        let mut proc = Proc::spawn(Command::new(playwright_python()).arg(script), "browser.py");
        proc.expect("ready", Duration::from_secs(60));
        Browser { proc }
    }

    /// Run a command (a JSON object); its answer's JSON, or a panic with the browser's
    /// error.
    fn ask(&mut self, command: String) -> String {
        self.proc.type_line(&command);
        let line = self.proc.expect("answer ", Duration::from_secs(60));
        match line.strip_prefix("answer ok ") {
            Some(json) => json.to_owned(),
            None => panic!("browser: {line} (for {command})"),
        }
    }

    fn goto(&mut self, url: &str) -> String {
        self.ask(cmd(&[("op", "goto"), ("url", url)]))
    }

    /// Wait until an element matching `selector` contains `text`.
    fn wait(&mut self, selector: &str, text: &str) {
        self.ask(cmd(&[
            ("op", "wait"),
            ("selector", selector),
            ("text", text),
        ]));
    }

    fn type_enter(&mut self, selector: &str, text: &str) {
        self.ask(cmd(&[
            ("op", "type"),
            ("selector", selector),
            ("text", text),
        ]));
    }

    fn eval(&mut self, js: &str) -> String {
        self.ask(cmd(&[("op", "eval"), ("js", js)]))
    }
}

/// A browser command: a JSON object of strings.
fn cmd(fields: &[(&str, &str)]) -> String {
    let quote = |s: &str| {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// One HTTP/1.1 request to `port` with these extra header lines; the status code, the
/// headers and the body.
fn http(port: u16, target: &str, headers: &[&str]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to duet web");
    stream.set_read_timeout(Some(T)).expect("read timeout");
    let mut request = format!("GET {target} HTTP/1.1\r\n");
    let given = |name: &str| {
        headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with(name))
    };
    if !given("host:") {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    if !given("connection:") {
        request.push_str("Connection: close\r\n");
    }
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        // A connection may stay open (keep-alive, an accepted WebSocket): the answer ends
        // with its headers and the body's announced length.
        if answer_complete(&answer) {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    (status, answer)
}

/// Whether `answer` holds the headers and as much body as they announce.
fn answer_complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}

/// The token in the address `duet web` printed.
fn token_of(url: &str) -> &str {
    url.split("token=").nth(1).expect("a token in the address")
}

const WS_HEADERS: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
];

/// `duet web` paired with a terminal `duet chat`.
struct Setup {
    web_home: Home,
    terminal_home: Home,
    web: Proc,
    terminal: Proc,
    /// The address `duet web` printed.
    url: String,
    /// Its HTTP port.
    port: u16,
    /// The UDP ports of `duet web` and of the terminal chat.
    web_udp: u16,
    terminal_udp: u16,
    /// The peer `duet web` is told to talk to, if any.
    web_peer: Option<&'static str>,
}

impl Setup {
    /// `duet web b` and a terminal `duet chat a`, paired and started.
    fn start() -> Setup {
        let mut setup = Setup::start_with(Some("b"));
        setup.terminal = setup.terminal();
        setup
    }

    /// `duet web` talking to `web_peer`, or to whoever writes first; the terminal chat is
    /// not started yet.
    fn start_with(web_peer: Option<&'static str>) -> Setup {
        let (web_udp, terminal_udp, port) = (free_port(), free_port(), free_tcp_port());
        let (web_home, terminal_home) = paired(Some(&local(web_udp)), Some(&local(terminal_udp)));
        let mut setup = Setup {
            web_home,
            terminal_home,
            web: Proc::spawn(&mut Command::new("true"), "nothing yet"),
            terminal: Proc::spawn(&mut Command::new("true"), "nothing yet"),
            url: String::new(),
            port,
            web_udp,
            terminal_udp,
            web_peer,
        };
        setup.start_web();
        setup
    }

    /// Start `duet web` (again): its address, with a new token, is `self.url`.
    fn start_web(&mut self) {
        let (bind, http) = (local(self.web_udp), local(self.port));
        let save = self.web_home.path().join("in").display().to_string();
        let mut args = vec![
            "web",
            "--bind",
            &bind,
            "--http",
            &http,
            "--no-open",
            "--save-dir",
            &save,
        ];
        args.extend(self.web_peer);
        self.web = self.web_home.duet(&args);
        self.url = self.web.expect("?token=", T).trim().to_owned();
        assert!(
            self.url
                .starts_with(&format!("http://127.0.0.1:{}/", self.port)),
            "{}",
            self.url
        );
    }

    /// The terminal chat, started (again).
    fn terminal(&self) -> Proc {
        let save = self.terminal_home.path().join("in").display().to_string();
        let mut terminal = self.terminal_home.duet(&[
            "chat",
            "a",
            "--bind",
            &local(self.terminal_udp),
            "--save-dir",
            &save,
        ]);
        terminal.expect("* listening on", T);
        terminal
    }
}

#[test]
fn the_page_shows_history_and_live_messages_as_text_and_sends_replies_delivered() {
    // Kept whole: what a pattern leaves out would be dropped (and killed) at once.
    let mut setup = Setup::start();
    let (terminal, url) = (&mut setup.terminal, setup.url.clone());
    // Before the page opens: it must come from the history.
    terminal.type_line("hello from the terminal");
    terminal.expect("delivered: hello from the terminal", T);

    let mut browser = Browser::start();
    assert_eq!(browser.goto(&url), r#"{"status": 200}"#);
    // The token left the address bar for the cookie.
    assert_eq!(browser.eval("location.search"), r#""""#);
    browser.wait("#log li.in", "hello from the terminal");

    terminal.type_line("live from the terminal");
    browser.wait("#log li.in", "live from the terminal");

    // Markup from the peer is shown as text and runs nothing.
    let hostile = r#"<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>"#;
    terminal.type_line(hostile);
    browser.wait("#log li.in", hostile);
    assert_eq!(
        browser.eval(
            "[document.querySelectorAll('#log img, #log script').length, typeof window.pwned]"
        ),
        r#"[0, "undefined"]"#
    );

    // Typed in the page: reaches the terminal, and the page marks it delivered.
    browser.type_enter("#composer", "reply from the page");
    terminal.expect("reply from the page", T);
    browser.wait(
        r#"#log li.out[data-state="delivered"]"#,
        "reply from the page",
    );
    assert_eq!(
        browser.eval("document.getElementById('composer').value"),
        r#""""#
    );
    // Shift+Enter is a line break in one message; the terminal shows it escaped.
    browser.type_enter("#composer", "two lines:\nthe second");
    terminal.expect("two lines:\\nthe second", T);
    browser.wait(
        r#"#log li.out[data-state="delivered"]"#,
        "two lines:\nthe second",
    );
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('input, textarea, [contenteditable]')]\
             .filter(e => !e.closest('#pairing')).length"
        ),
        "1",
        "besides the pairing fields, the composer is the page's only text input"
    );
    assert_eq!(
        browser.eval("document.title.startsWith('duet') && document.title.endsWith(' b')"),
        "true"
    );

    // Away from the page: the title counts what arrives, until the page has the focus.
    browser.eval("document.hasFocus = () => false");
    terminal.type_line("while you look elsewhere");
    browser.wait("#log li.in", "while you look elsewhere");
    assert_eq!(browser.eval("document.title.startsWith('(1) ')"), "true");
    browser.eval("document.hasFocus = () => true; window.dispatchEvent(new Event('focus'))");
    assert_eq!(browser.eval("document.title.startsWith('(')"), "false");

    // Nothing on the page failed (a script error, a CSP refusal of the WebSocket).
    assert_eq!(browser.ask(cmd(&[("op", "errors")])), "[]");
}

/// A 2×2 PNG (red, green, blue, white), for a picture the page must show.
const PICTURE: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x12, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xc0,
    0x00, 0xc2, 0x0c, 0xff, 0x81, 0x00, 0x00, 0x1f, 0xee, 0x05, 0xfb, 0x0b, 0xd9, 0x68, 0x8b, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[test]
fn a_picture_shows_inline_and_a_file_dropped_on_the_page_reaches_the_terminal() {
    let mut setup = Setup::start();
    let mut browser = Browser::start();
    assert_eq!(browser.goto(&setup.url), r#"{"status": 200}"#);
    browser.wait("#status", "connected");

    // A picture from the terminal: shown inline, decoded by the browser.
    let picture = setup.terminal_home.path().join("sunset.png");
    std::fs::write(&picture, PICTURE).expect("write the picture");
    let typed = format!("/file {}", picture.display());
    setup.terminal.type_line(&typed);
    setup.terminal.expect("saved by the peer", T);
    browser.wait("#log li.in.file", "sunset.png");
    let shown = "(() => { const i = document.querySelector('#log li.in.file img');                  return i && i.complete ? [i.naturalWidth, i.naturalHeight] : null; })()";
    let mut size = browser.eval(shown);
    for _ in 0..50 {
        if size != "null" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        size = browser.eval(shown);
    }
    assert_eq!(size, "[2, 2]", "the picture is not shown");
    let saved = setup.web_home.path().join("in/sunset.png");
    assert_eq!(std::fs::read(&saved).expect("saved by duet web"), PICTURE);

    // A file dropped onto the page: sent, byte for byte, and marked delivered.
    let drop = "(() => {         const bytes = new Uint8Array(300000).map((_, i) => (i * 7 + 3) % 251);         const dt = new DataTransfer();         dt.items.add(new File([bytes], 'notes 笔记.bin'));         document.querySelector('main').dispatchEvent(new DragEvent('drop',             { dataTransfer: dt, bubbles: true, cancelable: true }));         return true; })()";
    assert_eq!(browser.eval(drop), "true");
    setup
        .terminal
        .expect("notes 笔记.bin (300000 bytes) saved to", T);
    browser.wait(
        r#"#log li.out.file[data-state="delivered"]"#,
        "notes 笔记.bin",
    );
    let expected: Vec<u8> = (0..300_000u32).map(|i| ((i * 7 + 3) % 251) as u8).collect();
    let arrived = setup.terminal_home.path().join("in/notes 笔记.bin");
    assert!(
        std::fs::read(&arrived).expect("saved by the terminal") == expected,
        "the dropped file arrived changed"
    );

    // After a reload the picture is still shown, from the history.
    assert_eq!(
        browser.goto(&format!("http://127.0.0.1:{}/", setup.port)),
        r#"{"status": 200}"#
    );
    browser.wait("#log li.in.file", "sunset.png");
    assert_eq!(
        browser.eval("document.querySelectorAll('#log li.in.file img').length"),
        "1"
    );
    assert_eq!(browser.ask(cmd(&[("op", "errors")])), "[]");
}

#[test]
fn a_message_typed_while_the_peer_is_away_shows_sending_until_it_is_delivered() {
    let mut setup = Setup::start();
    let mut browser = Browser::start();
    browser.goto(&setup.url);
    browser.wait("#status", "connected");
    setup.terminal.kill();

    browser.type_enter("#composer", "typed while you were away");
    browser.wait(
        r#"#log li.out[data-state="sending"]"#,
        "typed while you were away",
    );
    // Still sending a moment later: nobody acknowledged it.
    std::thread::sleep(Duration::from_secs(1));
    let state = "document.querySelector('#log li.out').dataset.state";
    assert_eq!(browser.eval(state), r#""sending""#);

    let mut terminal = setup.terminal();
    terminal.expect("typed while you were away", Duration::from_secs(30));
    browser.wait(
        r#"#log li.out[data-state="delivered"]"#,
        "typed while you were away",
    );
    // Opened again, the page has it from the history, delivered.
    browser.goto(&setup.url);
    browser.wait(
        r#"#log li.out[data-state="delivered"]"#,
        "typed while you were away",
    );
}

#[test]
fn without_the_token_or_from_a_foreign_host_or_origin_nothing_is_served() {
    let mut setup = Setup::start();
    let (terminal, url, port) = (&mut setup.terminal, setup.url.clone(), setup.port);
    terminal.type_line("a secret in the history");
    terminal.expect("delivered: a secret in the history", T);
    let token = token_of(&url).to_owned();
    let cookie = format!("Cookie: duet_{port}={token}");

    // No token: refused, and nothing of the chat in the answer.
    for target in [
        "/",
        "/app.js",
        "/ws",
        "/?token=wrong",
        "/upload",
        "/files/0123",
    ] {
        let (status, answer) = http(port, target, &[]);
        assert_eq!(status, 401, "{target}: {answer}");
        assert!(!answer.contains("secret"), "{answer}");
    }
    let (status, _) = http(port, "/ws", &WS_HEADERS);
    assert_eq!(status, 401, "a WebSocket without the token");

    // The token: the page, with a strict policy; once in the address, then as a cookie.
    let (status, answer) = http(port, &format!("/?token={token}"), &[]);
    assert_eq!(status, 303, "{answer}");
    assert!(answer.contains("HttpOnly; SameSite=Strict"), "{answer}");
    let (status, answer) = http(port, "/", &[&cookie]);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("script-src 'self'"), "{answer}");
    assert!(!answer.contains("<script>"), "no inline script");

    // A foreign Host (DNS rebinding), even with the token: refused.
    for host in [
        "Host: evil.example:".to_owned() + &port.to_string(),
        "Host: 127.0.0.1:1".into(),
    ] {
        let (status, answer) = http(port, &format!("/?token={token}"), &[&host]);
        assert_eq!(status, 403, "{host}: {answer}");
        let (status, _) = http(port, "/", &[&host, &cookie]);
        assert_eq!(status, 403, "{host}");
    }
    // A WebSocket from another site's page: refused; from the page's own origin: accepted.
    let foreign = "Origin: http://evil.example";
    let mut headers = WS_HEADERS.to_vec();
    headers.extend([cookie.as_str(), foreign]);
    let (status, _) = http(port, "/ws", &headers);
    assert_eq!(status, 403, "a foreign origin");
    let own = format!("Origin: http://127.0.0.1:{port}");
    let mut headers = WS_HEADERS.to_vec();
    headers.extend([cookie.as_str(), own.as_str()]);
    let (status, answer) = http(port, "/ws", &headers);
    assert_eq!(status, 101, "{answer}");
}

#[test]
fn a_message_typed_in_the_page_is_kept_when_duet_web_is_killed_and_sent_by_the_next() {
    let mut setup = Setup::start();
    setup.terminal.kill();
    let mut browser = Browser::start();
    browser.goto(&setup.url);
    browser.type_enter("#composer", "kept through a kill");
    browser.wait(
        r#"#log li.out[data-state="sending"]"#,
        "kept through a kill",
    );
    // Stored by the turn right after the page's text is taken; a margin, then the kill.
    std::thread::sleep(Duration::from_millis(500));
    setup.web.kill();

    setup.start_web();
    let mut terminal = setup.terminal();
    terminal.expect("kept through a kill", Duration::from_secs(30));
    browser.goto(&setup.url);
    browser.wait(
        r#"#log li.out[data-state="delivered"]"#,
        "kept through a kill",
    );
}

#[test]
fn a_page_without_a_named_peer_talks_to_whoever_writes_first() {
    let mut setup = Setup::start_with(None);
    let mut browser = Browser::start();
    browser.goto(&setup.url);
    browser.wait("#peer", "whoever writes first");
    setup.terminal = setup.terminal();
    setup.terminal.type_line("it is me, b");
    browser.wait("#log li.in", "it is me, b");
    browser.wait("#peer", "b");
    assert_eq!(
        browser.eval("document.getElementById('peer').textContent"),
        r#""b""#
    );
    browser.type_enter("#composer", "hello b");
    setup.terminal.expect("hello b", T);
    browser.wait(r#"#log li.out[data-state="delivered"]"#, "hello b");
}

#[test]
fn ctrl_c_says_goodbye_to_the_peer_and_leaves() {
    let mut setup = Setup::start();
    setup.terminal.type_line("are you there?");
    setup.terminal.expect("delivered: are you there?", T);
    let pid = rustix::process::Pid::from_raw(setup.web.id() as i32).expect("a process id");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("send SIGINT");
    assert!(setup.web.wait(T).success(), "{:?}", setup.web.seen);
    // Told, not left to find out after the keepalives time out.
    setup
        .terminal
        .expect("peer is down", Duration::from_secs(3));
}

/// A `duet web` with nobody paired yet, and its page open.
fn unpaired_web(home: &Home) -> (Proc, Browser, u16) {
    let (udp, port) = (free_port(), free_tcp_port());
    let mut web = home.duet(&[
        "web",
        "--bind",
        &local(udp),
        "--http",
        &local(port),
        "--no-open",
    ]);
    let url = web.expect("?token=", T).trim().to_owned();
    let mut browser = Browser::start();
    browser.goto(&url);
    browser.wait("#peer", "whoever writes first");
    (web, browser, udp)
}

/// Fill the page's pairing fields (a JSON string each) and press `button`.
fn pair_in_page(browser: &mut Browser, name: &str, code: &str, addr: &str, button: &str) {
    let js = format!(
        "document.getElementById('pair-name').value = {name:?}; \
         document.getElementById('pair-code').value = {code:?}; \
         document.getElementById('pair-addr').value = {addr:?}; \
         document.getElementById('{button}').click()"
    );
    browser.eval(&js);
}

/// Both sides list each other.
fn assert_listed(web_home: &Home, web_calls: &str, terminal_home: &Home, terminal_calls: &str) {
    let (code, list) = web_home.run(&["pair", "list"]);
    assert!(code == 0 && list.contains(web_calls), "{list}");
    let (code, list) = terminal_home.run(&["pair", "list"]);
    assert!(code == 0 && list.contains(terminal_calls), "{list}");
}

#[test]
fn a_page_invites_a_terminal_joins_and_they_chat_at_once() {
    let (web_home, terminal_home) = (Home::new("web-inviter"), Home::new("term-joiner"));
    let (_web, mut browser, web_udp) = unpaired_web(&web_home);
    pair_in_page(&mut browser, "t", "", "", "invite");
    browser.wait("#pair-log", "code: ");
    let shown = browser.eval("document.getElementById('pair-log').textContent");
    let code = shown
        .split("code: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("a code in the page")
        .to_owned();
    let port = shown
        .split("waiting on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|a| a.rsplit(':').next())
        .expect("the pairing port in the page")
        .to_owned();
    let (status, out) = terminal_home.run(&[
        "pair",
        "join",
        "w",
        &code,
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--timeout",
        "20",
    ]);
    assert_eq!(status, 0, "{out}");
    browser.wait("#pair-log", "paired with t");
    assert_listed(&web_home, "t", &terminal_home, "w");
    // No restart: the running duet web takes the new peer.
    let to = format!("w@127.0.0.1:{web_udp}");
    let (status, out) = terminal_home.run(&["send", "--to", &to, "hello from t"]);
    assert_eq!(status, 0, "{out}");
    browser.wait("#log li.in", "hello from t");
    browser.wait("#peer", "t");
}

#[test]
fn a_terminal_invites_a_page_joins_and_a_wrong_code_shows_an_error() {
    let (web_home, terminal_home) = (Home::new("web-joiner"), Home::new("term-inviter"));
    let (_web, mut browser, _) = unpaired_web(&web_home);
    let pairing = local(free_port());
    let mut invite =
        terminal_home.duet(&["pair", "invite", "w", "--bind", &pairing, "--timeout", "20"]);
    let line = invite.expect("code: ", T);
    let code = line
        .split("code: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("a code")
        .to_owned();
    let wrong = if code.starts_with('0') {
        "1111-1111"
    } else {
        "0000-0000"
    };
    pair_in_page(&mut browser, "t", wrong, &pairing, "join");
    browser.wait("#pair-log .error", "pairing failed");
    invite.wait(T);
    let mut invite =
        terminal_home.duet(&["pair", "invite", "w", "--bind", &pairing, "--timeout", "20"]);
    let line = invite.expect("code: ", T);
    let code = line
        .split("code: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("a code")
        .to_owned();
    pair_in_page(&mut browser, "t", &code, &pairing, "join");
    browser.wait("#pair-log", "paired with t");
    assert!(invite.wait(T).success(), "{:?}", invite.seen);
    assert_listed(&web_home, "t", &terminal_home, "w");
}
