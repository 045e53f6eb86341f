//! The chat page's server: axum on a tokio runtime of its own thread. It serves the page
//! and its script and style (built into the binary) and one WebSocket per open page, which
//! carries typed text to the chat loop and the loop's events back ([`super::bridge`]).
//!
//! Every request passes [`guard`] first (the token, `Host`, `Origin`: [`super::guard`]),
//! and every answer carries a strict Content-Security-Policy: scripts only from this
//! server's own files, none inline, nothing from elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path as UrlPath;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_lite::StreamExt as _;
use tokio::sync::broadcast::error::RecvError;

use super::bridge::{Bridge, Command, Shelf, picture_type};
use super::guard::{Access, Key};
use crate::app::files::safe_name;

/// The page, its script and its style.
const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The longest WebSocket message a page may send: a long text becomes several messages,
/// but nobody types more than this at once.
const MAX_FROM_PAGE: usize = 64 * 1024;

/// Scripts and styles only from this server's files (no inline script, no eval), the
/// WebSocket back to it, nothing from elsewhere, and no framing by another page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The largest file a page may drop (its upload is kept on disk until `duet web` leaves).
const MAX_UPLOAD: u64 = 4 << 30;
/// How much of a file one piece of an answer carries.
const SERVE_PIECE: usize = 256 * 1024;

/// What every request handler shares.
#[derive(Clone)]
struct Shared {
    access: Arc<Access>,
    bridge: Bridge,
    next_client: Arc<AtomicU64>,
    /// The files pages may fetch.
    shelf: Shelf,
    /// Where files dropped onto a page are kept until they are sent.
    uploads: Arc<std::path::PathBuf>,
}

/// Serve the chat page on `listener` from a thread of its own; returns once it runs.
pub fn start(
    listener: std::net::TcpListener,
    access: Access,
    bridge: Bridge,
    shelf: Shelf,
    uploads: std::path::PathBuf,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let to_loop = bridge.clone();
    let shared = Shared {
        access: Arc::new(access),
        bridge,
        next_client: Arc::new(AtomicU64::new(1)),
        shelf,
        uploads: Arc::new(uploads),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/ws", get(socket))
        .route("/upload", post(upload))
        .route("/files/{id}", get(shelved))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared);
    std::thread::Builder::new()
        .name("duet-web".into())
        .spawn(move || {
            runtime.block_on(async move {
                // Ctrl-c is caught from now on: the chat loop leaves on it, as it does when
                // the server stops (a duet without its page would run on unseen).
                let leave = to_loop.clone();
                tokio::spawn(async move {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        leave.tell(Command::Leave);
                    }
                });
                let why = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => match axum::serve(listener, app).await {
                        Ok(()) => "the web server stopped".to_owned(),
                        Err(e) => format!("the web server stopped: {e}"),
                    },
                    Err(e) => format!("the web server cannot start: {e}"),
                };
                to_loop.tell(Command::Stopped(why));
            })
        })?;
    Ok(())
}

/// The page's address, with the token, for a server listening on `addr`. A server on
/// every address (0.0.0.0, ::) is opened on this computer's loopback.
pub fn url(addr: SocketAddr, access: &Access) -> String {
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    format!("http://{host}/?token={}", access.token())
}

/// Refuse what does not come from the user's own page, then add the security headers to
/// whatever is answered.
async fn guard(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let host = text(header::HOST).unwrap_or("");
    let mut response = if !s.access.host_ok(host) {
        (StatusCode::FORBIDDEN, "unknown host\n").into_response()
    } else if text(header::ORIGIN).is_some_and(|o| !s.access.origin_ok(o, host)) {
        (StatusCode::FORBIDDEN, "foreign origin\n").into_response()
    } else {
        let is_socket = request.uri().path() == "/ws";
        match s.access.key(request.uri().query(), text(header::COOKIE)) {
            Key::InAddress if !is_socket => {
                // Set the cookie and take the token out of the address bar and history.
                let path = request.uri().path().to_owned();
                let mut r = (StatusCode::SEE_OTHER, "").into_response();
                let h = r.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&path) {
                    h.insert(header::LOCATION, v);
                }
                if let Ok(v) = HeaderValue::from_str(&s.access.set_cookie()) {
                    h.insert(header::SET_COOKIE, v);
                }
                r
            }
            Key::InAddress | Key::Cookie => next.run(request).await,
            Key::Missing => (
                StatusCode::UNAUTHORIZED,
                "open the address `duet web` printed (it holds the access token)\n",
            )
                .into_response(),
        }
    };
    secure_headers(response.headers_mut());
    response
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// A file dropped onto a page: its bytes in the body, its name (percent-encoded) in
/// `X-File-Name`. Written under a directory of its own in the uploads directory, then
/// handed to the chat loop to send. The guard has checked the token and the origin.
async fn upload(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let Some(name) = headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
        .map(|name| safe_name(&name))
    else {
        return (StatusCode::BAD_REQUEST, "no file name\n").into_response();
    };
    let Ok(tag) = getrandom::u64() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness\n").into_response();
    };
    let dir = s.uploads.join(format!("{tag:016x}"));
    let path = dir.join(&name);
    match receive_upload(&dir, &path, body).await {
        Ok(()) => {
            s.bridge.tell(Command::SendFile { path });
            StatusCode::NO_CONTENT.into_response()
        }
        Err((status, why)) => {
            let _ = std::fs::remove_dir_all(&dir);
            (status, format!("{why}\n")).into_response()
        }
    }
}

