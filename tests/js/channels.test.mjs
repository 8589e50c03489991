// Unit tests of channels.js, run by `node --test tests/js/` (make test): backoff, the
// offline buffer, request/reply by ref, recovery positions and the presence list. The
// WebSocket is a scripted stand-in and time is Node's mock clock: no sleeping, no network
// (the browser tests in examples/chat drive the real thing).

import assert from "node:assert/strict";
import {afterEach, beforeEach, describe, mock, test} from "node:test";

import {
  ChannelsError,
  DEFAULTS,
  Presence,
  SendBuffer,
  Socket,
  backoffDelay,
} from "../../channels/static/channels/channels.js";

class FakeWebSocket {
  static instances = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.instances.push(this);
  }

  send(text) {
    assert.equal(this.readyState, 1, "send() on a socket that is not open");
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closedWith = {code, reason};
    this.readyState = 3;
  }

  // What the server does:
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame) {
    this.onmessage?.({data: typeof frame === "string" ? frame : JSON.stringify(frame)});
  }

  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({code, reason: "", wasClean: false});
  }

  static last() {
    return FakeWebSocket.instances.at(-1);
  }
}

function socketWith(options = {}) {
  return new Socket("ws://server/ws/", {WebSocket: FakeWebSocket, random: () => 0, ...options});
}

beforeEach(() => {
  FakeWebSocket.instances = [];
  mock.timers.enable({apis: ["setTimeout"]});
});
afterEach(() => mock.timers.reset());

describe("backoff", () => {
  test("grows by factor from minDelay and stops at maxDelay", () => {
    const delays = [1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, DEFAULTS, () => 0));
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
  });

  test("jitter takes off at most its fraction, never adds", () => {
    const options = {minDelay: 1000, maxDelay: 1000, factor: 2, jitter: 0.25};
    assert.equal(backoffDelay(3, options, () => 0), 1000);
    assert.equal(backoffDelay(3, options, () => 0.999999), 750);
    for (let i = 0; i < 200; i++) {
      const delay = backoffDelay(1 + (i % 9), options);
      assert.ok(delay >= 750 && delay <= 1000, `delay ${delay} out of bounds`);
    }
  });

  test("reconnects after each drop with the growing delay, and resets once open", () => {
    const socket = socketWith({minDelay: 100, maxDelay: 1000});
    const reconnects = [];
    socket.on("reconnect", (info) => reconnects.push(info));
    FakeWebSocket.last().drop();
    assert.equal(FakeWebSocket.instances.length, 1);
    mock.timers.tick(99);
    assert.equal(FakeWebSocket.instances.length, 1);
    mock.timers.tick(1);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last().drop();
    mock.timers.tick(200);
    assert.equal(FakeWebSocket.instances.length, 3);
    const opened = [];
    socket.on("open", (info) => opened.push(info));
    FakeWebSocket.last().open();
    assert.deepEqual(opened, [{reconnected: false, attempt: 2}]);
    FakeWebSocket.last().drop();
    assert.deepEqual(reconnects.map((r) => r.delay), [100, 200, 100]);
    mock.timers.tick(100);
    FakeWebSocket.last().open();
    assert.deepEqual(opened.at(-1), {reconnected: true, attempt: 1});
  });

  test("an attempt that does not open within connectTimeout is abandoned and retried", () => {
    socketWith({connectTimeout: 1000, minDelay: 10});
    const first = FakeWebSocket.last();
    mock.timers.tick(1000);
    assert.deepEqual(first.closedWith, {code: undefined, reason: undefined});
    mock.timers.tick(10);
    assert.equal(FakeWebSocket.instances.length, 2);
  });

  test("close() stops reconnecting; shouldReconnect can refuse", () => {
    const socket = socketWith();
    FakeWebSocket.last().open();
    socket.close();
    mock.timers.tick(60000);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(socket.state, "closed");

    const refusing = socketWith({shouldReconnect: (event) => event.code !== 4003});
    FakeWebSocket.last().drop(4003);
    mock.timers.tick(60000);
    assert.equal(refusing.state, "closed");
    assert.equal(FakeWebSocket.instances.length, 2);
  });

  test("close() refuses a code the WebSocket API refuses, before changing anything", () => {
    const socket = socketWith();
    FakeWebSocket.last().open();
    assert.throws(() => socket.close(1001), /close\(\) codes are 1000 or 3000-4999, got 1001/);
    assert.equal(socket.state, "open");
    socket.close(4000);
    assert.equal(FakeWebSocket.last().closedWith.code, 4000);
  });

  test("unknown options are refused by name", () => {
    assert.throws(() => socketWith({bufferLimt: 3}), /Unknown Socket option "bufferLimt"/);
  });
});

