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

function arrived(m) {
  add(m);
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
      m.history.forEach(add);
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
