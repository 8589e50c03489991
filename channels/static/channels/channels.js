// channels.js: the browser client of channels-anyio. An ES module with no dependencies
// and no build step; serve it with Django's staticfiles ({% static "channels/channels.js" %}).
//
//   import {Socket, Presence} from "/static/channels/channels.js";
//   const socket = new Socket("/ws/chat/");
//   const chat = socket.stream("chat");
//   chat.on((payload) => show(payload));
//   chat.send({message: "hi"});
//   const answer = await chat.request({do: "ping"}, {timeout: 5000});
//
// A Socket reconnects with jittered exponential backoff, buffers what is sent while it
// is offline, multiplexes streams ({"stream", "payload", "ref"} frames, as
// channels.generic.multiplex speaks them) and remembers the last "__position__" seen per
// group, which it sends back in the URL's query string when it reconnects so that the
// server can replay what was missed. channels.d.ts documents every option and event;
// docs/topics/client.md is the guide.

/** The error every failure of this module is: `code` says which. */
export class ChannelsError extends Error {
  /**
   * @param {"timeout"|"disconnected"|"buffer_full"|"closed"|"stream_error"} code
   * @param {string} message
   * @param {object} [detail]
   */
  constructor(code, message, detail = {}) {
    super(message);
    this.name = "ChannelsError";
    this.code = code;
    this.detail = detail;
  }
}

/** The defaults of every Socket option (see channels.d.ts for their meaning). */
export const DEFAULTS = Object.freeze({
  minDelay: 500,
  maxDelay: 10000,
  factor: 2,
  jitter: 0.5,
  connectTimeout: 5000,
  bufferLimit: 100,
  bufferTimeout: 10000,
  requestTimeout: 10000,
  positionsParam: "positions",
  recovery: true,
  positions: null,
  protocols: undefined,
  shouldReconnect: null,
  WebSocket: null,
  random: null,
});

/**
 * The wait before reconnection attempt `attempt` (1, 2, ...), in milliseconds.
 *
 * The base delay grows from `minDelay` by `factor` per attempt up to `maxDelay`; jitter
 * then takes off up to `jitter` of it at random, so that clients dropped together do not
 * come back together: the delay is within [base * (1 - jitter), base].
 */
export function backoffDelay(attempt, options = DEFAULTS, random = Math.random) {
  const {minDelay, maxDelay, factor, jitter} = {...DEFAULTS, ...options};
  const exponent = Math.max(0, attempt - 1);
  const base = Math.min(maxDelay, minDelay * Math.pow(factor, exponent));
  return Math.round(base * (1 - jitter * random()));
}

/**
 * The frames sent while the socket is down, oldest first: at most `limit` of them, each
 * for at most `timeout` milliseconds, after which `onExpire(item)` is called for it.
 */
export class SendBuffer {
  constructor({limit = DEFAULTS.bufferLimit, timeout = DEFAULTS.bufferTimeout, onExpire} = {}) {
    this.limit = limit;
    this.timeout = timeout;
    this.onExpire = onExpire || (() => {});
    this.items = [];
  }

  get size() {
    return this.items.length;
  }

  /** Queue `text`; throws a "buffer_full" ChannelsError when `limit` frames wait already. */
  push(text, meta = {}) {
    if (this.items.length >= this.limit) {
      throw new ChannelsError(
        "buffer_full",
        `The send buffer is full (${this.limit} frames wait for the connection).`,
        {limit: this.limit},
      );
    }
    const item = {text, meta, timer: null};
    if (this.timeout > 0 && Number.isFinite(this.timeout)) {
      item.timer = setTimeout(() => {
        this.remove(item);
        this.onExpire(item);
      }, this.timeout);
    }
    this.items.push(item);
    return item;
  }

  /** Take `item` out (when its request timed out, say); false if it was not there. */
  remove(item) {
    const index = this.items.indexOf(item);
    if (index < 0) return false;
    this.items.splice(index, 1);
    clearTimeout(item.timer);
    return true;
  }

  /** Every waiting frame, oldest first, and empty the buffer. */
  drain() {
    const items = this.items;
    this.items = [];
    for (const item of items) clearTimeout(item.timer);
    return items;
  }
}

