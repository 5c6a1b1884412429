// wsplugin's browser client: one managed WebSocket that reconnects, rejoins its rooms,
// recovers history rooms and keeps presence rooms in sync. Served by the plugin at
// {prefix}-client.js (/ws-client.js by default), types at {prefix}-client.d.ts. No
// dependencies, no build step: docs/client.md.

/** Close codes after which the client reconnects (any other code is terminal). */
export const RECONNECT_CODES = Object.freeze([1001, 1006, 1011, 1012, 4008, 4029]);
const RATE_LIMITED = 4029;

export const DEFAULTS = Object.freeze({
  rooms: [],               // rooms joined after the URL room
  params: {},              // query parameters, or a function returning them (per connect)
  backoffMin: 500,         // ms: the first reconnect waits up to this
  backoffMax: 20000,       // ms: the cap of the exponential backoff
  stableAfter: 10000,      // ms a connection must stay up to reset the backoff
  rateLimitPause: 10000,   // ms added to the backoff after a 4029 (rate limited)
  publishTimeout: 5000,    // ms before an unacknowledged publish is rejected
  heartbeatInterval: 25000, // ms of silence before the client sends a ping
  heartbeatTimeout: 10000, // ms to wait for any frame after that ping
  connectTimeout: 10000,   // ms from new WebSocket() to the welcome
  probe: undefined,        // URL that tells a refused handshake from a dead server; false: never
  refusedAfter: 2,         // consecutive refused handshakes that end the client
  presenceGrace: 10000,    // ms a user missing after a reconnect has to come back, else `leave`
});