describe("offline buffer", () => {
  test("frames sent while down wait, in order, and go out on open", () => {
    const socket = socketWith();
    const chat = socket.stream("chat");
    assert.equal(chat.send({n: 1}), "buffered");
    assert.equal(socket.send({plain: true}), "buffered");
    FakeWebSocket.last().open();
    assert.deepEqual(FakeWebSocket.last().sent, [
      {stream: "chat", payload: {n: 1}},
      {plain: true},
    ]);
    assert.equal(chat.send({n: 2}), "sent");
    assert.equal(socket.buffer.size, 0);
  });

  test("the limit throws buffer_full; nothing already buffered is lost", () => {
    const socket = socketWith({bufferLimit: 2});
    socket.send(1);
    socket.send(2);
    assert.throws(
      () => socket.send(3),
      (error) => error instanceof ChannelsError && error.code === "buffer_full",
    );
    FakeWebSocket.last().open();
    assert.deepEqual(FakeWebSocket.last().sent, [1, 2]);
  });

  test("a frame older than bufferTimeout is dropped with a drop event", () => {
    const socket = socketWith({bufferTimeout: 1000});
    const drops = [];
    socket.on("drop", (info) => drops.push(info));
    socket.send("old");
    mock.timers.tick(600);
    socket.send("new");
    mock.timers.tick(400);
    assert.deepEqual(drops, [{text: '"old"', reason: "timeout"}]);
    FakeWebSocket.last().open();
    assert.deepEqual(FakeWebSocket.last().sent, ["new"]);
  });

  test("SendBuffer on its own: remove and drain", () => {
    const expired = [];
    const buffer = new SendBuffer({limit: 3, timeout: 50, onExpire: (item) => expired.push(item)});
    const a = buffer.push("a");
    buffer.push("b");
    assert.equal(buffer.remove(a), true);
    assert.equal(buffer.remove(a), false);
    assert.deepEqual(buffer.drain().map((item) => item.text), ["b"]);
    mock.timers.tick(100);
    assert.deepEqual(expired, []); // drained items never expire
  });
});

