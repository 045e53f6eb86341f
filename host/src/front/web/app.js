// duet's chat page. Every text from the chat is inserted with textContent, never as HTML;
// the Content-Security-Policy allows this file only (no inline script).
'use strict';

const log = document.getElementById('log');
const main = document.querySelector('main');
const composer = document.getElementById('composer');
const sendButton = document.getElementById('send');
const statusLine = document.getElementById('status');
const heading = document.getElementById('peer');

const pairing = document.getElementById('pairing');
const pairName = document.getElementById('pair-name');
const pairCode = document.getElementById('pair-code');
const pairAddr = document.getElementById('pair-addr');
const pairLog = document.getElementById('pair-log');
const pairButtons = [document.getElementById('invite'), document.getElementById('join')];

let socket = null;
let retry = 500;
let peer = 'peer';
let unread = 0;

function title() {
  const base = 'duet — ' + peer;
  document.title = unread > 0 ? '(' + unread + ') ' + base : base;
}

function setStatus(text) {
  statusLine.textContent = text;
}

function timeOf(ms) {
  const d = ms ? new Date(ms) : new Date();
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function atBottom() {
  return main.scrollHeight - main.scrollTop - main.clientHeight < 40;
}

function add(m) {
  const stick = atBottom();
  const li = document.createElement('li');
  li.className = m.dir === 'out' ? 'out' : 'in';
  if (m.dir === 'out') {
    li.dataset.state = m.state || 'sending';
    if (m.tag) li.dataset.tag = m.tag;
    if (m.uid) li.dataset.uid = m.uid;
    if (m.why) li.title = m.why;
  }
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = m.text;
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.textContent = timeOf(m.at);
  li.append(text, meta);
  log.append(li);
  if (stick || m.dir === 'out') main.scrollTop = main.scrollHeight;
  return li;
}

function sizeText(n) {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

// A file, received or dropped here: a picture inline, anything else a link to it. The
// name is text; the address is one this server gave (/files/ID).
function addFile(m) {
  const li = add({ dir: m.dir, state: m.state, at: m.at, text: '', why: m.why });
  li.classList.add('file');
  if (m.transfer) li.dataset.transfer = m.transfer;
  const f = m.file || {};
  const body = li.querySelector('.text');
  if (f.url && f.picture) {
    const img = document.createElement('img');
    img.src = f.url;
    img.alt = f.name;
    img.addEventListener('load', () => { if (atBottom()) main.scrollTop = main.scrollHeight; });
    body.append(img);
  }
  const label = document.createElement(f.url ? 'a' : 'span');
  label.textContent = f.name + ' (' + sizeText(f.size) + ')';
  if (f.url) {
    label.href = f.url;
    label.download = f.name;
  }
  body.append(label);
  return li;
}

function fileState(m) {
  const li = log.querySelector('li[data-transfer="' + CSS.escape(m.transfer) + '"]');
  if (!li) return;
  li.dataset.state = m.state;
  li.title = m.why || (m.size ? Math.floor((100 * m.done) / m.size) + '%' : '');
}

function upload(file) {
  fetch('/upload', {
    method: 'POST',
    headers: { 'X-File-Name': encodeURIComponent(file.name) },
    body: file,
  }).then((r) => {
    if (!r.ok) return r.text().then((t) => problem('cannot send ' + file.name + ': ' + t));
    return null;
  }).catch((e) => problem('cannot send ' + file.name + ': ' + e));
}

// Files dropped anywhere on the page are sent.
document.addEventListener('dragover', (e) => {
  if (e.dataTransfer && [...e.dataTransfer.types].includes('Files')) e.preventDefault();
});
document.addEventListener('drop', (e) => {
  if (!e.dataTransfer || e.dataTransfer.files.length === 0) return;
  e.preventDefault();
  [...e.dataTransfer.files].forEach(upload);
});

function update(m) {
  let li = null;
  if (m.tag) li = log.querySelector('li[data-tag="' + CSS.escape(m.tag) + '"]');
  if (!li && m.uid) li = log.querySelector('li[data-uid="' + CSS.escape(m.uid) + '"]');
  if (!li) return;
  li.dataset.state = m.state;
  if (m.uid) li.dataset.uid = m.uid;
  li.title = m.why || '';
}

function problem(text) {
  const li = document.createElement('li');
  li.className = 'problem';
  li.textContent = text;
  log.append(li);
}

function pairLine(text, cls) {
  const li = document.createElement('li');
  if (cls) li.className = cls;
  li.textContent = text;
  pairLog.append(li);
}

function paired(m) {
  if (m.text !== undefined) pairLine(m.text);
  if (m.done) pairButtons.forEach((b) => { b.disabled = false; });
  if (m.error !== undefined) pairLine('pairing failed: ' + m.error, 'error');
  if (m.paired !== undefined) pairLine('paired with ' + m.paired, 'done');
}

function startPairing(code) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  pairLog.replaceChildren();
  pairButtons.forEach((b) => { b.disabled = true; });
  const m = { pair: pairName.value };
  if (code !== null) {
    m.code = code;
    m.addr = pairAddr.value;
  }
  socket.send(JSON.stringify(m));
}

document.getElementById('invite').addEventListener('click', () => startPairing(null));
document.getElementById('join').addEventListener('click', () => startPairing(pairCode.value));

function arrived(m, shownAlready) {
  if (!shownAlready) add(m);
  if (document.hidden || !document.hasFocus()) {
    unread += 1;
    title();
    if (document.hidden && 'Notification' in window && Notification.permission === 'granted') {
      new Notification(peer, { body: m.text, tag: 'duet' });
    }
  }
}

function handle(m) {
  switch (m.kind) {
    case 'hello':
      log.replaceChildren();
      peer = m.peer || 'whoever writes first';
      heading.textContent = peer;
      m.history.forEach((h) => (h.kind === 'file' ? addFile(h) : add(h)));
      main.scrollTop = main.scrollHeight;
      setStatus(m.up ? 'connected' : 'waiting for ' + peer);
      if (!m.peer && !m.up) pairing.open = true;
      title();
      break;
    case 'msg':
      if (m.dir === 'in') arrived(m); else add(m);
      break;
    case 'state':
      update(m);
      break;
    case 'file':
      if (m.dir === 'in') {
        addFile(m);
        arrived({ text: m.file ? m.file.name : '' }, true);
      } else {
        addFile(m);
      }
      break;
    case 'filestate':
      fileState(m);
      break;
    case 'peer':
      peer = m.name;
      heading.textContent = peer;
      title();
      break;
    case 'status':
      setStatus(m.text);
      break;
    case 'pairing':
      paired(m);
      break;
    case 'problem':
      problem(m.text);
      break;
  }
}

function connect() {
  socket = new WebSocket('ws://' + location.host + '/ws');
  socket.onopen = () => { retry = 500; };
  socket.onmessage = (e) => handle(JSON.parse(e.data));
  socket.onclose = () => {
    setStatus('not connected to duet (is it still running?); trying again…');
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

function send() {
  const text = composer.value;
  if (text.trim() === '' || !socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ send: text }));
  composer.value = '';
}

composer.addEventListener('keydown', (e) => {
  if ('Notification' in window && Notification.permission === 'default') {
    // Asked once the user does something on the page, as browsers require.
    Notification.requestPermission();
  }
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
sendButton.addEventListener('click', () => { send(); composer.focus(); });

function seen() {
  if (!document.hidden && document.hasFocus()) {
    unread = 0;
    title();
  }
}
document.addEventListener('visibilitychange', seen);
window.addEventListener('focus', seen);

connect();
