// wsplugin's browser client: one managed WebSocket that reconnects, rejoins its rooms and
// recovers history rooms. Served by the plugin at {prefix}-client.js (/ws-client.js by
// default), types at {prefix}-client.d.ts. No dependencies, no build step: docs/client.md.

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

/** A rejected publish: `fate` is "not_delivered" (never sent, or refused) or "unknown". */
export class PublishError extends Error {
  constructor(code, detail, fate) {
    super(`${code}: ${detail}`);
    this.name = "PublishError";
    this.code = code;
    this.detail = detail;
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

function report(error) {
  if (globalThis.reportError) globalThis.reportError(error);
  else setTimeout(() => { throw error; });
}

export class WSClient {
  #options; #url; #probe; #listeners = new Map();
  #rooms = new Map();        // every room we want -> its position {epoch, offset} or null
  #joined = new Set();       // rooms joined on the current socket
  #pending = new Map();      // command id -> publish or join waiting for its answer
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
    this.#emit("left", { room });
  }

  #roomJoined(room, frame) {
    this.#joined.add(room);
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
    this.#emit("message", { room, data, sender, offset });
  }

  #error(frame, entry) {
    if (entry?.kind === "publish") {
      const fate = frame.code === "publish_failed" ? "unknown" : "not_delivered";
      return this.#settle(entry.id, new PublishError(frame.code, frame.detail, fate));
    }
    if (entry?.kind === "join") {  // refused (forbidden, too_many_rooms...): we stop asking
      this.#pending.delete(entry.id);
      this.#rooms.delete(entry.room);
      return this.#emit("error", { code: frame.code, detail: frame.detail, room: entry.room });
    }
    this.#emit("error", { code: frame.code, detail: frame.detail, id: frame.id });
  }

  #flush() {
    if (this.#state !== "open") return;
    for (const entry of this.#pending.values()) {
      if (entry.kind !== "publish" || entry.sent || !this.#joined.has(entry.room)) continue;
      entry.sent = true;
      this.#send({ type: "publish", room: entry.room, data: entry.data, id: entry.id });
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
      else if (entry.sent) this.#settle(entry.id, maybeSent("connection_lost", "no ack yet"));
    }
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
      this.#settle(entry.id, notSent("closed", `the client closed: ${reason}`));
    }
    globalThis.removeEventListener?.("online", this.#wake);
    globalThis.removeEventListener?.("offline", this.#offline);
    globalThis.document?.removeEventListener("visibilitychange", this.#visible);
    this.#emit("closed", { code, reason });
  }
}
