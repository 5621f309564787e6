/*
 * missedcalld widget page. Plain modern JavaScript, no build step.
 *
 * One event stream for all tabs of this site: the tabs elect a leader with
 * the Web Locks API; the leader holds the EventSource and relays every
 * event to the other tabs over a BroadcastChannel (browsers allow only six
 * HTTP/1.1 connections per site). When the leader tab closes, its lock is
 * released, another tab takes it and reopens the stream from the last
 * event id every tab has seen, so nothing is missed. Without Web Locks
 * each tab keeps its own stream.
 *
 * The server's event ids are "<seq>-<outbox>"; EventSource resends the last
 * one (Last-Event-ID) when it reconnects by itself; when we reopen the
 * stream ourselves we pass it as ?last_event_id=. A stream.gap event means
 * events were lost: the list is reloaded from /v1/appeals.
 *
 * Every value from the server goes into the page through textContent.
 */
(() => {
  'use strict';

  const TOKEN_KEY = 'missedcalld.token';
  const LANG_KEY = 'missedcalld.lang';
  const LOCK_NAME = 'missedcalld-stream';
  const CHANNEL_NAME = 'missedcalld-events';
  const POPUP_LINGER_MS = { answered: 6000, ended: 4000, missed: 15000 };

  const I18N = {
    en: {
      title: 'Incoming calls', language: 'Language', connecting: 'Connecting…',
      live: 'Live', offline: 'Offline — reconnecting', unauthorized: 'Invalid token',
      token_prompt: 'Paste your widget token', connect: 'Connect',
      ringing_now: 'Ringing now', no_calls: 'No calls right now.',
      today: "Today's missed calls and appeals", no_appeals: 'Nothing missed today.',
      urgent: 'urgent', ringing: 'Ringing', answered: 'Answered', answered_by: 'Answered by {who}',
      missed: 'Missed', ended: 'Ended', withheld: 'Number withheld', unknown_caller: 'Unknown caller',
      several: '{n} clients with this number', looking_up: 'Looking up the client…',
      did: 'Line {did}', queue: 'queue {queue}', exts: 'ext. {exts}',
      due_in: 'due in {t}', overdue_by: 'overdue by {t}', no_deadline: 'no deadline',
      calls: '{n} calls', manager: 'Manager: {who}', missed_call: 'Missed call',
      list_failed: 'The list could not be loaded; retrying.', reloaded: 'Events were missed; list reloaded.',
      reason: {
        caller_cancel: 'caller hung up', no_answer: 'no answer', busy: 'busy', unavailable: 'unavailable',
        queue_abandon: 'abandoned in queue', queue_timeout: 'queue timeout', voicemail: 'voicemail',
        ivr_abandon: 'hung up in IVR', declined: 'declined', unknown: 'unknown', none: '',
      },
      units: { d: 'd', h: 'h', m: 'min', s: 's' },
    },
    ru: {
      title: 'Входящие звонки', language: 'Язык', connecting: 'Подключение…',
      live: 'На связи', offline: 'Нет связи — переподключение', unauthorized: 'Неверный токен',
      token_prompt: 'Вставьте токен виджета', connect: 'Подключить',
      ringing_now: 'Звонят сейчас', no_calls: 'Сейчас звонков нет.',
      today: 'Пропущенные звонки и обращения за сегодня', no_appeals: 'Сегодня пропущенных нет.',
      urgent: 'срочно', ringing: 'Звонок', answered: 'Отвечен', answered_by: 'Ответил {who}',
      missed: 'Пропущен', ended: 'Завершён', withheld: 'Номер скрыт', unknown_caller: 'Неизвестный абонент',
      several: 'Клиентов с этим номером: {n}', looking_up: 'Ищем клиента…',
      did: 'Линия {did}', queue: 'очередь {queue}', exts: 'доб. {exts}',
      due_in: 'срок через {t}', overdue_by: 'просрочено на {t}', no_deadline: 'без срока',
      calls: 'звонков: {n}', manager: 'Менеджер: {who}', missed_call: 'Пропущенный звонок',
      list_failed: 'Список не загрузился; повторяем.', reloaded: 'События были пропущены; список обновлён.',
      reason: {
        caller_cancel: 'абонент положил трубку', no_answer: 'нет ответа', busy: 'занято',
        unavailable: 'недоступен', queue_abandon: 'ушёл из очереди', queue_timeout: 'таймаут очереди',
        voicemail: 'голосовая почта', ivr_abandon: 'положил трубку в IVR', declined: 'отклонён',
        unknown: 'неизвестно', none: '',
      },
      units: { d: 'д', h: 'ч', m: 'мин', s: 'с' },
    },
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    lang: 'en',
    token: null,
    lastEventId: null,
    leader: false,
    es: null,
    retryMs: 2000,
    calls: new Map(),   // "pbx|call_key" -> {el, data, status}
    appeals: new Map(), // "a:<id>" or "c:pbx|call_key" -> {el, item}
    conn: 'connecting',
    channel: null,
  };

  /* ---- language -------------------------------------------------------- */

  function t(key, vars) {
    const dict = I18N[state.lang] || I18N.en;
    let s = key.split('.').reduce((o, k) => (o ? o[k] : undefined), dict);
    if (s === undefined) s = key.split('.').reduce((o, k) => (o ? o[k] : undefined), I18N.en) ?? key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, String(v));
    return s;
  }

  function pickLang() {
    const saved = localStorage.getItem(LANG_KEY);
    if (saved && I18N[saved]) return saved;
    return (navigator.language || 'en').toLowerCase().startsWith('ru') ? 'ru' : 'en';
  }

  function applyLang() {
    document.documentElement.lang = state.lang;
    $('lang').value = state.lang;
    for (const el of document.querySelectorAll('[data-i18n]')) {
      if (!el.closest('template')) el.textContent = t(el.dataset.i18n);
    }
    setConn(state.conn);
    for (const c of state.calls.values()) renderCall(c);
    for (const a of state.appeals.values()) renderAppeal(a);
  }

  /* ---- connection indicator -------------------------------------------- */

  function setConn(s) {
    state.conn = s;
    const el = $('conn');
    el.className = `conn conn-${s === 'live' ? 'live' : s === 'connecting' ? 'connecting' : 'down'}`;
    $('conn-text').textContent = t(s === 'live' ? 'live' : s === 'connecting' ? 'connecting'
      : s === 'unauthorized' ? 'unauthorized' : 'offline');
    el.dataset.state = s;
  }

  /* ---- time ---------------------------------------------------------------- */

  function span(ms) {
    const u = t('units');
    let s = Math.max(0, Math.round(ms / 1000));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d} ${u.d} ${h} ${u.h}`;
    if (h) return `${h} ${u.h} ${m} ${u.m}`;
    if (m) return `${m} ${u.m}`;
    return `${s} ${u.s}`;
  }

  function clock(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return d.toLocaleTimeString(state.lang, { hour: '2-digit', minute: '2-digit' });
  }

  /* ---- ringing popups ------------------------------------------------------ */

  function callKey(d) { return `${d.pbx}|${d.call_key}`; }

  function phoneText(caller) {
    if (!caller || caller.withheld) return t('withheld');
    return caller.e164 || caller.presented || '';
  }

  function renderCall(c) {
    const el = c.el;
    const d = c.data;
    el.className = `popup ${c.status}`;
    el.dataset.callKey = d.call_key;
    let stateText = t(c.status === 'ringing' ? 'ringing' : c.status);
    if (c.status === 'answered' && c.answeredBy) stateText = t('answered_by', { who: c.answeredBy });
    if (c.status === 'missed' && c.reason) stateText += ` — ${t(`reason.${c.reason}`)}`;
    el.querySelector('.state').textContent = stateText;
    el.querySelector('.phone').textContent = phoneText(d.caller);
    const client = el.querySelector('.client');
    const list = el.querySelector('.open-appeals');
    list.replaceChildren();
    client.classList.remove('unknown');
    const card = d.card;
    if (!card && d.card_pending) {
      client.textContent = t('looking_up');
      client.classList.add('unknown');
    } else if (card && card.match === 'one') {
      const cl = card.clients[0];
      client.textContent = cl.name;
      for (const a of cl.open_appeals || []) {
        const li = document.createElement('li');
        const due = a.deadline ? ` · ${clock(a.deadline)}` : '';
        li.textContent = `${a.number} · ${a.status}${due}`;
        if (a.overdue) li.classList.add('overdue');
        list.append(li);
      }
    } else if (card && card.match === 'several') {
      client.textContent = t('several', { n: card.clients.length });
      for (const cl of card.clients) {
        const li = document.createElement('li');
        li.textContent = cl.name;
        list.append(li);
      }
    } else {
      client.textContent = (d.caller && !d.caller.withheld && d.caller.name) || t('unknown_caller');
      client.classList.add('unknown');
    }
    const parts = [];
    if (d.did) parts.push(t('did', { did: d.did }));
    if (d.queue) parts.push(t('queue', { queue: d.queue }));
    el.querySelector('.did').textContent = parts.join(', ');
    el.querySelector('.exts').textContent = d.extensions && d.extensions.length
      ? t('exts', { exts: d.extensions.join(', ') }) : '';
  }

  function updateEmpty() {
    $('no-calls').hidden = state.calls.size > 0;
    $('no-appeals').hidden = state.appeals.size > 0;
    $('list-count').textContent = state.appeals.size ? String(state.appeals.size) : '';
  }

  function onRinging(d) {
    const key = callKey(d);
    let c = state.calls.get(key);
    if (!c) {
      const el = $('popup-tpl').content.firstElementChild.cloneNode(true);
      c = { el, data: d, status: 'ringing' };
      state.calls.set(key, c);
      $('popups').prepend(el);
    } else {
      // A later ringing (more extensions) keeps a card we already have.
      if (!d.card && c.data.card) { d.card = c.data.card; d.card_pending = false; }
      c.data = d;
    }
    renderCall(c);
    updateEmpty();
  }

  function onCard(d) {
    const c = state.calls.get(callKey(d));
    if (!c) return;
    c.data.card = d.card;
    c.data.card_pending = false;
    renderCall(c);
  }

  function finishCall(d, status, extra) {
    const key = callKey(d);
    const c = state.calls.get(key);
    if (!c) return;
    if (c.status === 'missed' && status === 'ended') return;
    c.status = status;
    Object.assign(c, extra || {});
    renderCall(c);
    clearTimeout(c.timer);
    c.timer = setTimeout(() => {
      c.el.remove();
      state.calls.delete(key);
      updateEmpty();
    }, POPUP_LINGER_MS[status] || 5000);
  }

  /* ---- today's list ---------------------------------------------------------- */

  function appealKey(a) { return `a:${a.id}`; }

  function renderAppeal(entry) {
    const { el, item } = entry;
    const now = Date.now();
    if (item.kind === 'call') {
      el.className = 'appeal call-only';
      el.querySelector('.number').textContent = t('missed_call');
      el.querySelector('.status').textContent = clock(item.ts);
      el.querySelector('.deadline').textContent = '';
      el.querySelector('.who').textContent = item.caller && item.caller.name ? item.caller.name : t('unknown_caller');
      el.querySelector('.phone').textContent = phoneText(item.caller);
      el.querySelector('.manager').textContent = '';
      el.querySelector('.calls').textContent = '';
      el.querySelector('.reason').textContent = t(`reason.${item.reason || 'unknown'}`);
      el.querySelector('.urgent').hidden = true;
      return;
    }
    const a = item;
    const deadline = a.deadline ? Date.parse(a.deadline) : NaN;
    const overdue = !a.closed && (a.overdue || (!Number.isNaN(deadline) && deadline < now));
    el.className = `appeal${overdue ? ' overdue' : ''}${a.closed ? ' closed' : ''}${entry.fresh ? ' fresh' : ''}`;
    el.dataset.number = a.number || '';
    el.querySelector('.number').textContent = a.number || '';
    el.querySelector('.urgent').hidden = !a.urgent;
    el.querySelector('.urgent').textContent = t('urgent');
    el.querySelector('.status').textContent = a.status || '';
    let dl = t('no_deadline');
    if (!Number.isNaN(deadline)) {
      dl = deadline >= now ? t('due_in', { t: span(deadline - now) }) : t('overdue_by', { t: span(now - deadline) });
    }
    el.querySelector('.deadline').textContent = a.closed ? '' : dl;
    el.querySelector('.who').textContent = (a.client && a.client.name) || a.client_name || a.title || t('unknown_caller');
    el.querySelector('.phone').textContent = a.phone_withheld ? t('withheld') : (a.phone || '');
    el.querySelector('.manager').textContent = a.manager ? t('manager', { who: a.manager.name || a.manager.login }) : '';
    el.querySelector('.calls').textContent = a.calls_count > 1 ? t('calls', { n: a.calls_count }) : '';
    el.querySelector('.reason').textContent = a.title || '';
  }

  function sortList() {
    const items = [...state.appeals.values()];
    items.sort((x, y) => (y.sortTs || 0) - (x.sortTs || 0));
    $('appeals').replaceChildren(...items.map((e) => e.el));
  }

  function upsertAppeal(a, fresh, call) {
    if (!a || a.id === undefined) return;
    // The missed-call row this appeal was made from gives way to it.
    if (call && call.pbx && call.call_key) {
      const ck = `c:${call.pbx}|${call.call_key}`;
      const row = state.appeals.get(ck);
      if (row) { row.el.remove(); state.appeals.delete(ck); }
    }
    const key = appealKey(a);
    let e = state.appeals.get(key);
    if (!e) {
      e = { el: $('appeal-tpl').content.firstElementChild.cloneNode(true) };
      state.appeals.set(key, e);
    }
    e.item = a;
    e.fresh = fresh;
    e.sortTs = Date.parse(a.last_call_at || a.created_at || '') || Date.now();
    renderAppeal(e);
    sortList();
    updateEmpty();
  }

  function addMissedCall(d) {
    const key = `c:${callKey(d)}`;
    if (state.appeals.has(key)) return;
    // An appeal for this call may already be listed (its event came first).
    for (const e of state.appeals.values()) {
      if (e.call && e.call.pbx === d.pbx && e.call.call_key === d.call_key) return;
    }
    const e = { el: $('appeal-tpl').content.firstElementChild.cloneNode(true),
      item: { kind: 'call', ...d }, sortTs: Date.parse(d.ts || '') || Date.now() };
    state.appeals.set(key, e);
    renderAppeal(e);
    sortList();
    updateEmpty();
  }

  function startOfToday() {
    const d = new Date();
    d.setHours(0, 0, 0, 0);
    return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  let listRetry = null;
  async function loadList() {
    clearTimeout(listRetry);
    try {
      const r = await fetch(`/v1/appeals?since=${encodeURIComponent(startOfToday())}&limit=500`, {
        headers: { Authorization: `Bearer ${state.token}` }, cache: 'no-store',
      });
      if (r.status === 401) { showLogin(true); return; }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const body = await r.json();
      for (const [k, e] of state.appeals) {
        if (k.startsWith('a:')) { e.el.remove(); state.appeals.delete(k); }
      }
      for (const a of body.appeals || []) upsertAppeal(a, false, null);
      $('list-error').hidden = true;
    } catch (err) {
      $('list-error').textContent = t('list_failed');
      $('list-error').hidden = false;
      listRetry = setTimeout(loadList, 5000);
    }
    updateEmpty();
  }

  /* ---- events (from our stream or relayed by the leader tab) ------------------ */

  function handle(name, data, id) {
    if (id) state.lastEventId = id;
    switch (name) {
      case 'stream.hello':
        if (data.employee) $('employee').textContent = data.employee.name || data.employee.login || '';
        break;
      case 'stream.gap':
        loadList();
        break;
      case 'call.ringing': onRinging(data); break;
      case 'call.card': onCard(data); break;
      case 'call.answered': finishCall(data, 'answered', { answeredBy: data.answered_by }); break;
      case 'call.ended': finishCall(data, 'ended'); break;
      case 'call.missed':
        finishCall(data, 'missed', { reason: data.reason });
        addMissedCall(data);
        break;
      case 'appeal.created':
      case 'appeal.updated':
      case 'appeal.overdue': {
        const entry = data.appeal || data;
        upsertAppeal(entry, true, data.call);
        const e = state.appeals.get(appealKey(entry));
        if (e && data.call) e.call = data.call;
        break;
      }
      default:
        break;
    }
  }

  const EVENT_NAMES = ['stream.hello', 'stream.gap', 'stream.cutoff', 'call.ringing', 'call.card',
    'call.answered', 'call.ended', 'call.missed', 'appeal.created', 'appeal.updated', 'appeal.overdue'];

  function relay(msg) {
    if (state.channel) state.channel.postMessage(msg);
  }

  /* The leader's stream. Resolves never: the lock is held while the tab lives. */
  function openStream() {
    if (state.es) state.es.close();
    const q = new URLSearchParams({ token: state.token });
    if (state.lastEventId) q.set('last_event_id', state.lastEventId);
    const es = new EventSource(`/v1/events?${q}`);
    state.es = es;
    setConn('connecting');
    relay({ type: 'status', conn: 'connecting' });
    es.onopen = () => {
      state.retryMs = 2000;
      setConn('live');
      relay({ type: 'status', conn: 'live' });
    };
    for (const name of EVENT_NAMES) {
      es.addEventListener(name, (ev) => {
        let data = {};
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        const id = ev.lastEventId || null;
        handle(name, data, id);
        relay({ type: 'event', name, data, id });
      });
    }
    es.onerror = () => {
      if (es.readyState === EventSource.CONNECTING) {
        setConn('connecting');
        relay({ type: 'status', conn: 'connecting' });
        return; // EventSource retries by itself, with Last-Event-ID
      }
      // Closed for good (an HTTP error such as 401 or 503): find out which,
      // then reopen ourselves with a growing delay.
      es.close();
      state.es = null;
      checkAuth().then((ok) => {
        if (!ok) return;
        setConn('offline');
        relay({ type: 'status', conn: 'offline' });
        setTimeout(openStream, state.retryMs);
        state.retryMs = Math.min(state.retryMs * 2, 30000);
      });
    };
  }

  async function checkAuth() {
    try {
      const r = await fetch('/v1/appeals?limit=1', { headers: { Authorization: `Bearer ${state.token}` } });
      if (r.status === 401) { showLogin(true); return false; }
    } catch (e) { /* the server is away: keep retrying */ }
    return true;
  }

  function becomeLeader() {
    state.leader = true;
    openStream();
    return new Promise(() => {});
  }

  function startSharing() {
    if (!('BroadcastChannel' in window) || !navigator.locks) {
      openStream();
      return;
    }
    state.channel = new BroadcastChannel(CHANNEL_NAME);
    state.channel.onmessage = (m) => {
      const msg = m.data || {};
      if (msg.type === 'event' && !state.leader) {
        handle(msg.name, msg.data, msg.id);
      } else if (msg.type === 'status' && !state.leader) {
        setConn(msg.conn);
      } else if (msg.type === 'hello' && state.leader) {
        relay({ type: 'status', conn: state.conn });
      } else if (msg.type === 'gap' && !state.leader) {
        loadList();
      }
    };
    relay({ type: 'hello' });
    navigator.locks.request(LOCK_NAME, becomeLeader);
  }

  /* ---- token ------------------------------------------------------------------ */

  function showLogin(bad) {
    if (state.es) { state.es.close(); state.es = null; }
    setConn('unauthorized');
    $('main').hidden = true;
    $('login').hidden = false;
    $('login-error').hidden = !bad;
    $('login-error').textContent = t('unauthorized');
  }

  function takeToken() {
    const url = new URL(window.location.href);
    const fromUrl = url.searchParams.get('token');
    if (fromUrl) {
      localStorage.setItem(TOKEN_KEY, fromUrl);
      // Keep the secret out of the address bar and the history.
      url.searchParams.delete('token');
      history.replaceState(null, '', url.pathname + (url.search || '') + url.hash);
      return fromUrl;
    }
    return localStorage.getItem(TOKEN_KEY);
  }

  function start() {
    $('main').hidden = false;
    $('login').hidden = true;
    loadList();
    startSharing();
  }

  function init() {
    state.lang = pickLang();
    $('lang').addEventListener('change', () => {
      state.lang = $('lang').value;
      localStorage.setItem(LANG_KEY, state.lang);
      applyLang();
    });
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = $('token-input').value.trim();
      if (!v) return;
      localStorage.setItem(TOKEN_KEY, v);
      state.token = v;
      start();
    });
    applyLang();
    updateEmpty();
    // Countdowns move on their own.
    setInterval(() => { for (const e of state.appeals.values()) renderAppeal(e); }, 1000);
    state.token = takeToken();
    if (!state.token) { showLogin(false); return; }
    start();
  }

  init();
})();
