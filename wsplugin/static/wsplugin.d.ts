// Types of wsplugin's browser client, served at {prefix}-client.d.ts beside {prefix}-client.js.
// Copy both next to your code as wsplugin.js / wsplugin.d.ts, or declare the module:
//   declare module "/ws-client.js" { export * from "./wsplugin"; }

/** Close codes after which the client reconnects; any other code is terminal. */
export const RECONNECT_CODES: readonly number[];

export interface WSClientOptions {
  /** Rooms joined (with `join`) after the URL room. */
  rooms?: string[];
  /** Query parameters added to the URL at each connect; a function is called each time. */
  params?: Record<string, string | number> | (() => Record<string, string | number>);
  /** ms: the cap of the first reconnect's random delay (default 500). */
  backoffMin?: number;
  /** ms: the largest cap of the exponential backoff (default 20000). */
  backoffMax?: number;
  /** ms a connection must stay up for the backoff to start over (default 10000). */
  stableAfter?: number;
  /** ms added to the backoff after close 4029, rate limited (default 10000). */
  rateLimitPause?: number;
  /** ms before a publish without acknowledgement is rejected (default 5000). */
  publishTimeout?: number;
  /** ms of silence from the server before the client sends a ping (default 25000). */
  heartbeatInterval?: number;
  /** ms to wait for any frame after that ping before reconnecting (default 10000). */
  heartbeatTimeout?: number;
  /** ms from opening the socket to the welcome before giving up on it (default 10000). */
  connectTimeout?: number;
  /** URL fetched (HEAD, no-cors) after a handshake failed before `open`: an HTTP answer
   * below 500 means the server refused the handshake. Default: `{prefix}-client.js` on the
   * WebSocket's host; `false` never probes (every such failure is retried). */
  probe?: string | false;
  /** Consecutive refused handshakes that end the client with `closed` 1008 (default 2). */
  refusedAfter?: number;
  /** ms a user missing from a presence room's first snapshot after a reconnect is kept
   * (with `connections: 0`) in case they are reconnecting too; then `leave` (default 10000). */
  presenceGrace?: number;
}

export const DEFAULTS: Readonly<Required<Omit<WSClientOptions, "probe">>> & { probe: undefined };

export interface Position {
  epoch: string;
  offset: number;
}

/** One user online in a presence room, as this client sees it. */
export interface PresenceUser {
  /** The user's public info (`User.info` on the server), read-only; null when none. */
  readonly info: Readonly<Record<string, unknown>> | null;
  /** Their connections to the room as of the last snapshot. Absent for a user who joined
   * since (diffs carry no counts: `refreshPresence` asks again); 0 for a user missing since
   * a reconnect, kept for `presenceGrace` in case they come back. */
  connections?: number;
}

/** A presence room's users: user id -> their entry. A fresh object at each call. */
export type PresenceUsers = Record<string, PresenceUser>;

/** A presence room's counts as of its last snapshot. */
export interface PresenceCount {
  users: number;
  connections: number;
}

export interface PresenceDetail {
  room: string;
  /** The whole state; null when the last snapshot was truncated (over the room's
   * `max_list`): then only `count` is known. */
  users: PresenceUsers | null;
  /** The counts of the last snapshot (not updated by diffs). */
  count: PresenceCount;
  truncated: boolean;
}