/// Write an upload's body to `path`. The writes are plain blocking ones on the server's
/// thread: a local file, one piece at a time, and one user dropping files.
async fn receive_upload(
    dir: &std::path::Path,
    path: &std::path::Path,
    body: Body,
) -> Result<(), (StatusCode, String)> {
    use std::io::Write as _;
    let failed = |e: std::io::Error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot keep the file in {}: {e}", dir.display()),
        )
    };
    crate::platform::files::create_dir_private(dir).map_err(failed)?;
    let mut file = crate::platform::files::private(&mut std::fs::OpenOptions::new())
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(failed)?;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(piece) = stream.next().await {
        let piece: Bytes = piece.map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        written += piece.len() as u64;
        if written > MAX_UPLOAD {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a file dropped onto the page may have {MAX_UPLOAD} bytes at most"),
            ));
        }
        file.write_all(&piece).map_err(failed)?;
    }
    file.sync_all().map_err(failed)
}

/// A shelved file: a picture inline, anything else as a download. Read a piece at a time
/// (blocking reads of a local file on the server's thread, as above).
async fn shelved(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(found) = s.shelf.get(&id) else {
        return not_found().await;
    };
    let Ok(file) = std::fs::File::open(&found.path) else {
        return not_found().await;
    };
    let kind = picture_type(&found.name);
    let disposition = match kind {
        Some(_) => "inline".to_owned(),
        None => format!(
            "attachment; filename*=UTF-8''{}",
            percent_encoding::utf8_percent_encode(&found.name, percent_encoding::NON_ALPHANUMERIC)
        ),
    };
    let pieces = futures_lite::stream::unfold(Some(file), |file| async move {
        use std::io::Read as _;
        let mut file = file?;
        let mut buf = vec![0u8; SERVE_PIECE];
        match file.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut response = Body::from_stream(pieces).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.unwrap_or("application/octet-stream")),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn socket(State(s): State<Shared>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(MAX_FROM_PAGE)
        .on_upgrade(move |ws| talk_to_page(ws, s))
}

/// What a page sends: text to send to the peer, or a pairing to start.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum FromPage {
    Send {
        send: String,
    },
    Pair {
        pair: String,
        code: Option<String>,
        addr: Option<String>,
    },
}

/// One open page: its typed text to the chat loop, the loop's events to it.
async fn talk_to_page(mut ws: WebSocket, s: Shared) {
    let me = s.next_client.fetch_add(1, Ordering::Relaxed);
    // Listening before asking for the history: nothing falls between the two.
    let mut events = s.bridge.subscribe();
    s.bridge.tell(Command::Hello { client: me });
    loop {
        tokio::select! {
            got = ws.recv() => match got {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<FromPage>(&text) {
                    Ok(FromPage::Send { send }) => s.bridge.tell(Command::Send { text: send }),
                    Ok(FromPage::Pair { pair, code, addr }) => {
                        s.bridge.tell(Command::Pair { name: pair, code, addr });
                    }
                    Err(_) => break,
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                // Pings are answered by tungstenite; nothing else is expected.
                Some(Ok(_)) => {}
            },
            event = events.recv() => match event {
                Ok(event) => {
                    if event.to.is_none_or(|to| to == me)
                        && ws.send(Message::Text(event.json.clone().into())).await.is_err()
                    {
                        break;
                    }
                }
                // Too far behind, or duet is leaving: the page reconnects and loads the
                // history again.
                Err(RecvError::Lagged(_) | RecvError::Closed) => break,
            },
        }
    }
}