/** A small event emitter: `on(event, handler)` returns a function that unsubscribes. */
class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  on(event, handler) {
    if (typeof handler !== "function") throw new TypeError("on() needs a handler function");
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this.off(event, handler);
  }

  off(event, handler) {
    const handlers = this._handlers.get(event);
    if (handlers) handlers.delete(handler);
  }

  emit(event, ...args) {
    const handlers = this._handlers.get(event);
    if (!handlers) return;
    for (const handler of [...handlers]) {
      try {
        handler(...args);
      } catch (error) {
        // One handler's bug must not stop the others nor the socket: report it async.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function resolveUrl(url) {
  const text = typeof url === "function" ? url() : String(url);
  const location = globalThis.location;
  if (/^wss?:\/\//.test(text) || !location) return new URL(text);
  const resolved = new URL(text, location.href);
  resolved.protocol = resolved.protocol === "https:" ? "wss:" : "ws:";
  return resolved;
}

/**
 * A WebSocket that comes back: reconnects with backoff, buffers sends while offline,
 * carries streams and remembers stream positions for recovery.
 */
export class Socket extends Emitter {
  constructor(url, options = {}) {
    super();
    for (const key of Object.keys(options)) {
      if (!(key in DEFAULTS)) throw new TypeError(`Unknown Socket option ${JSON.stringify(key)}`);
    }
    this.url = url;
    this.options = {...DEFAULTS, ...options};
    this.state = "closed";
    this.attempt = 0;
    this.ws = null;
    this._everOpened = false;
    this._closedByUser = false;
    this._reconnectTimer = null;
    this._connectTimer = null;
    this._nextRef = 1;
    this._pending = new Map(); // ref -> request in flight
    this._streams = new Map();
    this._positions = new Map(Object.entries(this.options.positions || {}));
    this.buffer = new SendBuffer({
      limit: this.options.bufferLimit,
      timeout: this.options.bufferTimeout,
      onExpire: (item) => {
        if (item.meta.request) {
          item.meta.request.fail("timeout");
        } else {
          this.emit("drop", {text: item.text, reason: "timeout"});
        }
      },
    });
    this.connect();
  }

  /** Open the connection (done by the constructor; call again after close()). */
  connect() {
    if (this.ws || this._reconnectTimer) return;
    this._closedByUser = false;
    const WebSocketClass = this.options.WebSocket || globalThis.WebSocket;
    if (!WebSocketClass) throw new TypeError("No WebSocket class: pass options.WebSocket");
    this.state = this._everOpened ? "reconnecting" : "connecting";
    const ws = new WebSocketClass(this.connectUrl(), this.options.protocols);
    this.ws = ws;
    this._connectTimer = setTimeout(() => {
      if (this.ws !== ws) return;
      ws.close(); // even if it opened just now: its open event has not been seen
      this._lost(ws, {code: 1006, reason: "connect timeout", wasClean: false});
    }, this.options.connectTimeout);
    ws.onopen = () => this._opened(ws);
    ws.onmessage = (event) => this._received(ws, event.data);
    ws.onclose = (event) => this._lost(ws, event);
    ws.onerror = () => {}; // a close event follows every error
  }

  /** The URL of the next connection: `url`, plus the positions to recover from. */
  connectUrl() {
    const url = resolveUrl(this.url);
    if (this.options.recovery && this._positions.size) {
      url.searchParams.set(this.options.positionsParam, JSON.stringify(this.positions()));
    }
    return url.toString();
  }

  /** The last position seen per group: {group: {epoch, offset}}. */
  positions() {
    return Object.fromEntries(this._positions);
  }

  /** Close for good (until connect()): no reconnection; waiting sends and requests fail. */
  close(code = 1000, reason = "") {
    // The WebSocket API's rule, checked before anything changes (it would throw midway).
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new TypeError(`close() codes are 1000 or 3000-4999, got ${code}`);
    }
    this._closedByUser = true;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const ws = this.ws;
    if (ws) {
      ws.close(code, reason);
      this._lost(ws, {code, reason, wasClean: true});
    }
    this.state = "closed";
    for (const item of this.buffer.drain()) {
      if (item.meta.request) item.meta.request.fail("closed");
      else this.emit("drop", {text: item.text, reason: "closed"});
    }
  }

  /**
   * Send `data` as one JSON frame (to a plain JSON consumer: streams use stream.send).
   * Returns "sent", or "buffered" while the socket is down.
   */
  send(data) {
    return this._sendText(JSON.stringify(data), {});
  }

  /** The stream `name` of a multiplexed socket (the same object for the same name). */
  stream(name) {
    if (typeof name !== "string" || !name) throw new TypeError("Stream names are non-empty strings");
    if (!this._streams.has(name)) this._streams.set(name, new Stream(this, name));
    return this._streams.get(name);
  }

  _sendText(text, meta) {
    if (this.state === "open" && this.ws && this.ws.readyState === 1) {
      this.ws.send(text);
      if (meta.request) meta.request.sent = true;
      return "sent";
    }
    const item = this.buffer.push(text, meta);
    if (meta.request) meta.request.buffered = item;
    return "buffered";
  }

  _opened(ws) {
    if (this.ws !== ws) return;
    clearTimeout(this._connectTimer);
    const reconnected = this._everOpened;
    const attempt = this.attempt;
    this._everOpened = true;
    this.attempt = 0;
    this.state = "open";
    this.emit("open", {reconnected, attempt});
    // Flush what waited, in order; anything sent by "open" handlers queues behind it.
    for (const item of this.buffer.drain()) {
      ws.send(item.text);
      if (item.meta.request) {
        item.meta.request.sent = true;
        item.meta.request.buffered = null;
      }
    }
  }

  _lost(ws, event) {
    if (this.ws !== ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    clearTimeout(this._connectTimer);
    // Requests already sent have lost the instance that would have answered them.
    for (const request of [...this._pending.values()]) {
      if (request.sent) request.fail("disconnected");
    }
    const reconnect =
      !this._closedByUser &&
      (!this.options.shouldReconnect || this.options.shouldReconnect(event) !== false);
    const info = {
      code: event.code,
      reason: event.reason || "",
      wasClean: Boolean(event.wasClean),
      reconnecting: reconnect,
    };
    this.state = reconnect ? "reconnecting" : "closed";
    this.emit("close", info);
    if (!reconnect) return;
    this.attempt += 1;
    const delay = backoffDelay(this.attempt, this.options, this.options.random || Math.random);
    this.emit("reconnect", {attempt: this.attempt, delay});
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this.connect();
    }, delay);
  }

  _received(ws, data) {
    if (this.ws !== ws) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.emit("error", {error: "The server sent a frame that is not JSON.", data});
      return;
    }
    this.emit("frame", frame);
    if (isObject(frame) && typeof frame.stream === "string") {
      const stream = this._streams.get(frame.stream);
      if ("error" in frame) {
        this._streamError(frame);
        return;
      }
      if (frame.ref !== undefined && this._pending.has(frame.ref)) {
        const request = this._pending.get(frame.ref);
        if (request.stream === frame.stream) {
          request.succeed(frame.payload);
          return;
        }
      }
      if (stream) stream._deliver(frame.payload, frame);
      return;
    }
    if (isObject(frame) && "error" in frame && Object.keys(frame).length === 1) {
      this.emit("error", {error: frame.error});
      return;
    }
    if (this._track(frame, null)) this.emit("message", frame);
  }

  _streamError(frame) {
    const detail = {error: frame.error, stream: frame.stream};
    if (frame.code !== undefined) detail.code = frame.code;
    for (const request of [...this._pending.values()]) {
      if (request.stream === frame.stream && request.sent) request.fail("stream_error", detail);
    }
    const stream = this._streams.get(frame.stream);
    if (stream) stream.emit("error", detail);
    this.emit("error", detail);
  }

  /**
   * Note the recovery state or position a message carries; false for a duplicate (a
   * position at or before the last one seen for its group), which is not delivered.
   */
  _track(message, stream) {
    if (!isObject(message)) return true;
    const recovery = message.__recovery__;
    if (isObject(recovery) && typeof recovery.group === "string") {
      // Recovered: the replay follows and moves the position on. Not recovered: the
      // app reloads its state, and the stream's top is where it starts from.
      if (!recovery.recovered && isObject(recovery.position)) {
        this._positions.set(recovery.group, recovery.position);
      }
      const event = {
        group: recovery.group,
        recovered: Boolean(recovery.recovered),
        position: recovery.position || null,
        stream,
      };
      if (stream) this._streams.get(stream).emit("recovery", event);
      this.emit("recovery", event);
      return false;
    }
    const position = message.__position__;
    if (this.options.recovery && isObject(position) && typeof message.group === "string") {
      const last = this._positions.get(message.group);
      if (last && last.epoch === position.epoch && position.offset <= last.offset) return false;
      this._positions.set(message.group, {epoch: position.epoch, offset: position.offset});
    }
    return true;
  }
}

