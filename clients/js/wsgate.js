// wsgate.js — the browser client every wsgate server serves at GET /wsgate.js.
// An ES module with no dependencies. It connects with a fresh token each time (getToken),
// answers the server's `expiring` notice with a `refresh` so a session is never cut, comes
// back after restarts and network failures with exponential backoff and jitter, and
// re-subscribes every channel it held. Types: wsgate.d.ts beside this file.

/** The subprotocol a server selects where wsgate itself speaks session frames (`welcome`,
 *  `expiring`, `refreshed`). Only on such a socket is an `expiring` answered with a fresh
 *  token: on a proxied socket the frames are the backend's, and an `expiring` there may come
 *  from the backend or from another user it relays — never wsgate. */
export const SESSION_PROTOCOL = "wsgate.session.v1";

/** Close codes after which the client reconnects (with a fresh token). */
export const RECONNECT_CODES = Object.freeze([1001, 1006, 1011, 1012, 1013, 1014, 4001, 4029]);

/** Whether a close with `code` is followed by a reconnect (1000, 1008, 4003 … are final). */
export function shouldReconnect(code) {
  return RECONNECT_CODES.includes(code);
}

/** Delay before reconnect attempt `attempt` (1, 2, …): exponential from 1 s, capped at 30 s,
 *  with "equal jitter" (between half and all of it) so clients do not return in lockstep. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(30000, 1000 * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

const REQUEST_TIMEOUT_MS = 10000;
/** Refreshes closer together than this wait: a token shorter than the server's warning
 *  would otherwise be refreshed in a loop. */
const MIN_REFRESH_GAP_MS = 2000;

export class WsgateClient extends EventTarget {
  /**
   * @param {string} url ws:// or wss:// URL of a wsgate endpoint
   * @param {object} options see wsgate.d.ts
   */
  constructor(url, options = {}) {
    super();
    if (typeof options.getToken !== "function") {
      throw new TypeError("WsgateClient: options.getToken (async () => token) is required");
    }
    this.url = url;
    this.options = {
      via: "subprotocol",
      reconnect: true,
      queryParam: "token",
      welcome: true,
      ...options,
    };
    if (!["subprotocol", "ticket", "query", "message"].includes(this.options.via)) {
      throw new TypeError(`WsgateClient: unknown via "${this.options.via}"`);
    }
    /** @type {"idle"|"connecting"|"open"|"reconnecting"|"closed"} */
    this.state = "idle";
    this.welcome = null;
    this._ws = null;
    this._attempt = 0;
    this._timer = null;
    this._nextId = 1;
    this._pending = new Map();
    this._channels = new Set();
    this._waiters = [];
    this._lastRefresh = 0;
    this._refreshTimer = null;
    /** Whether the current socket's server announced session frames (SESSION_PROTOCOL). */
    this._sessionFrames = false;
    /** A refused handshake (401) was already retried once with a fresh token. */
    this._authRetried = false;
  }

  /** Connects (once; later calls wait for the same connection). Resolves with the welcome
   *  frame; rejects when the client gives up (a final close, a refused ticket, close()). */
  connect() {
    if (this.state === "open") return Promise.resolve(this.welcome);
    const waiting = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (this.state === "idle") this._open();
    if (this.state === "closed") this._settle(new Error("the client is closed"));
    return waiting;
  }

  /** Subscribes (and re-subscribes after every reconnect); resolves on `subscribed`. */
  subscribe(channel) {
    this._channels.add(channel);
    return this._request({ type: "subscribe", channel }).catch((e) => {
      this._channels.delete(channel);
      throw e;
    });
  }

  /** Leaves a channel; resolves on `unsubscribed`. */
  unsubscribe(channel) {
    this._channels.delete(channel);
    return this._request({ type: "unsubscribe", channel });
  }

  /** Publishes `data` (any JSON value); resolves on `published`. */
  publish(channel, data) {
    return this._request({ type: "publish", channel, data });
  }

  /** Sends one frame as is (echo endpoints). Throws unless open. */
  send(data) {
    if (this.state !== "open" || !this._ws) throw new Error("not connected");
    this._ws.send(data);
  }

  /** Closes with 1000; final: no reconnect, `closed` is emitted. */
  close() {
    if (this.state === "closed") return;
    const ws = this._ws;
    this._finish(1000, "closed by the client");
    if (ws && ws.readyState <= 1) ws.close(1000);
  }