export interface WSClientEvents {
  /** The server's welcome: the URL room is joined; `reconnected` after the first. */
  connected: { connectionId: string; reconnected: boolean };
  /** A socket closed (or a connect attempt failed); `reconnect` says if and `delay` when. */
  disconnected: {
    code: number;
    reason: string;
    reconnect: boolean;
    delay: number;
    attempt: number;
    wasConnected: boolean;
  };
  /** A message of a room; `offset` in history rooms. Each offset is delivered once. */
  message: {
    room: string;
    data: unknown;
    /** The publishing connection's id; null for a message from the server. */
    sender: string | null;
    /** The publishing client's user id, when it has one. */
    user: string | null;
    offset?: number;
  };
  /** A binary frame (from `manager.broadcast(room, bytes)`): no room on the wire. */
  binary: { data: ArrayBuffer };
  /** A room was (re)joined; history rooms carry their position. */
  joined: { room: string; epoch?: string; offset?: number; recovered?: boolean };
  left: { room: string };
  /** A rejoin with a position: `recovered: true` (the missed messages follow) or `false`. */
  recovered: { room: string; recovered: boolean; epoch: string; offset: number };
  /** Continuity of a history room is lost: reload its state, then messages after `offset`
   * follow. `cause`: a server `reset` frame, or a rejoin answered `recovered: false`. */
  reset: { room: string; epoch: string; offset: number; cause: "reset" | "recovery_failed" };
  /** An error frame not answered to a publish; `room` when a join was refused. */
  error: { code: string; detail: string; id?: unknown; room?: string };
  /** Terminal: kicked (4000), refused (1008), another non-reconnect code, or `close()`. */
  closed: { code: number; reason: string };
  /** A presence room's state changed: its first snapshot, any later one, a diff that changed
   * something, the end of a reconnect's grace. After the `join`/`leave` events it explains. */
  presence: PresenceDetail;
  /** A user came online in a presence room (their first connection; not for the users of
   * the first snapshot after a join, nor for users who stayed across a reconnect). */
  join: { room: string; user: string; info: PresenceUser["info"] };
  /** A user went offline in a presence room (their last connection, after the server's grace). */
  leave: { room: string; user: string; info: PresenceUser["info"] };
}

export type WSClientState = "connecting" | "open" | "waiting" | "closed";

/** Why a request was rejected: `not_joined`, `no_presence`, `timeout`, `closed`... */
export class RequestError extends Error {
  readonly code: string;
  readonly detail: string;
}

/** Why a publish was rejected. `fate`: "not_delivered" (never sent, or refused by the
 * server) or "unknown" (sent, but the acknowledgement never came). */
export class PublishError extends RequestError {
  readonly fate: "not_delivered" | "unknown";
}

export class WSClient {
  /** `url`: `/ws/<room>` (relative to the page) or `ws(s)://host/ws/<room>`. */
  constructor(url: string | URL, options?: WSClientOptions);
  /** The URL's room, joined by the handshake. */
  readonly room: string;
  readonly state: WSClientState;
  readonly connectionId: string | null;
  readonly rooms: string[];
  /** The last (epoch, offset) processed in a history room, or null. */
  position(room: string): Position | null;
  on<K extends keyof WSClientEvents>(
    event: K,
    listener: (detail: WSClientEvents[K]) => void,
    filter?: { room?: string },
  ): () => void;
  /** Resolves with the server's ack (`offset` is null outside history rooms). */
  publish(
    room: string | undefined,
    data: unknown,
    options?: { timeout?: number },
  ): Promise<{ room: string; offset: number | null }>;
  join(room: string): Promise<WSClientEvents["joined"]>;
  /** Who is online in a presence room (`undefined`: the URL room): a fresh object, or null
   * when it is not a presence room, has no snapshot yet, or its snapshot was truncated. */
  presence(room?: string): PresenceUsers | null;
  /** The counts of a presence room's last snapshot, or null before one. */
  presenceCount(room?: string): (PresenceCount & { truncated: boolean }) | null;
  /** The room's counts now, asked of the server (a member's `presence_stats` command). Sent
   * once the room is joined, again after a reconnect; rejects with a `RequestError`. */
  presenceStats(
    room?: string,
    options?: { timeout?: number },
  ): Promise<{ room: string; users: number; connections: number }>;
  /** A fresh snapshot (the `presence` command): applied like any snapshot (events for what
   * changed), then resolved with the `presence` detail; rejects with a `RequestError`. */
  refreshPresence(room?: string, options?: { timeout?: number }): Promise<PresenceDetail>;
  leave(room: string): void;
  close(code?: number, reason?: string): void;
}

/** Full-jitter exponential backoff: a delay in [0, min(backoffMax, backoffMin * 2^attempt)). */
export function backoffDelay(
  attempt: number,
  options?: { backoffMin?: number; backoffMax?: number; random?: () => number },
): number;

/** The pause before reconnect `attempt` (0 first) after close `code` (4029 adds
 * `rateLimitPause`). */
export function reconnectDelay(
  code: number,
  attempt: number,
  options?: {
    backoffMin?: number;
    backoffMax?: number;
    rateLimitPause?: number;
    random?: () => number;
  },
): number;