/** One stream of a multiplexed socket. */
export class Stream extends Emitter {
  constructor(socket, name) {
    super();
    this.socket = socket;
    this.name = name;
  }

  /** on(handler) is on("message", handler); events: "message", "error", "recovery". */
  on(event, handler) {
    if (typeof event === "function") return super.on("message", event);
    return super.on(event, handler);
  }

  /** Send `payload` to the stream's consumer: "sent", or "buffered" while offline. */
  send(payload) {
    return this.socket._sendText(JSON.stringify({stream: this.name, payload}), {});
  }

  /**
   * Send `payload` with a ref; resolves with the payload of the reply carrying the same
   * ref (the consumer's `self.reply()`), rejects with a ChannelsError: "timeout" after
   * `timeout` ms, "disconnected" if the connection drops after it was sent,
   * "stream_error" if the stream's consumer ends, "closed" on socket.close(),
   * "buffer_full" if it cannot even be buffered.
   */
  request(payload, {timeout} = {}) {
    const socket = this.socket;
    const ms = timeout === undefined ? socket.options.requestTimeout : timeout;
    const ref = socket._nextRef++;
    return new Promise((resolve, reject) => {
      const request = {
        stream: this.name,
        sent: false,
        buffered: null,
        timer: null,
        succeed: (value) => {
          finish();
          resolve(value);
        },
        fail: (code, detail = {}) => {
          finish();
          reject(new ChannelsError(code, REQUEST_ERRORS[code](this.name, ms), {ref, ...detail}));
        },
      };
      const finish = () => {
        clearTimeout(request.timer);
        socket._pending.delete(ref);
        if (request.buffered) socket.buffer.remove(request.buffered);
        request.buffered = null;
      };
      socket._pending.set(ref, request);
      request.timer = setTimeout(() => request.fail("timeout"), ms);
      try {
        socket._sendText(JSON.stringify({stream: this.name, payload, ref}), {request});
      } catch (error) {
        finish();
        reject(error);
      }
    });
  }