  // --- internals -------------------------------------------------------------------------

  async _open() {
    this._setState(this._attempt > 0 ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this.options.getToken();
    } catch (e) {
      this._retryOrFinish(1006, "getToken failed: " + (e && e.message ? e.message : e));
      return;
    }
    if (this.state === "closed") return;
    let url = this.url;
    let protocols = [SESSION_PROTOCOL, "wsgate.v1"];
    const via = this.options.via;
    if (via === "subprotocol") {
      protocols.push("wsgate.bearer." + token);
    } else if (via === "query") {
      url = withParam(url, this.options.queryParam, token);
    } else if (via === "ticket") {
      let res;
      try {
        res = await fetch(this.options.ticketUrl || ticketUrl(this.url), {
          method: "POST",
          headers: { authorization: "Bearer " + token },
        });
      } catch (e) {
        this._retryOrFinish(1006, "ticket request failed");
        return;
      }
      if (this.state === "closed") return;
      if (res.status === 401 || res.status === 403) {
        let body = null;
        try { body = await res.json(); } catch (_) { /* not JSON */ }
        const err = new Error(`ticket refused (${res.status})`);
        err.status = res.status;
        err.body = body;
        this._finish(res.status === 401 ? 4001 : 4003, err.message, err);
        return;
      }
      if (!res.ok) {
        this._retryOrFinish(1013, `ticket request answered ${res.status}`);
        return;
      }
      const { ticket } = await res.json();
      url = withParam(url, "ticket", ticket);
    }
    // Names this attempt, so that if it is refused the server can say why (a browser shows
    // a refused handshake only as a 1006).
    const attempt = newAttempt();
    url = withParam(url, "wsgate_attempt", attempt);
    let ws;
    try {
      ws = new WebSocket(url, protocols);
    } catch (e) {
      this._finish(1008, "bad URL: " + e.message, e);
      return;
    }
    this._ws = ws;
    this._sessionFrames = false;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      this._sessionFrames = ws.protocol === SESSION_PROTOCOL;
      if (via === "message") ws.send(JSON.stringify({ type: "auth", token }));
      if (!this.options.welcome) this._opened(null);
    });
    ws.addEventListener("message", (ev) => this._onFrame(ev.data));
    ws.addEventListener("close", (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._failPending(new Error(`connection closed (${ev.code})`));
      if (this.state === "closed") return;
      if (!opened) {
        this._afterRefusal(attempt, ev.code, ev.reason);
        return;
      }
      this._retryOrFinish(ev.code, ev.reason);
    });
  }

  /** A handshake that never opened: asks the server why (GET /api/handshake-status), then
   *  401 → one more try with a fresh token, and if that is refused too, `authError` and stop;
   *  403 → `authError` and stop; 429 → wait `retry_after`; anything else → back off. */
  async _afterRefusal(attempt, code, reason) {
    let why = null;
    try {
      const res = await fetch(statusUrl(this.url, attempt));
      if (res.ok) why = await res.json();
    } catch (_) { /* no answer: back off as for any lost connection */ }
    if (this.state === "closed") return;
    if (why && why.status === 401 && !this._authRetried) {
      this._authRetried = true;
      this._reconnectIn(0, code);
      return;
    }
    if (why && (why.status === 401 || why.status === 403)) {
      this._emit("authError", why);
      const err = Object.assign(new Error(`handshake refused (${why.status} ${why.error})`), why);
      this._finish(code, why.error, err);
      return;
    }
    if (why && why.status === 429 && why.retry_after > 0) {
      this._reconnectIn(why.retry_after * 1000, code);
      return;
    }
    this._retryOrFinish(code, reason);
  }

  _reconnectIn(delay, code) {
    this._attempt += 1;
    this._setState("reconnecting");
    this._emit("reconnecting", { attempt: this._attempt, delay_ms: delay, code });
    this._timer = setTimeout(() => this._open(), delay);
  }

  _opened(welcome) {
    this._attempt = 0;
    this._authRetried = false;
    this.welcome = welcome;
    this._setState("open");
    this._emit("open", welcome);
    for (const w of this._waiters.splice(0)) w.resolve(welcome);
    for (const channel of this._channels) {
      this._request({ type: "subscribe", channel }).catch((e) => this._emit("error", e));
    }
  }

  _onFrame(data) {
    let frame = null;
    if (typeof data === "string" && data.startsWith("{")) {
      try { frame = JSON.parse(data); } catch (_) { frame = null; }
    }
    const type = frame && typeof frame.type === "string" ? frame.type : null;
    if (type === "welcome") return this._opened(frame);
    // Session frames count only where the server said it speaks them: elsewhere (a proxied
    // backend) they are the application's data, and a token is never sent in answer.
    if (type === "expiring" && this._sessionFrames) return this._refreshSoon();
    if (type === "refreshed" && this._sessionFrames) {
      this._settleRequest(frame);
      return this._emit("refreshed", frame);
    }
    if (type === "message" && "channel" in frame) {
      return this._emit("message", { channel: frame.channel, from: frame.from, data: frame.data });
    }
    if (frame && "id" in frame && this._pending.has(frame.id)) return this._settleRequest(frame);
    if (type === "error") return this._emit("error", frame);
    if (type === "pong" || type === "subscribed" || type === "unsubscribed" || type === "published") return;
    this._emit("message", data); // echo endpoints: the frame as it came
  }

  _refreshSoon() {
    clearTimeout(this._refreshTimer);
    const wait = Math.max(0, this._lastRefresh + MIN_REFRESH_GAP_MS - Date.now());
    this._refreshTimer = setTimeout(() => this._refresh(), wait);
  }

  async _refresh() {
    if (this.state !== "open" || !this._ws || !this._sessionFrames) return;
    this._lastRefresh = Date.now();
    let token;
    try {
      token = await this.options.getToken();
    } catch (e) {
      return this._emit("error", e);
    }
    if (this.state === "open" && this._ws && this._sessionFrames) {
      this._ws.send(JSON.stringify({ type: "refresh", token }));
    }
  }

  _request(frame) {
    if (this.state !== "open" || !this._ws) {
      return Promise.reject(new Error("not connected"));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new Error(`no answer to ${frame.type} within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      this._pending.set(id, { resolve, reject, timer });
      this._ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  _settleRequest(frame) {
    const p = this._pending.get(frame.id);
    if (!p) return;
    this._pending.delete(frame.id);
    clearTimeout(p.timer);
    if (frame.type === "error") {
      // Rejects with the error frame itself (type, code, message, channel, id), as an
      // Error so stack traces and `instanceof Error` work too.
      p.reject(Object.assign(new Error(frame.message || frame.code), frame, { frame }));
    } else {
      p.resolve(frame);
    }
  }

  _failPending(err) {
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
  }

  _retryOrFinish(code, reason) {
    if (this.state === "closed") return;
    if (!this.options.reconnect || !shouldReconnect(code)) {
      this._finish(code, reason);
      return;
    }
    this._reconnectIn(backoffDelay(this._attempt + 1), code);
  }

  _finish(code, reason, error) {
    if (this.state === "closed") return;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    this._setState("closed");
    this._failPending(new Error("the client is closed"));
    this._emit("closed", { code, reason: reason || "" });
    this._settle(error || Object.assign(new Error(`closed (${code}) ${reason || ""}`.trim()), { code }));
  }

  _settle(err) {
    for (const w of this._waiters.splice(0)) w.reject(err);
  }

  _setState(state) {
    this.state = state;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function withParam(url, name, value) {
  const sep = url.includes("?") ? "&" : "?";
  return url + sep + encodeURIComponent(name) + "=" + encodeURIComponent(value);
}

/** `path` on the same host as the socket (ws → http, wss → https), with `search`. */
function httpUrl(wsUrl, path, search = "") {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = path;
  u.search = search;
  return u.toString();
}

/** POST /api/tickets on the same host as the socket. */
function ticketUrl(wsUrl) {
  return httpUrl(wsUrl, "/api/tickets");
}

/** GET /api/handshake-status?attempt=… on the same host as the socket. */
function statusUrl(wsUrl, attempt) {
  return httpUrl(wsUrl, "/api/handshake-status", "?attempt=" + encodeURIComponent(attempt));
}

/** 128 random bits, base64url: names one connection attempt (not a secret). */
function newAttempt() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