describe("request and reply", () => {
  test("a reply with the request's ref resolves it; other frames go to handlers", async () => {
    const socket = socketWith();
    const chat = socket.stream("chat");
    const messages = [];
    chat.on((payload) => messages.push(payload));
    FakeWebSocket.last().open();
    const first = chat.request({q: 1});
    const second = chat.request({q: 2});
    const [frame1, frame2] = FakeWebSocket.last().sent;
    assert.notEqual(frame1.ref, frame2.ref);
    FakeWebSocket.last().receive({stream: "chat", payload: {a: 2}, ref: frame2.ref});
    FakeWebSocket.last().receive({stream: "chat", payload: {broadcast: true}});
    FakeWebSocket.last().receive({stream: "chat", payload: {a: 1}, ref: frame1.ref});
    assert.deepEqual(await first, {a: 1});
    assert.deepEqual(await second, {a: 2});
    assert.deepEqual(messages, [{broadcast: true}]);
  });

  test("a reply on another stream does not resolve it", async () => {
    const socket = socketWith();
    FakeWebSocket.last().open();
    const pending = socket.stream("a").request({}, {timeout: 100});
    const ref = FakeWebSocket.last().sent[0].ref;
    FakeWebSocket.last().receive({stream: "b", payload: "wrong", ref});
    mock.timers.tick(100);
    await assert.rejects(pending, (error) => error.code === "timeout");
  });

  test("no reply within the timeout rejects with timeout", async () => {
    const socket = socketWith();
    FakeWebSocket.last().open();
    const pending = socket.stream("chat").request({}, {timeout: 250});
    mock.timers.tick(250);
    await assert.rejects(pending, (error) => error instanceof ChannelsError && error.code === "timeout");
    // A late reply is then just a message.
    const late = [];
    socket.stream("chat").on((payload) => late.push(payload));
    FakeWebSocket.last().receive({stream: "chat", payload: "late", ref: 1});
    assert.deepEqual(late, ["late"]);
  });

  test("a drop after sending rejects with disconnected; a buffered request survives it", async () => {
    const socket = socketWith({minDelay: 10});
    FakeWebSocket.last().open();
    const inFlight = socket.stream("chat").request({n: 1});
    FakeWebSocket.last().drop();
    await assert.rejects(inFlight, (error) => error.code === "disconnected");
    const waiting = socket.stream("chat").request({n: 2});
    mock.timers.tick(10);
    FakeWebSocket.last().open();
    const sent = FakeWebSocket.last().sent[0];
    assert.deepEqual(sent.payload, {n: 2});
    FakeWebSocket.last().receive({stream: "chat", payload: "ok", ref: sent.ref});
    assert.equal(await waiting, "ok");
  });

  test("the stream's consumer ending rejects its requests with stream_error", async () => {
    const socket = socketWith();
    FakeWebSocket.last().open();
    const errors = [];
    socket.stream("chat").on("error", (info) => errors.push(info));
    const pending = socket.stream("chat").request({});
    FakeWebSocket.last().receive({stream: "chat", error: "crashed"});
    await assert.rejects(pending, (error) => error.code === "stream_error");
    assert.deepEqual(errors, [{error: "crashed", stream: "chat"}]);
  });

  test("a request still buffered when its timeout ends leaves the buffer", async () => {
    const socket = socketWith();
    const pending = socket.stream("chat").request({}, {timeout: 100});
    assert.equal(socket.buffer.size, 1);
    mock.timers.tick(100);
    await assert.rejects(pending, (error) => error.code === "timeout");
    assert.equal(socket.buffer.size, 0);
  });

  test("close() fails the buffered requests with closed", async () => {
    const socket = socketWith();
    const pending = socket.stream("chat").request({});
    socket.close();
    await assert.rejects(pending, (error) => error.code === "closed");
  });
});

