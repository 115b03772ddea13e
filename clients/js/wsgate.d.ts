// Types for wsgate.js (served by every wsgate server at GET /wsgate.js).

/** Close codes after which the client reconnects. */
/** The subprotocol a server selects where wsgate itself speaks session frames; `expiring`
 *  is answered with a token only on such a socket. */
export declare const SESSION_PROTOCOL: "wsgate.session.v1";
export declare const RECONNECT_CODES: readonly number[];
export declare function shouldReconnect(code: number): boolean;
/** Delay in ms before reconnect attempt `attempt` (1-based): ≤ 1 s first, at most 30 s. */
export declare function backoffDelay(attempt: number, random?: () => number): number;

export type Via = "subprotocol" | "ticket" | "query" | "message";
export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface WsgateClientOptions {
  /** Called before every connect and on `expiring`; returns the credential. */
  getToken: () => string | Promise<string>;
  /** Where the token travels: `subprotocol` (default, never in a URL), `ticket`
   *  (POST /api/tickets first), `query`, or `message` (first frame). */
  via?: Via;
  /** Reconnect after 1001/1006/1011/1012/1013/1014/4001/4029 (default true). */
  reconnect?: boolean;
  /** The query parameter for `via: "query"` (default `token`). */
  queryParam?: string;
  /** Where to POST for a ticket (default: /api/tickets on the socket's host). */
  ticketUrl?: string;
  /** Whether the endpoint sends a welcome frame (default true; false for proxies). */
  welcome?: boolean;
}

export interface Welcome {
  type: "welcome";
  sub: string;
  session: string;
  expires_at: number | null;
}

export interface Refreshed {
  type: "refreshed";
  expires_at: number | null;
  id?: unknown;
}

export interface ChannelMessage {
  channel: string;
  from: string | null;
  data: unknown;
}

export interface Reconnecting {
  attempt: number;
  delay_ms: number;
  code: number;
}

export interface Closed {
  code: number;
  reason: string;
}

/** Why the server refused a handshake (GET /api/handshake-status): emitted before a final
 *  `closed` when a refusal is one a new attempt will not fix — a 401 after one more try with
 *  a fresh token, or a 403. */
export interface AuthError {
  /** The HTTP status the handshake was answered (401, 403). */
  status: number;
  /** The error code: `invalid_token`, `missing_token`, `insufficient_scope`,
   *  `forbidden_origin`, `too_many_connections` … */
  error: string;
  /** Seconds to wait, for a 429 (which the client waits out itself). */
  retry_after: number | null;
}

export interface ServerFrame {
  type: string;
  id?: unknown;
  [key: string]: unknown;
}

export interface WsgateClientEventMap {
  open: CustomEvent<Welcome | null>;
  /** pubsub: {channel, from, data}; echo: the frame as received. */
  message: CustomEvent<ChannelMessage | string | ArrayBuffer | Blob>;
  refreshed: CustomEvent<Refreshed>;
  reconnecting: CustomEvent<Reconnecting>;
  authError: CustomEvent<AuthError>;
  closed: CustomEvent<Closed>;
  error: CustomEvent<ServerFrame | Error>;
}

export declare class WsgateClient extends EventTarget {
  constructor(url: string, options: WsgateClientOptions);
  readonly url: string;
  readonly state: State;
  /** The last welcome frame (null before the first, or on endpoints without one). */
  readonly welcome: Welcome | null;
  connect(): Promise<Welcome | null>;
  /** Resolves with the `subscribed` frame; rejects with the `error` frame (an Error carrying
   *  its `type`, `code`, `message`, `channel`, `id`). */
  subscribe(channel: string): Promise<ServerFrame>;
  unsubscribe(channel: string): Promise<ServerFrame>;
  publish(channel: string, data: unknown): Promise<ServerFrame>;
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void;
  close(): void;
  addEventListener<K extends keyof WsgateClientEventMap>(
    type: K,
    listener: (ev: WsgateClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}
