// The playground: a chat box over the gateway's OpenAI-compatible API (same origin), streaming with
// server-sent events. The conversation continues on the session's stored KV (session_id), so each turn
// sends only its new message; the session id and transcript are kept in localStorage, so a reload resumes.
'use strict';
const $ = id => document.getElementById(id);
const saved = JSON.parse(localStorage.getItem('llmcluster.playground') || '{}');
const state = { model: null, session: saved.session || null, log: saved.log || [], mode: saved.mode || 'chat', policy: saved.policy || '' };

function save() {
  localStorage.setItem('llmcluster.playground', JSON.stringify({ session: state.session, log: state.log, mode: state.mode, policy: state.policy }));
}

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  const label = document.createElement('span');
  label.className = 'role';
  label.textContent = role;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  div.append(label, body);
  $('log').append(div);
  $('log').scrollTop = $('log').scrollHeight;
  return body;
}

function render() {
  $('log').textContent = '';
  for (const m of state.log) addMessage(m.role, m.content);
  $('session').textContent = state.session || 'none';
  $('mode').value = state.mode;
  $('policy').value = state.policy;
  // A session keeps the policy and mode it started with.
  $('policy').disabled = $('mode').disabled = !!state.session;
}

function showKv(kv) {
  if (!kv) return;
  const kib = (kv.bytes / 1024).toFixed(1);
  $('kv').textContent = `${kv.tokens} tokens, ${kib} KiB (${kv.policy}` + (kv.tokens < kv.tokens_seen ? `, ${kv.tokens_seen} seen)` : ')');
}

async function loadModel() {
  const r = await fetch('/v1/models');
  const body = await r.json();
  const m = body.data[0];
  state.model = m.id;
  $('model').textContent = `${m.id} · context ${m.max_model_len} · default KV policy ${m.default_kv_policy}`;
  // Without a chat template the chat endpoint refuses: start in text completion (a choice made before stays).
  if (!m.chat_template && !saved.mode) { state.mode = 'text'; render(); }
  const examples = { dense: 'dense', window: 'window(128)', sink_window: 'sink_window(4,124)', knorm: 'knorm(128,32)', qfilters: 'qfilters(128,32)' };
  for (const name of m.kv_policies) {
    const o = document.createElement('option');
    o.value = examples[name] || name;
    $('policies').append(o);
  }
}

// Reads "data: ..." events from a streamed response; calls onEvent with each parsed JSON object.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  $('error').textContent = '';
  state.mode = $('mode').value;
  state.policy = $('policy').value.trim();
  const chat = state.mode === 'chat';
  const body = {
    model: state.model,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number($('maxTokens').value) || 128,
    temperature: Number($('temperature').value),
  };
  if (chat) body.messages = [{ role: 'user', content: text }];
  else body.prompt = text;
  if (state.session) body.session_id = state.session;
  else if (state.policy) body.kv_policy = state.policy;

  addMessage('user', text);
  const out = addMessage('assistant', '');
  let reply = '', first = null, usage = null;
  const start = performance.now();
  $('send').disabled = true;
  try {
    const r = await fetch(chat ? '/v1/chat/completions' : '/v1/completions', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    if (!r.ok) throw new Error((await r.json()).error.message);
    await readEvents(r, e => {
      if (e.error) throw new Error(e.error.message);
      if (e.session_id && !state.session) { state.session = e.session_id; }
      if (e.usage) usage = e.usage;
      for (const c of e.choices || []) {
        const piece = chat ? (c.delta && c.delta.content) || '' : c.text || '';
        if (piece) {
          if (first === null) { first = performance.now(); $('ttft').textContent = `${(first - start).toFixed(0)} ms`; }
          reply += piece;
          out.textContent = reply;
          $('log').scrollTop = $('log').scrollHeight;
        }
        if (c.finish_reason && e.kv) showKv(e.kv);
      }
    });
    const seconds = (performance.now() - (first || start)) / 1000;
    if (usage && usage.completion_tokens > 1 && seconds > 0) $('tps').textContent = ((usage.completion_tokens - 1) / seconds).toFixed(1);
    state.log.push({ role: 'user', content: text }, { role: 'assistant', content: reply });
  } catch (err) {
    $('error').textContent = err.message;
    out.parentElement.remove();
    $('log').lastChild && $('log').lastChild.remove(); // the refused turn never happened
  } finally {
    $('send').disabled = false;
    save();
    render();
  }
}

$('form').addEventListener('submit', e => {
  e.preventDefault();
  const text = $('input').value;
  if (!text.trim() || !state.model) return;
  $('input').value = '';
  send(text);
});
$('input').addEventListener('keydown', e => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('form').requestSubmit(); }
});
$('reset').addEventListener('click', () => {
  state.session = null;
  state.log = [];
  ['ttft', 'tps', 'kv'].forEach(id => { $(id).textContent = '–'; });
  save();
  render();
});

render();
loadModel().catch(err => { $('error').textContent = 'cannot reach the API: ' + err.message; });