describe("recovery", () => {
  const position = (offset, epoch = "e1") => ({epoch, offset});

  test("the last position per group goes in the reconnect URL", () => {
    const socket = socketWith({minDelay: 10});
    assert.equal(FakeWebSocket.last().url, "ws://server/ws/");
    FakeWebSocket.last().open();
    const chat = socket.stream("chat");
    FakeWebSocket.last().receive({
      stream: "chat",
      payload: {group: "room", text: "a", __position__: position(4)},
    });
    FakeWebSocket.last().receive({
      stream: "chat",
      payload: {group: "room", text: "b", __position__: position(5)},
    });
    FakeWebSocket.last().drop();
    mock.timers.tick(10);
    const url = new URL(FakeWebSocket.last().url);
    assert.deepEqual(JSON.parse(url.searchParams.get("positions")), {room: position(5)});
    assert.ok(chat);
  });

  test("duplicates (at or before the last position) are not delivered", () => {
    const socket = socketWith();
    FakeWebSocket.last().open();
    const seen = [];
    socket.stream("chat").on((payload) => seen.push(payload.text));
    for (const [text, offset] of [["a", 1], ["b", 2], ["b", 2], ["a", 1], ["c", 3]]) {
      FakeWebSocket.last().receive({
        stream: "chat",
        payload: {group: "room", text, __position__: position(offset)},
      });
    }
    // A new epoch is a new stream: its offsets start again.
    FakeWebSocket.last().receive({
      stream: "chat",
      payload: {group: "room", text: "z", __position__: position(1, "e2")},
    });
    assert.deepEqual(seen, ["a", "b", "c", "z"]);
  });

  test("recovery: false neither tracks positions nor drops repeats", () => {
    const socket = socketWith({recovery: false, minDelay: 10});
    FakeWebSocket.last().open();
    const seen = [];
    socket.stream("chat").on((payload) => seen.push(payload.text));
    for (const text of ["a", "a"]) {
      FakeWebSocket.last().receive({
        stream: "chat",
        payload: {group: "room", text, __position__: position(1)},
      });
    }
    assert.deepEqual(seen, ["a", "a"]);
    FakeWebSocket.last().drop();
    mock.timers.tick(10);
    assert.equal(FakeWebSocket.last().url, "ws://server/ws/");
  });

  test("__recovery__ frames become recovery events; not recovered adopts the top", () => {
    const socket = socketWith({positions: {room: position(3)}});
    assert.match(FakeWebSocket.last().url, /positions=/);
    FakeWebSocket.last().open();
    const events = [];
    socket.stream("chat").on("recovery", (event) => events.push(event));
    FakeWebSocket.last().receive({
      stream: "chat",
      payload: {__recovery__: {group: "room", recovered: true, position: position(9)}},
    });
    // Recovered: the replay moves the position on, not the frame.
    assert.deepEqual(socket.positions(), {room: position(3)});
    FakeWebSocket.last().receive({
      stream: "chat",
      payload: {__recovery__: {group: "room", recovered: false, position: position(1, "e9")}},
    });
    assert.deepEqual(socket.positions(), {room: position(1, "e9")});
    assert.deepEqual(
      events.map((e) => [e.group, e.recovered, e.stream]),
      [
        ["room", true, "chat"],
        ["room", false, "chat"],
      ],
    );
  });

  test("plain (non-multiplexed) consumers: messages, positions and errors", () => {
    const socket = socketWith();
    FakeWebSocket.last().open();
    const messages = [];
    const errors = [];
    socket.on("message", (message) => messages.push(message));
    socket.on("error", (error) => errors.push(error.error));
    FakeWebSocket.last().receive({group: "g", n: 1, __position__: position(1)});
    FakeWebSocket.last().receive({group: "g", n: 1, __position__: position(1)});
    FakeWebSocket.last().receive({error: "bad frame"});
    FakeWebSocket.last().receive("not json");
    assert.deepEqual(messages.map((m) => m.n), [1]);
    assert.deepEqual(socket.positions(), {g: position(1)});
    assert.equal(errors.length, 2);
  });
});

describe("presence", () => {
  test("snapshot, join and leave keep the list; other groups are ignored", () => {
    const socket = socketWith();
    FakeWebSocket.last().open();
    const presence = new Presence(socket.stream("chat"), "room");
    const changes = [];
    presence.onChange((list) => changes.push(list.map((m) => m.channel)));
    const receive = (payload) => FakeWebSocket.last().receive({stream: "chat", payload});
    receive({type: "presence.snapshot", group: "room", members: {a: {name: "Ann"}}});
    receive({type: "presence.join", group: "room", channel: "b", info: {name: "Bob"}});
    receive({type: "presence.join", group: "other", channel: "x", info: {}});
    receive({type: "presence.leave", group: "room", channel: "a", info: {name: "Ann"}});
    receive({type: "presence.leave", group: "room", channel: "nobody", info: {}});
    assert.deepEqual(changes, [["a"], ["a", "b"], ["b"]]);
    assert.deepEqual(presence.list(), [{channel: "b", info: {name: "Bob"}}]);
    presence.stop();
    receive({type: "presence.join", group: "room", channel: "c", info: {}});
    assert.equal(presence.list().length, 1);
  });
});