  _deliver(payload, frame) {
    if (this.socket._track(payload, this.name)) this.emit("message", payload, frame);
  }
}

const REQUEST_ERRORS = {
  timeout: (stream, ms) => `No reply on stream ${JSON.stringify(stream)} within ${ms} ms.`,
  disconnected: (stream) =>
    `The connection dropped before stream ${JSON.stringify(stream)} replied.`,
  stream_error: (stream) => `Stream ${JSON.stringify(stream)} ended before it replied.`,
  closed: () => "The socket was closed before the request was sent.",
};

/**
 * Who is in a group, kept from presence messages arriving on a stream (or a plain
 * socket): {"type": "presence.snapshot", "group", "members": {channel: info}} replaces
 * the list; "presence.join" and "presence.leave" ({"type", "group", "channel", "info"})
 * update it. `onChange(handler)` is called with the list after every change.
 */
export class Presence extends Emitter {
  constructor(source, group = null) {
    super();
    this.group = group;
    this.members = new Map();
    this._unsubscribe = source.on("message", (message) => this.apply(message));
  }

  /** Apply one message; true if it was a presence message for this group. */
  apply(message) {
    if (!isObject(message) || (this.group !== null && message.group !== this.group)) return false;
    if (message.type === "presence.snapshot" && isObject(message.members)) {
      this.members = new Map(Object.entries(message.members));
    } else if (message.type === "presence.join" && typeof message.channel === "string") {
      this.members.set(message.channel, message.info ?? null);
    } else if (message.type === "presence.leave" && typeof message.channel === "string") {
      if (!this.members.delete(message.channel)) return true;
    } else {
      return false;
    }
    this.emit("change", this.list());
    return true;
  }

  /** [{channel, info}], in the order they joined. */
  list() {
    return [...this.members].map(([channel, info]) => ({channel, info}));
  }

  onChange(handler) {
    return this.on("change", handler);
  }

  /** Stop following the source. */
  stop() {
    this._unsubscribe();
  }
}
