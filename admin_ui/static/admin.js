// wsplugin admin dashboard. No framework, no build step, no innerHTML with data:
// every value from the server goes through textContent.
"use strict";

(function () {
  const body = document.body;
  const BASE = body.dataset.base;
  const CSRF = body.dataset.csrf;
  const OPERATOR = body.dataset.role === "operator";
  const PAGE = 50;
  const MAX_LOG_ROWS = 200;

  const state = {
    conn: { offset: 0, q: "", user: "", total: 0 },
    rooms: { offset: 0, q: "", total: 0 },
    room: null,          // the room whose detail is open
    selected: null,      // the selected connection id
    selectedUser: null,  // its user id (null: no user)
    tab: "connections",
    eventKind: "",       // the Events tab's filter ("": every kind)
    eventSeq: 0,
    auditSeq: 0,
  };

  const $ = (id) => document.getElementById(id);

  // ---------- helpers ----------
  function cell(row, value) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "" : String(value);
    row.appendChild(td);
    return td;
  }

  // A user id, and below it the user's public info as JSON text (untrusted: textContent).
  function userCell(row, c) {
    const td = cell(row, c.user);
    td.className = "user";
    if (c.info) {
      const info = document.createElement("span");
      info.className = "info";
      info.textContent = JSON.stringify(c.info);
      td.appendChild(info);
      td.title = info.textContent;
    }
    return td;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString();
  }

  function number(n) {
    if (n === null || n === undefined) return "–";
    return typeof n === "number" ? n.toLocaleString() : String(n);
  }

  function flash(text, bad) {
    const el = $("flash");
    el.textContent = text;
    el.className = bad ? "flash bad" : "flash";
    el.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  function parseData(text) {
    try { return JSON.parse(text); } catch (e) { return text; }
  }

  async function api(method, path, payload) {
    const init = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (payload !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = CSRF;
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(BASE + "/api" + path, init);
    if (response.status === 401) { window.location.assign(BASE + "/login"); }
    const data = await response.json();
    if (!response.ok) throw new Error(data.detail || response.statusText);
    return data;
  }

  // A refresher runs one fetch at a time; a request during a fetch runs once after it.
  function refresher(run) {
    let busy = false, again = false;
    return async function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      try { await run(); } catch (e) { console.warn(e); }
      busy = false;
      if (again) { again = false; refresh(); }
    };
  }

  // ---------- totals ----------
  function renderTotals(totals, rates) {
    document.querySelectorAll("[data-total]").forEach((el) => {
      if (totals && el.dataset.total in totals) el.textContent = number(totals[el.dataset.total]);
    });
    document.querySelectorAll("[data-rate]").forEach((el) => {
      if (rates && el.dataset.rate in rates) el.textContent = number(rates[el.dataset.rate]);
    });
  }

  function renderHealth(health) {
    if (!health) return;
    const el = $("health");
    el.textContent = String(health.status || (health.ok === false ? "degraded" : "ok"));
    el.title = JSON.stringify(health);
  }

  function renderNodes(nodes) {
    $("nodes").textContent = nodes && nodes.length ? JSON.stringify(nodes, null, 2) : "One node (in-memory backend).";
  }

  // ---------- connections ----------
  function renderConnections(page) {
    state.conn.total = page.total;
    const tbody = $("conn-table").tBodies[0];
    const rows = page.items.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.id = c.id;
      if (c.user) tr.dataset.user = c.user;
      if (c.id === state.selected) tr.className = "selected";
      cell(tr, c.id).className = "mono";
      cell(tr, c.identity);
      userCell(tr, c);
      cell(tr, c.rooms.join(", "));
      cell(tr, c.remote);
      cell(tr, c.user_agent).className = "ua";
      cell(tr, clock(c.connected_at));
      cell(tr, c.expires_at == null ? "–" : clock(c.expires_at)).className = "expires";
      [c.messages_in, c.messages_out, c.bytes_in, c.bytes_out, c.queue_depth, c.dropped]
        .forEach((n) => { cell(tr, number(n)).className = "num"; });
      return tr;
    });
    tbody.replaceChildren(...rows);
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.items.length;
    $("conn-count").textContent = `${first}–${last} of ${number(page.total)}`;
    $("conn-prev").disabled = page.offset <= 0;
    $("conn-next").disabled = last >= page.total;
  }

  const refreshConnections = refresher(async () => {
    const q = encodeURIComponent(state.conn.q);
    const user = state.conn.user ? "&user=" + encodeURIComponent(state.conn.user) : "";
    renderConnections(await api("GET", `/connections?offset=${state.conn.offset}&limit=${PAGE}&q=${q}${user}`));
  });

  function select(id, user) {
    state.selected = id;
    state.selectedUser = id && user ? user : null;
    $("selected-id").textContent = id;
    $("selected-user").textContent = state.selectedUser || "";
    $("selected-user-actions").hidden = !state.selectedUser;
    $("selected-panel").hidden = !OPERATOR || !id;
    document.querySelectorAll("#conn-table tbody tr").forEach((tr) => {
      tr.className = tr.dataset.id === id ? "selected" : "";
    });
  }

  // ---------- rooms ----------
  function renderRooms(page) {
    state.rooms.total = page.total;
    const rows = page.items.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.room = r.name;
      cell(tr, r.name).className = "mono";
      cell(tr, number(r.members)).className = "num";
      cell(tr, number(r.rate)).className = "num";
      cell(tr, number(r.messages)).className = "num";
      cell(tr, number(r.dropped)).className = "num";
      return tr;
    });
    $("room-table").tBodies[0].replaceChildren(...rows);
    const last = page.offset + page.items.length;
    $("room-count").textContent = `${page.total ? page.offset + 1 : 0}–${last} of ${number(page.total)}`;
    $("room-prev").disabled = page.offset <= 0;
    $("room-next").disabled = last >= page.total;
  }

  const refreshRooms = refresher(async () => {
    const q = encodeURIComponent(state.rooms.q);
    renderRooms(await api("GET", `/rooms?offset=${state.rooms.offset}&limit=${PAGE}&q=${q}`));
    if (state.room) await loadRoom(state.room);
  });

  // What applies to the room (its room options), as one line of text.
  function describeOptions(options) {
    if (!options) return "";
    const parts = Object.entries(options)
      .filter(([, value]) => value !== null && value !== false)
      .map(([name, value]) => (value === true ? name : `${name}: ${JSON.stringify(value)}`));
    return "Options: " + (parts.length ? parts.join(" · ") : "the global defaults");
  }

  async function loadRoom(name) {
    let detail;
    try {
      detail = await api("GET", "/rooms/" + encodeURIComponent(name) + "?limit=" + PAGE);
    } catch (e) {
      $("room-detail-summary").textContent = "This room is gone.";
      $("room-members").tBodies[0].replaceChildren();
      return;
    }
    $("room-detail").hidden = false;
    $("room-detail-name").textContent = detail.name;
    $("room-detail-summary").textContent =
      `${number(detail.members)} members · ${number(detail.rate)} msgs/s · showing ${detail.connections.items.length}`;
    const rows = detail.connections.items.map((c) => {
      const tr = document.createElement("tr");
      cell(tr, c.id).className = "mono";
      cell(tr, c.identity);
      cell(tr, c.remote);
      cell(tr, c.user_agent).className = "ua";
      cell(tr, clock(c.connected_at));
      return tr;
    });
    $("room-members").tBodies[0].replaceChildren(...rows);
    $("room-options").textContent = describeOptions(detail.options);
    if (detail.presence) await loadRoomPresence(name);
    else $("room-presence").hidden = true;
    if (detail.history) await loadRoomHistory(name);
    else $("room-history").hidden = true;  // a plain room: no request that would 404
  }

  // A presence room: its users online (id, info, connections); info is untrusted: text only.
  async function loadRoomPresence(name) {
    let found;
    try {
      found = await api("GET", "/rooms/" + encodeURIComponent(name) + "/presence?limit=100");
    } catch (e) {
      $("room-presence").hidden = true;
      return;
    }
    $("room-presence").hidden = false;
    $("room-presence-count").textContent =
      `${number(found.count.users)} users · ${number(found.count.connections)} connections`;
    const rows = found.users.map((u) => {
      const tr = document.createElement("tr");
      cell(tr, u.id).className = "mono";
      cell(tr, u.info == null ? "" : JSON.stringify(u.info)).className = "mono";
      cell(tr, number(u.connections)).className = "num";
      return tr;
    });
    $("room-presence-table").tBodies[0].replaceChildren(...rows);
  }

  // The room view (charts.js draws it): the open room's members and rate, once a second,
  // while the Rooms tab is visible. A room that is gone is not asked again until reopened.
  let roomGone = null;
  async function pollRoom() {
    const name = state.room;
    if (document.hidden || state.tab !== "rooms" || !name || roomGone === name) return;
    let detail = null;
    try {
      detail = await api("GET", "/rooms/" + encodeURIComponent(name) + "?limit=1");
    } catch (e) {
      roomGone = name;
    }
    if (name !== state.room) return;  // another room was opened meanwhile
    const sample = detail ? { name, members: detail.members, rate: detail.rate } : { name, gone: true };
    document.dispatchEvent(new CustomEvent("wsadmin:room", { detail: sample }));
  }

  // The view opens below the rooms table (50 rows): bring it into sight, or a click on a
  // room would seem to do nothing.
  async function openRoom(name) {
    state.room = name;
    roomGone = null;
    const loaded = loadRoom(name);
    pollRoom();
    await loaded;
    if (state.room === name) $("room-detail").scrollIntoView({ block: "start", behavior: "auto" });
  }

  // A history room: its position and newest messages; hidden for other rooms.
  async function loadRoomHistory(name) {
    let page;
    try {
      page = await api("GET", "/rooms/" + encodeURIComponent(name) + "/history?limit=10");
    } catch (e) {
      $("room-history").hidden = true;
      return;
    }
    $("room-history").hidden = false;
    $("room-history-position").textContent = `epoch ${page.epoch} · offset ${number(page.offset)}`;
    const rows = page.messages.slice().reverse().map((m) => {
      const tr = document.createElement("tr");
      cell(tr, number(m.offset)).className = "num";
      cell(tr, m.sender || "server").className = "mono";
      cell(tr, JSON.stringify(m.data)).className = "mono";
      return tr;
    });
    $("room-history-table").tBodies[0].replaceChildren(...rows);
  }

  // ---------- event and audit logs ----------
  function eventRow(e) {
    const tr = document.createElement("tr");
    tr.dataset.seq = e.seq;
    tr.className = "kind-" + String(e.kind).replace(/[^a-z_]/g, "");
    cell(tr, clock(e.time));
    cell(tr, e.kind);
    cell(tr, e.connection_id).className = "mono";
    cell(tr, e.room);
    cell(tr, e.identity);
    cell(tr, e.detail);
    return tr;
  }

  function auditRow(a) {
    const tr = document.createElement("tr");
    cell(tr, clock(a.time));
    cell(tr, a.actor);
    cell(tr, a.role);
    cell(tr, a.action);
    cell(tr, a.target).className = "mono";
    cell(tr, a.detail);
    cell(tr, a.result);
    return tr;
  }

  // The Events tab shows one kind or every kind: rows of other kinds are not added.
  function shownEvent(e) {
    return !state.eventKind || e.kind === state.eventKind;
  }

  const reloadEvents = refresher(async () => {
    const kind = state.eventKind ? "&kind=" + encodeURIComponent(state.eventKind) : "";
    resetLog($("event-table").tBodies[0], await api("GET", `/events?limit=${MAX_LOG_ROWS}${kind}`),
      "eventSeq", eventRow);
  });

  // Newest first; items arrive newest first; rows already shown (by seq) are skipped.
  function prependLog(tbody, items, key, seen, makeRow) {
    const fresh = items.filter((item) => item.seq > state[key]);
    if (!fresh.length) return;
    state[key] = Math.max(state[key], ...fresh.map((item) => item.seq));
    tbody.prepend(...fresh.map(makeRow));
    while (tbody.rows.length > MAX_LOG_ROWS) tbody.deleteRow(-1);
  }

  function resetLog(tbody, items, key, makeRow) {
    state[key] = 0;
    tbody.replaceChildren();
    prependLog(tbody, items, key, null, makeRow);
  }

  // ---------- live stream ----------
  function onSnapshot(snap) {
    document.dispatchEvent(new CustomEvent("wsadmin:update", { detail: snap }));  // charts.js
    renderTotals(snap.totals, snap.rates);
    renderHealth(snap.health);
    renderNodes(snap.nodes);
    if (state.conn.offset === 0 && !state.conn.q && !state.conn.user) renderConnections(snap.connections);
    else refreshConnections();
    if (state.rooms.offset === 0 && !state.rooms.q) renderRooms(snap.rooms);
    else refreshRooms();
    if (state.eventKind) reloadEvents();
    else resetLog($("event-table").tBodies[0], snap.events, "eventSeq", eventRow);
    resetLog($("audit-table").tBodies[0], snap.audit, "auditSeq", auditRow);
  }

  function onDelta(delta) {
    document.dispatchEvent(new CustomEvent("wsadmin:update", { detail: delta }));  // charts.js
    if (delta.totals || delta.rates) renderTotals(delta.totals, delta.rates);
    if (delta.health) renderHealth(delta.health);
    if (delta.nodes) renderNodes(delta.nodes);
    if (delta.events) prependLog($("event-table").tBodies[0], delta.events.filter(shownEvent), "eventSeq", null, eventRow);
    if (delta.audit) prependLog($("audit-table").tBodies[0], delta.audit, "auditSeq", null, auditRow);
    if (delta.connections) refreshConnections();
    if (delta.rooms && state.tab === "rooms") refreshRooms();
  }

  function connect() {
    const live = $("live");
    const source = new EventSource(BASE + "/api/stream");
    source.addEventListener("snapshot", (m) => onSnapshot(JSON.parse(m.data)));
    source.addEventListener("delta", (m) => onDelta(JSON.parse(m.data)));
    source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  }

  // ---------- actions ----------
  async function act(path, payload, done) {
    try {
      const result = await api("POST", path, payload);
      flash(done(result), !result.ok);
    } catch (e) {
      flash("Failed: " + e.message, true);
    }
  }

  function wireActions() {
    $("send-button").addEventListener("click", () => {
      if (!state.selected) return;
      act("/send", { connection_id: state.selected, data: parseData($("send-data").value) },
        (r) => (r.ok ? "Sent to " : "Not found: ") + state.selected);
    });
    $("kick-button").addEventListener("click", () => {
      const id = state.selected;
      if (!id) return;
      const reason = $("kick-reason").value;
      if (!window.confirm(`Kick connection ${id}?\nReason: ${reason}`)) return;
      act("/kick", { connection_id: id, reason: reason }, (r) => {
        if (r.ok) select(null);
        return (r.ok ? "Kicked " : "Not found: ") + id;
      });
    });
    $("kick-user-button").addEventListener("click", () => {
      const user = state.selectedUser;
      if (!user) return;
      const reason = $("kick-reason").value;
      if (!window.confirm(`Kick user ${user} (every connection, on every node)?\nReason: ${reason}`)) return;
      act("/kick-user", { user_id: user, reason: reason }, (r) => {
        if (r.ok) select(null);
        return `Kicked ${number(r.kicked)} connection(s) of user ${user}`;
      });
    });
    $("broadcast-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const room = $("broadcast-room").value.trim();
      act("/broadcast", { room: room || null, data: parseData($("broadcast-data").value) },
        (r) => `Delivered to ${number(r.delivered)} connection(s)`);
    });
  }

  // ---------- navigation ----------
  function showTab(name) {
    state.tab = name;
    document.querySelectorAll("[data-tab]").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
    document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== "tab-" + name; });
    if (name === "rooms") refreshRooms();
    if (name === "connections") refreshConnections();
  }

  function debounce(fn, ms) {
    let timer;
    return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  function wireNavigation() {
    document.querySelectorAll("[data-tab]").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
    $("conn-search").addEventListener("input", debounce(() => {
      state.conn.q = $("conn-search").value; state.conn.offset = 0; refreshConnections();
    }, 250));
    $("conn-user").addEventListener("input", debounce(() => {
      state.conn.user = $("conn-user").value.trim(); state.conn.offset = 0; refreshConnections();
    }, 250));
    $("event-kind").addEventListener("change", () => {
      state.eventKind = $("event-kind").value;
      reloadEvents();
    });
    $("room-search").addEventListener("input", debounce(() => {
      state.rooms.q = $("room-search").value; state.rooms.offset = 0; refreshRooms();
    }, 250));
    $("conn-prev").addEventListener("click", () => { state.conn.offset = Math.max(0, state.conn.offset - PAGE); refreshConnections(); });
    $("conn-next").addEventListener("click", () => { state.conn.offset += PAGE; refreshConnections(); });
    $("room-prev").addEventListener("click", () => { state.rooms.offset = Math.max(0, state.rooms.offset - PAGE); refreshRooms(); });
    $("room-next").addEventListener("click", () => { state.rooms.offset += PAGE; refreshRooms(); });
    $("conn-table").tBodies[0].addEventListener("click", (event) => {
      const tr = event.target.closest("tr");
      if (tr && OPERATOR) select(tr.dataset.id, tr.dataset.user);
    });
    $("room-table").tBodies[0].addEventListener("click", (event) => {
      const tr = event.target.closest("tr");
      if (tr) openRoom(tr.dataset.room);
    });
  }

  function start() {
    document.querySelectorAll(".operator-only").forEach((el) => { if (!OPERATOR) el.hidden = true; });
    $("selected-panel").hidden = true;
    wireNavigation();
    if (OPERATOR) wireActions();
    // Counters (messages, bytes, queue) change without events: refresh the visible page now and then.
    setInterval(() => {
      if (document.hidden) return;
      if (state.tab === "connections") refreshConnections();
      if (state.tab === "rooms") refreshRooms();
    }, 5000);
    setInterval(pollRoom, 1000);
    connect();
  }

  start();
})();