/** Full-jitter exponential backoff: a delay in [0, min(max, min * 2^attempt)) ms. */
export function backoffDelay(attempt, options = {}) {
  const { backoffMin = 500, backoffMax = 20000, random = Math.random } = options;
  const cap = Math.min(backoffMax, backoffMin * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** The pause before reconnect number `attempt` (0 first) after a close with `code`. */
export function reconnectDelay(code, attempt, options = {}) {
  const pause = code === RATE_LIMITED ? (options.rateLimitPause ?? DEFAULTS.rateLimitPause) : 0;
  return pause + backoffDelay(attempt, options);
}

/** A rejected request (`presenceStats`, `refreshPresence`): the error word and its detail. */
export class RequestError extends Error {
  constructor(code, detail) {
    super(`${code}: ${detail}`);
    this.name = "RequestError";
    this.code = code;
    this.detail = detail;
  }
}

/** A rejected publish: `fate` is "not_delivered" (never sent, or refused) or "unknown". */
export class PublishError extends RequestError {
  constructor(code, detail, fate) {
    super(code, detail);
    this.name = "PublishError";
    this.fate = fate;
  }
}

const notSent = (code, detail) => new PublishError(code, detail, "not_delivered");
const maybeSent = (code, detail) => new PublishError(code, detail, "unknown");

function socketUrl(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u;
}

function defaultProbe(u) {
  // /ws/lobby -> /ws-client.js on the same server: it answers whenever the app is up.
  const prefix = u.pathname.slice(0, u.pathname.lastIndexOf("/"));
  return `${u.protocol === "wss:" ? "https:" : "http:"}//${u.host}${prefix}-client.js`;
}

const MAX_HELD_DIFFS = 256;  // diffs kept while a snapshot is on its way (a few in practice)

function frozen(value) {  // a user's info is shared by every copy of the state: read-only
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.values(value).forEach(frozen);
    Object.freeze(value);
  }
  return value;
}

const sameInfo = (a, b) => a === b || JSON.stringify(a) === JSON.stringify(b);

/** A diff applied without events (to a snapshot, on top of which it is replayed). */
function replay(users, diff) {
  for (const [user, entry] of Object.entries(diff.joins ?? {})) {
    const had = users.get(user);
    users.set(user, { ...had, info: frozen(entry?.info ?? null) });
  }
  for (const user of Object.keys(diff.leaves ?? {})) users.delete(user);
}

/**
 * The presence of one room as this client sees it: the last snapshot, then the diffs after
 * it. `users` maps a user id to {info, connections?} (connections as of the last snapshot;
 * 0 for a user missing since a reconnect, held for `presenceGrace`); null when the snapshot
 * was truncated (counts only); undefined before the first snapshot.
 */
class PresenceRoom {
  users = undefined;
  count = null;          // {users, connections} of the last snapshot
  expected = 0;          // snapshots on their way (the join's, refreshPresence's)
  held = [];             // diffs that came while one was on its way: replayed on top of it
  rejoined = false;      // the next snapshot follows a reconnect: hold who is missing
  missing = new Set();   // users absent since a reconnect: they leave when the grace ends
  timer = 0;

  constructor(room, emit, grace) { Object.assign(this, { room, emit, grace }); }

  get listed() { return this.users instanceof Map; }

  /** A fresh copy of the state: {userId: {info, connections?}}, or null (no list). */
  state() {
    if (!this.listed) return null;
    const users = {};
    for (const [user, entry] of this.users) users[user] = { ...entry };
    return users;
  }

  detail() {
    const count = this.count && { ...this.count };
    return { room: this.room, users: this.state(), count, truncated: this.users === null };
  }

  expect() { this.expected += 1; }

  /** A snapshot arrived, or will not (its request failed): the diffs held go with it. */
  unexpect() {
    this.expected = Math.max(0, this.expected - 1);
    if (this.expected === 0) this.held = [];
  }

  /** The socket is gone: the room will be rejoined, and its snapshot compared with ours. */
  lost() { this.expected = 0; this.held = []; this.rejoined = this.listed; this.stopTimer(); }

  stopTimer() { clearTimeout(this.timer); this.timer = 0; }

  snapshot(frame) {
    const held = this.held;
    this.unexpect();
    const rejoined = this.rejoined;
    this.rejoined = false;
    const count = frame.count ?? {};
    this.count = { users: count.users ?? 0, connections: count.connections ?? 0 };
    if (frame.truncated || !frame.users) {  // counts only: nothing to compare
      this.users = null;
      this.missing.clear();
      this.stopTimer();
      return this.emit("presence", this.detail());
    }
    const next = new Map();
    for (const [user, entry] of Object.entries(frame.users)) {
      next.set(user, { info: frozen(entry?.info ?? null), connections: entry?.connections });
    }
    for (const diff of held) replay(next, diff);  // they may be newer than the snapshot
    const before = this.users;
    this.users = next;
    const changes = before instanceof Map
      ? this.compare(before, next, rejoined) : { joins: [], leaves: [] };
    this.announce(changes);
  }

  /** Who joined and left between our state and the next; after a reconnect a user who is
   * missing is kept (connections 0) for the grace: they may be reconnecting too. */
  compare(before, next, rejoined) {
    const joins = [], leaves = [];
    for (const [user, entry] of next) {
      this.missing.delete(user);
      if (!before.has(user)) joins.push({ user, info: entry.info });
    }
    for (const [user, entry] of before) {
      if (next.has(user)) continue;
      if (rejoined || this.missing.has(user)) {
        next.set(user, { info: entry.info, connections: 0 });
        this.missing.add(user);
      } else {
        leaves.push({ user, info: entry.info });
      }
    }
    return { joins, leaves };
  }

  diff(frame) {
    if (this.expected > 0) {
      this.held.push(frame);
      if (this.held.length > MAX_HELD_DIFFS) this.held.shift();
    }
    if (!this.listed) return;  // no list yet (the snapshot replays it), or counts only
    const joins = [], leaves = [];
    let changed = false;
    for (const [user, entry] of Object.entries(frame.joins ?? {})) {
      const info = frozen(entry?.info ?? null);
      const had = this.users.get(user);
      const back = this.missing.delete(user);  // came back within the grace: no event
      if (!had) joins.push({ user, info });
      if (!had || back || !sameInfo(had.info, info)) {
        this.users.set(user, back || !had ? { info } : { ...had, info });
        changed = true;
      }
    }
    for (const user of Object.keys(frame.leaves ?? {})) {
      const had = this.users.get(user);
      if (!had) continue;  // not known to us: already gone
      this.users.delete(user);
      this.missing.delete(user);
      leaves.push({ user, info: had.info });
    }
    if (changed || leaves.length) this.announce({ joins, leaves });
  }

  graceOver() {
    this.timer = 0;
    const leaves = [];
    for (const user of this.missing) {
      leaves.push({ user, info: this.users.get(user)?.info ?? null });
      this.users.delete(user);
    }
    this.missing.clear();
    if (leaves.length) this.announce({ joins: [], leaves });
  }

  /** The state changed: start or stop the grace, then the events, then the whole state. */
  announce({ joins, leaves }) {
    if (!this.missing.size) this.stopTimer();
    else if (!this.timer) this.timer = setTimeout(() => this.graceOver(), this.grace);
    for (const { user, info } of joins) this.emit("join", { room: this.room, user, info });
    for (const { user, info } of leaves) this.emit("leave", { room: this.room, user, info });
    this.emit("presence", this.detail());
  }
}

function report(error) {
  if (globalThis.reportError) globalThis.reportError(error);
  else setTimeout(() => { throw error; });
}

export class WSClient {
  #options; #url; #probe; #listeners = new Map();
  #rooms = new Map();        // every room we want -> its position {epoch, offset} or null
  #joined = new Set();       // rooms joined on the current socket
  #pending = new Map();      // command id -> publish, join or request waiting for its answer
  #presence = new Map();     // joined room -> its PresenceRoom (synced in presence rooms)
  #socket = null; #state = "connecting"; #connectionId = null; #everConnected = false;
  #nextId = 1; #attempt = 0; #refusals = 0;
  #timer = 0; #stableTimer = 0; #beatTimer = 0; #lastFrame = 0; #pingAt = 0;
  #wake = () => { if (this.#state === "waiting") this.#connect(); };
  #offline = () => { if (this.#joined.size) this.#ping(); };
  #visible = () => { if (document.visibilityState === "visible") this.#wake(); };

  constructor(url, options = {}) {
    this.#options = { ...DEFAULTS, ...options };
    this.#url = socketUrl(url);
    const path = this.#url.pathname;
    this.room = decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
    this.#probe = this.#options.probe ?? defaultProbe(this.#url);
    for (const room of [this.room, ...this.#options.rooms]) this.#rooms.set(room, null);
    globalThis.addEventListener?.("online", this.#wake);
    globalThis.addEventListener?.("offline", this.#offline);
    globalThis.document?.addEventListener("visibilitychange", this.#visible);
    this.#connect();
  }

  /** "connecting", "open" (welcomed), "waiting" (to reconnect) or "closed" (for good). */
  get state() { return this.#state; }
  get connectionId() { return this.#connectionId; }
  get rooms() { return [...this.#rooms.keys()]; }
  /** The last position seen in a history room, or null. */
  position(room) { const p = this.#rooms.get(room); return p ? { ...p } : null; }

  /** Who is online in a presence room: a fresh {userId: {info, connections?}}, or null
   * (not a presence room, no snapshot yet, or a truncated one: see presenceCount). */
  presence(room) { return this.#presence.get(room ?? this.room)?.state() ?? null; }

  /** A presence room's counts as of its last snapshot: {users, connections, truncated}. */
  presenceCount(room) {
    const sync = this.#presence.get(room ?? this.room);
    if (!sync?.count) return null;
    return { ...sync.count, truncated: sync.users === null };
  }

  /** Asks the server for a presence room's counts now: resolves {room, users, connections}. */
  presenceStats(room, { timeout = this.#options.publishTimeout } = {}) {
    return this.#request("presence_stats", room ?? this.room, timeout);
  }

  /** Asks the server for a fresh snapshot (connection counts included); resolves with the
   * `presence` event's detail, after the events of what changed. */
  refreshPresence(room, { timeout = this.#options.publishTimeout } = {}) {
    return this.#request("presence", room ?? this.room, timeout);
  }

  /** Listen to an event; `filter.room` keeps only that room's. Returns the unsubscribe. */
  on(event, listener, filter = {}) {
    const entry = { listener, room: filter.room };
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(entry);
    return () => this.#listeners.get(event).delete(entry);
  }

  #emit(event, detail) {
    for (const { listener, room } of [...(this.#listeners.get(event) ?? [])]) {
      if (room !== undefined && detail.room !== room) continue;
      try { listener(detail); } catch (error) { report(error); }
    }
  }

  /** Publish; resolves {room, offset} on the server's ack, rejects with a PublishError. */
  publish(room, data, { timeout = this.#options.publishTimeout } = {}) {
    room = room ?? this.room;
    return new Promise((resolve, reject) => {
      if (this.#state === "closed") return reject(notSent("closed", "the client is closed"));
      if (!this.#rooms.has(room)) return reject(notSent("not_joined", `join ${room} first`));
      const id = this.#nextId++;
      const entry = { kind: "publish", id, room, data, resolve, reject, sent: false };
      entry.timer = setTimeout(() => this.#expire(id), timeout);
      this.#pending.set(id, entry);
      this.#flush();
    });
  }

  #request(type, room, timeout) {  // a read: sent once its room is joined, again after a reconnect
    return new Promise((resolve, reject) => {
      if (this.#state === "closed") return reject(new RequestError("closed", "client closed"));
      if (!this.#rooms.has(room)) return reject(new RequestError("not_joined", `join ${room}`));
      const id = this.#nextId++;
      const entry = { kind: "request", type, id, room, resolve, reject, sent: false };
      entry.timer = setTimeout(() => this.#expire(id), timeout);
      this.#pending.set(id, entry);
      this.#flush();
    });
  }

  /** Join a room (now, or at the next connection); resolves with the `joined` detail. */
  join(room) {
    if (this.#state === "closed") return Promise.reject(new Error("the client is closed"));
    if (!this.#rooms.has(room)) this.#rooms.set(room, null);
    return new Promise((resolve, reject) => {
      const done = (settle, detail) => { offs.forEach((off) => off()); settle(detail); };
      const offs = [
        this.on("joined", (detail) => done(resolve, detail), { room }),
        this.on("error", (detail) => done(reject, detail), { room }),
        this.on("closed", (detail) => done(reject, detail)),
      ];
      if (this.#joined.has(room)) done(resolve, { room });
      else if (this.#state === "open" && !this.#joining(room)) this.#sendJoin(room);
    });
  }

  /** Leave a room; its queued publishes are rejected (not delivered). */
  leave(room) {
    if (room === this.room) throw new Error("the URL room is left by close()");
    this.#rooms.delete(room);
    for (const entry of this.#pending.values()) {
      if (entry.kind === "publish" && entry.room === room && !entry.sent) {
        this.#settle(entry.id, notSent("not_joined", `left ${room}`));
      }
    }
    this.#dropPresence(room);
    if (this.#joined.delete(room)) this.#send({ type: "leave", room });
  }

  /** Close for good: no reconnect; emits `closed`. */
  close(code = 1000, reason = "closed by the client") {
    if (this.#state === "closed") return;
    const socket = this.#detach();
    socket?.close(code, reason);
    this.#finish(code, reason);
  }

  #connect() {
    clearTimeout(this.#timer);
    this.#state = "connecting";
    const url = new URL(this.#url);
    let params = this.#options.params;
    if (typeof params === "function") params = params();
    for (const [key, value] of Object.entries(params ?? {})) url.searchParams.set(key, `${value}`);
    const position = this.#rooms.get(this.room);
    if (position) {
      url.searchParams.set("epoch", position.epoch);
      url.searchParams.set("offset", String(position.offset));
    }
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    let opened = false;
    socket.onopen = () => { opened = true; };
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = (event) => this.#closed(event.code, event.reason, opened);
    const giveUp = () => this.#abort(1006, "no welcome in time");
    this.#timer = setTimeout(giveUp, this.#options.connectTimeout);
  }

  #receive(raw) {
    this.#lastFrame = Date.now();
    if (typeof raw !== "string") return this.#emit("binary", { data: raw });
    for (const line of raw.split("\n")) {  // ?batch=1 puts several frames in one
      if (line) this.#frame(JSON.parse(line));
    }
  }

  #frame(frame) {
    const entry = frame.id === undefined ? undefined : this.#pending.get(frame.id);
    switch (frame.type) {
      case "welcome": return this.#welcome(frame);
      case "joined": return this.#serverJoined(frame, entry);
      case "left": return this.#left(frame.room);
      case "message": return this.#message(frame);
      case "published": return this.#acked(frame);
      case "reset": return this.#reset(frame.room, frame, "reset");
      case "presence": return this.#snapshot(frame, entry);
      case "presence_diff": return this.#presence.get(frame.room)?.diff(frame);
      case "presence_stats": return this.#stats(frame, entry);
      case "error": return this.#error(frame, entry);
      default: return undefined;  // pong and future frame types: liveness only
    }
  }

  #welcome(frame) {
    clearTimeout(this.#timer);
    this.#state = "open";
    this.#connectionId = frame.connection_id;
    this.#refusals = 0;
    this.#stableTimer = setTimeout(() => { this.#attempt = 0; }, this.#options.stableAfter);
    const reconnected = this.#everConnected;
    this.#emit("connected", { connectionId: frame.connection_id, reconnected });
    this.#everConnected = true;
    this.#beat();
    this.#roomJoined(this.room, frame);
    for (const room of this.#rooms.keys()) if (room !== this.room) this.#sendJoin(room);
  }

  #sendJoin(room) {
    const id = this.#nextId++;
    this.#pending.set(id, { kind: "join", id, room });
    this.#send({ type: "join", room, id, ...(this.#rooms.get(room) ?? {}) });
  }

  #joining(room) {
    return [...this.#pending.values()].some((e) => e.kind === "join" && e.room === room);
  }

  #serverJoined(frame, entry) {
    if (entry) this.#pending.delete(entry.id);
    else if (frame.id === undefined) this.#rooms.set(frame.room, null);  // manager.join()
    if (!this.#rooms.has(frame.room)) return this.#send({ type: "leave", room: frame.room });
    this.#roomJoined(frame.room, frame);
  }

  #left(room) {  // our leave, or manager.leave() on the server
    this.#joined.delete(room);
    if (room !== this.room) this.#rooms.delete(room);
    this.#dropPresence(room);
    this.#emit("left", { room });
  }

  #dropPresence(room) {  // no longer a member: its presence is not ours to follow
    this.#presence.get(room)?.stopTimer();
    this.#presence.delete(room);
    if (this.#rooms.has(room)) return;
    for (const entry of this.#pending.values()) {
      if (entry.kind === "request" && entry.room === room) {
        this.#settle(entry.id, new RequestError("not_joined", `left ${room}`));
      }
    }
  }

  #snapshot(frame, entry) {  // a presence room's snapshot: after a join, or asked for
    const sync = this.#presence.get(frame.room);
    sync?.snapshot(frame);
    if (entry?.kind !== "request") return;
    if (sync) this.#settle(entry.id, null, sync.detail());
    else this.#settle(entry.id, new RequestError("not_joined", `left ${frame.room}`));
  }

  #stats({ room, users, connections }, entry) {
    if (entry?.kind === "request") this.#settle(entry.id, null, { room, users, connections });
  }

  #roomJoined(room, frame) {
    this.#joined.add(room);
    let sync = this.#presence.get(room);
    if (!sync) {  // every room may send a snapshot next: diffs before it wait for it
      const emit = (event, detail) => this.#emit(event, detail);
      sync = new PresenceRoom(room, emit, this.#options.presenceGrace);
      this.#presence.set(room, sync);
    }
    sync.expect();
    const before = this.#rooms.get(room);
    if (typeof frame.epoch === "string") {
      const replay = frame.recovered === true && before;  // the missed messages follow
      const offset = replay ? before.offset : frame.offset;
      this.#rooms.set(room, { epoch: frame.epoch, offset });
    }
    const { epoch, offset, recovered } = frame;
    this.#emit("joined", { room, epoch, offset, recovered });
    if (typeof recovered === "boolean") {
      this.#emit("recovered", { room, recovered, epoch, offset });
      if (!frame.recovered) this.#reset(room, frame, "recovery_failed");
    }
    this.#flush();
  }

  #reset(room, frame, cause) {
    if (!this.#rooms.has(room)) return;
    this.#rooms.set(room, { epoch: frame.epoch, offset: frame.offset });
    this.#emit("reset", { room, epoch: frame.epoch, offset: frame.offset, cause });
  }

  #message(frame) {
    const position = this.#rooms.get(frame.room);
    if (position && typeof frame.offset === "number") {
      if (frame.offset <= position.offset) return;  // seen already (never from a correct server)
      position.offset = frame.offset;
    }
    const { room, data, sender, offset } = frame;
    this.#emit("message", { room, data, sender, user: frame.user ?? null, offset });
  }

  #error(frame, entry) {
    if (entry?.kind === "publish") {
      const fate = frame.code === "publish_failed" ? "unknown" : "not_delivered";
      return this.#settle(entry.id, new PublishError(frame.code, frame.detail, fate));
    }
    if (entry?.kind === "request") {
      if (entry.type === "presence") this.#presence.get(entry.room)?.unexpect();
      return this.#settle(entry.id, new RequestError(frame.code, frame.detail));
    }
    if (entry?.kind === "join") {  // refused (forbidden, too_many_rooms...): we stop asking
      this.#pending.delete(entry.id);
      this.#rooms.delete(entry.room);
      this.#dropPresence(entry.room);
      return this.#emit("error", { code: frame.code, detail: frame.detail, room: entry.room });
    }
    this.#emit("error", { code: frame.code, detail: frame.detail, id: frame.id });
  }

  #flush() {
    if (this.#state !== "open") return;
    for (const entry of this.#pending.values()) {
      if (entry.kind === "join" || entry.sent || !this.#joined.has(entry.room)) continue;
      entry.sent = true;
      if (entry.kind === "publish") {
        this.#send({ type: "publish", room: entry.room, data: entry.data, id: entry.id });
      } else {
        if (entry.type === "presence") this.#presence.get(entry.room)?.expect();
        this.#send({ type: entry.type, room: entry.room, id: entry.id });
      }
    }
  }

  #acked({ id, room, offset }) {
    this.#settle(id, null, { room, offset });
  }

  #settle(id, error, value) {
    const entry = this.#pending.get(id);
    if (!entry) return;
    this.#pending.delete(id);
    clearTimeout(entry.timer);
    if (error) entry.reject(error); else entry.resolve(value);
  }

  #expire(id) {
    const entry = this.#pending.get(id);
    if (entry?.kind === "request") {
      if (entry.sent && entry.type === "presence") this.#presence.get(entry.room)?.unexpect();
      return this.#settle(id, new RequestError("timeout", "no answer in time"));
    }
    const make = entry?.sent ? maybeSent : notSent;
    this.#settle(id, make("timeout", "no acknowledgement in time"));
  }

  #send(command) {
    if (this.#socket?.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify(command));
  }

  // Heartbeat: one timer. Silence for heartbeatInterval -> ping; no frame within
  // heartbeatTimeout after it -> the link is dead (half-open): drop it and reconnect.
  #beat() {
    clearTimeout(this.#beatTimer);
    const { heartbeatInterval, heartbeatTimeout } = this.#options;
    const now = Date.now();
    if (this.#pingAt && this.#lastFrame < this.#pingAt) {
      const left = this.#pingAt + heartbeatTimeout - now;
      if (left <= 0) return this.#abort(1006, "no pong in time");
      this.#beatTimer = setTimeout(() => this.#beat(), left);
      return;
    }
    this.#pingAt = 0;
    const idle = now - this.#lastFrame;
    if (idle >= heartbeatInterval) return this.#ping();
    this.#beatTimer = setTimeout(() => this.#beat(), heartbeatInterval - idle);
  }

  #ping() {
    this.#pingAt = Date.now();
    this.#send({ type: "ping" });
    clearTimeout(this.#beatTimer);
    this.#beatTimer = setTimeout(() => this.#beat(), this.#options.heartbeatTimeout);
  }

  #abort(code, reason) {  // a socket we give up on: do not wait for its close handshake
    const socket = this.#detach();
    socket?.close(1000, reason);
    this.#closed(code, reason, false, true);
  }

  #detach() {
    const socket = this.#socket;
    if (socket) socket.onopen = socket.onmessage = socket.onclose = null;
    this.#socket = null;
    clearTimeout(this.#timer); clearTimeout(this.#stableTimer); clearTimeout(this.#beatTimer);
    this.#pingAt = 0;
    this.#joined.clear();
    for (const entry of this.#pending.values()) {  // sent but not acknowledged: fate unknown
      if (entry.kind === "join") this.#pending.delete(entry.id);
      else if (entry.kind === "request") entry.sent = false;  // a read: asked again
      else if (entry.sent) this.#settle(entry.id, maybeSent("connection_lost", "no ack yet"));
    }
    for (const sync of this.#presence.values()) sync.lost();
    return socket;
  }

  async #closed(code, reason, opened, aborted = false) {
    const welcomed = this.#state === "open";
    if (!aborted) this.#detach();
    if (this.#state === "closed") return;
    const beforeOpen = code === 1006 && !welcomed && !opened && !aborted;
    if (beforeOpen && await this.#refused()) {  // state stays "connecting" while we probe
      this.#refusals += 1;
      if (this.#refusals >= this.#options.refusedAfter) {
        return this.#finish(1008, "handshake refused (the server answers HTTP)");
      }
    } else {
      this.#refusals = 0;
    }
    if (this.#state === "closed") return;  // close() during the probe
    const reconnect = aborted || RECONNECT_CODES.includes(code);
    const delay = reconnect ? reconnectDelay(code, this.#attempt, this.#options) : 0;
    const attempt = this.#attempt;
    this.#emit("disconnected", { code, reason, reconnect, delay, attempt, wasConnected: welcomed });
    if (!reconnect) return this.#finish(code, reason);
    this.#attempt += 1;
    this.#state = "waiting";
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  async #refused() {  // the server answered HTTP, so the failed handshake was a refusal
    if (this.#probe === false) return false;
    try {
      const signal = AbortSignal.timeout?.(3000);
      const init = { method: "HEAD", mode: "no-cors", cache: "no-store", signal };
      const response = await fetch(this.#probe, init);
      return response.type === "opaque" || response.status < 500;
    } catch {
      return false;
    }
  }

  #finish(code, reason) {
    this.#detach();
    clearTimeout(this.#timer);
    this.#state = "closed";
    for (const entry of this.#pending.values()) {
      const detail = `the client closed: ${reason}`;
      const error = entry.kind === "request" ? new RequestError("closed", detail)
        : notSent("closed", detail);
      this.#settle(entry.id, error);
    }
    for (const sync of this.#presence.values()) sync.stopTimer();
    globalThis.removeEventListener?.("online", this.#wake);
    globalThis.removeEventListener?.("offline", this.#offline);
    globalThis.document?.removeEventListener("visibilitychange", this.#visible);
    this.#emit("closed", { code, reason });
  }
}
