/*
 * django_websocket's browser client: a WebSocket that reconnects, resumes where it
 * left off, and keeps track of who is in its channels.
 *
 * Plain ES2017, no build step. TypeScript declarations: websocket.d.ts (this global),
 * websocket.esm.d.ts (the module). Load it as a classic script, which defines the
 * global DjangoWebSocket, or import it from websocket.esm.js (an ES module that
 * imports this file for its side effect: keep this file valid module code too, strict
 * and reaching the global object through globalThis):
 *
 *   <script type="module">
 *     import { DjangoWebSocket } from "{% static 'django_websocket/websocket.esm.js' %}";
 *   </script>
 *
 * As a classic script:
 *
 *   <script src="{% static 'django_websocket/websocket.js' %}"></script>
 *   {{ since|json_script:"since" }}   <!-- {"chat:lobby": last_id("chat:lobby")}, read before the page's data -->
 *   <script>
 *     const socket = new DjangoWebSocket("{% websocket_url 'chat' room.name %}", {
 *       json: true,                                  // onmessage gets parsed JSON
 *       onmessage(data, event, meta) { ... },        // meta: {channel, id} for channel messages
 *       onopen(event) { ... },                       // after every (re)connection
 *       onclose(event, willReconnect) { ... },
 *       onstatus(status) { ... },                    // "connecting", "open", "reconnecting in 3s", "closed"
 *       maxDelay: 30000,                             // cap of the reconnection delay, in ms
 *       since: JSON.parse(document.getElementById("since").textContent),
 *       ongap(channel, id) { ... },                  // messages were lost: reload the state
 *       onpresence(channel, members) { ... },        // [{user, name, connections}, ...] by name
 *       token: () => fetch("/socket-token/").then((r) => r.json()).then((r) => r.token),
 *     });
 *     socket.sendJSON({message: "hi"});              // false when not open: nothing is queued
 *     socket.sendJSON({message: "hi"}, {ack: true})  // a promise: resolved once the server processed it
 *       .then(() => ..., (error) => ...);            // rejected on a nack (error.message) or close()
 *     socket.lastId("chat:lobby");                   // the last id seen, or null
 *     socket.presence("chat:lobby");                 // what onpresence got last
 *     socket.url = newUrl; socket.reconnect();       // connect again now (resuming)
 *     socket.close();                                // for good: no more reconnections
 *   </script>
 *
 * Reconnection: after an unexpected close the next attempt waits a random delay
 * between 0 and min(maxDelay, 500 ms * 2^attempt) ("full jitter", so that clients
 * dropped together by a restarting server do not come back together). A successful
 * open resets the attempt count. Closes that mean "do not come back" end it for good:
 * 1000 (the server finished on purpose), 1008 (policy violation), 4403 (the view
 * raised PermissionDenied) and 4404 (Http404); see DjangoWebSocket.FINAL_CODES.
 * Everything else reconnects: 1001 (going away), 1006 (dropped, or a handshake the
 * server refused with an HTTP status: browsers cannot tell those apart), 1011
 * (server error), 1012 (restart), 1013 (slow consumer: try again later). After 1012
 * (a reload: the server closes only once its new workers are ready, spread over a
 * second) the client comes back within RESTART_DELAY (250 ms), attempts reset.
 *
 * Tokens (docs/howto/authentication.md): a client without the session cookie
 * authenticates with a token from django_websocket.tokens.websocket_token(). The
 * token option is the token (a string) or a function returning one, or a promise
 * of one; a function is called before every (re)connection, so each attempt gets a
 * fresh token (tokens expire within a minute by default). The token travels in
 * the Sec-WebSocket-Protocol header, never in the URL: the client offers the
 * subprotocols "django-websocket" and "django-websocket.token.<token>" after those
 * of the protocols option, and the server (WebSocketTokenMiddleware) selects
 * "django-websocket" unless the view selects one of its own. A token that is
 * empty or null (or a function that throws or rejects: the attempt is counted as
 * failed and retried later) connects without one. A refused token (HTTP 401) looks
 * like any failed connection to the page: close code 1006, then a retry.
 *
 * Plain messages are not queued while disconnected: send() returns false instead. What
 * the client missed comes back by itself from views that subscribe with
 * resume=True (below); for anything else, onopen is the place to reload.
 *
 * Acknowledged messages (docs/topics/channels.md, django_websocket.acks): send(text,
 * {ack: true}) and sendJSON(obj, {ack: true}) return a promise instead of a boolean. The
 * message goes out as {"ws": "send", "id", "data": text} (text only: binary data is refused
 * with a TypeError) and stays in an outbox until the server answers {"ws": "ack", "id"}
 * (the promise resolves) or {"ws": "nack", "id", "error"} (it rejects with an Error whose
 * message is the error; never resent). While disconnected it waits there; after every
 * (re)connection, before onopen, the whole outbox is sent again, in order, so it precedes
 * anything sent later. Resends keep their id: a view that deduplicates by id processes
 * each message once (acknowledging it again when its ack was lost). No timer resends on a
 * live connection: TCP delivers the frame or the connection fails, and a view that fails
 * closes it. The outbox is in memory: a page that reloads loses what was unacknowledged
 * (sessionStorage would keep the data but not the promises, and two tabs restored from
 * one session would share it). close() for good, and a final close code, reject what is
 * pending with an Error "closed". Ids: a random UUID per client, then a counter.
 *
 * History, resume and presence (docs/topics/history.md): a view's
 * websocket.subscribe(channel, forward=True, resume=True, presence=...) makes the
 * server send JSON text frames with a "ws" key. This client consumes them; they
 * never reach onmessage:
 *
 * - {"ws": "message", "channel", "id", "data"}: onmessage(data, event, {channel, id})
 *   gets the message as published, as if it had come alone: a published str as
 *   that string (parsed first when json is on, as a text frame would be), anything
 *   else parsed (json on) or as its JSON text (json off). With "binary": true the
 *   next frame, binary, is the data (an ArrayBuffer). Other frames (what the view
 *   sends itself) go to onmessage(data, event) as before.
 * - The last id per channel, from "message", "subscribed" and "gap" frames, is the
 *   client's position: every (re)connection adds one since=<channel>@<id> query
 *   parameter per channel to the URL (URL-encoded; other parameters of the URL are
 *   kept, its own since for those channels replaced), so the server replays what
 *   came after, exactly once, before live messages. The since option ({channel:
 *   id}) seeds the positions: a page reads last_id(channel) *before* the state it
 *   renders, so its first connection gets what was published after the render (an
 *   empty id, a channel without history, is no position). lastId(channel) is the
 *   position, or null before any.
 * - {"ws": "gap", "channel", "id"}: the position was no longer in the history (or
 *   the server lost messages): ongap(channel, id) should reload the state some other
 *   way; id is the new position.
 * - {"ws": "presence" | "presence_diff" | "join" | "leave"}: the channel's members, one
 *   per connection ("conn"). "presence" replaces the list; "presence_diff" carries the
 *   "leaves" and "joins" of about a tenth of a second at once (the server batches them:
 *   a room of N members costs each member a frame per window, not one per join);
 *   a join of a listed connection and a leave of an unlisted one are ignored. After each
 *   frame that changes the list onpresence(channel,
 *   members) gets the list aggregated by user and name: [{user, name, connections},
 *   ...] sorted by name, then user, in code point order (other fields a view adds
 *   come from the group's first connection); presence(channel) returns the same
 *   ([] when unknown).
 *   While disconnected, the last list stays; the next connection's "presence"
 *   frame replaces it.
 */
(function (global) {
  "use strict";

  const BASE_DELAY = 500;
  /** Close code of a server restart (a reload), and the ceiling of the delay after it, in ms. */
  const SERVICE_RESTART = 1012;
  const RESTART_DELAY = 250;
  /** The subprotocol offered beside a token ("django-websocket.token.<token>"), selected by the server. */
  const TOKEN_PROTOCOL = "django-websocket";

  function noop() {}

  /** A random prefix for this client's message ids, unique across pages and tabs. */
  function randomPrefix() {
    const crypto = global.crypto;
    if (crypto && typeof crypto.randomUUID === "function") {
      return crypto.randomUUID();
    }
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
  }

  /** The since query parameter's value of *channel* at *id* ("@" never occurs in channel names). */
  function sinceValue(channel, id) {
    return channel + "@" + id;
  }

  /** The channel named by a since query parameter's (encoded) value, or null. */
  function sinceChannel(encoded) {
    let value;
    try {
      value = decodeURIComponent(encoded.replace(/\+/g, " "));
    } catch (error) {
      return null;
    }
    const at = value.lastIndexOf("@");
    return at === -1 ? null : value.slice(0, at);
  }

  /** The rows presence() returns: connections grouped by user and name, sorted by name then user. */
  function aggregate(connections) {
    const groups = new Map();
    for (const member of connections.values()) {
      const key = JSON.stringify([member.user === undefined ? null : member.user, member.name]);
      const group = groups.get(key);
      if (group) {
        group.connections += 1;
      } else {
        const row = Object.assign({}, member, {connections: 1});
        delete row.conn;
        groups.set(key, row);
      }
    }
    const order = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    return Array.from(groups.values()).sort(
      (a, b) => order(String(a.name), String(b.name)) || order(String(a.user), String(b.user))
    );
  }

  class DjangoWebSocket {
    /**
     * Connect to *url* at once. Options (all optional): onmessage(data, event, meta),
     * onopen(event), onclose(event, willReconnect), onstatus(status), json (false),
     * maxDelay (30000 ms), protocols (passed to WebSocket), since ({channel: id}: the
     * positions to resume from), ongap(channel, id), onpresence(channel, members),
     * token (a string, or a function returning a string or a promise of one, called
     * before every connection).
     */
    constructor(url, options = {}) {
      this.url = url;
      this.json = Boolean(options.json);
      this.maxDelay = options.maxDelay === undefined ? 30000 : options.maxDelay;
      this.protocols = options.protocols;
      this.token = options.token;
      this.onmessage = options.onmessage || noop;
      this.onopen = options.onopen || noop;
      this.onclose = options.onclose || noop;
      this.onstatus = options.onstatus || noop;
      this.ongap = options.ongap || noop;
      this.onpresence = options.onpresence || noop;
      this.status = null; // _connect() sets "connecting" (and tells onstatus)
      this.socket = null;
      this._attempt = 0;
      this._timer = null;
      this._stopped = false;
      this._positions = new Map(); // channel -> last id seen
      this._members = new Map(); // channel -> Map(conn -> member)
      this._binary = null; // {channel, id} of a "binary" message frame awaiting its data frame
      this._connection = 0; // counts _connect() calls: a token arriving for an older one is dropped
      this._outbox = new Map(); // id -> {frame, resolve, reject}, in send order: unacknowledged messages
      this._idPrefix = randomPrefix();
      this._sent = 0; // acknowledged messages sent: the ids' counter
      for (const [channel, id] of Object.entries(options.since || {})) {
        this._remember(channel, id);
      }
      this._connect();
    }

    /** The delay before reconnection *attempt* (0, 1, 2…), in ms: full jitter below an exponential cap. */
    static delay(attempt, maxDelay = 30000, random = Math.random) {
      const ceiling = Math.min(maxDelay, BASE_DELAY * Math.pow(2, attempt));
      return Math.floor(random() * ceiling);
    }

    /** The underlying WebSocket's readyState (WebSocket.CLOSED between connections). */
    get readyState() {
      return this.socket ? this.socket.readyState : WebSocket.CLOSED;
    }

    /** The id of the last message of *channel* this client has (its resume position), or null. */
    lastId(channel) {
      const id = this._positions.get(channel);
      return id === undefined ? null : id;
    }

    /** *channel*'s members, [{user, name, connections}, ...] sorted by name; [] when unknown. */
    presence(channel) {
      const connections = this._members.get(channel);
      return connections ? aggregate(connections) : [];
    }

    /** The URL of the next connection: this.url with a since parameter per known position. */
    connectionUrl() {
      if (!this._positions.size) {
        return this.url;
      }
      const hash = this.url.indexOf("#");
      const base = hash === -1 ? this.url : this.url.slice(0, hash);
      const question = base.indexOf("?");
      const path = question === -1 ? base : base.slice(0, question);
      const kept = question === -1 ? [] : base.slice(question + 1).split("&").filter((part) => {
        if (!part) {
          return false;
        }
        const equals = part.indexOf("=");
        if (equals === -1 || part.slice(0, equals) !== "since") {
          return true;
        }
        return !this._positions.has(sinceChannel(part.slice(equals + 1)));
      });
      const since = Array.from(this._positions, ([channel, id]) =>
        "since=" + encodeURIComponent(sinceValue(channel, id)));
      return path + "?" + kept.concat(since).join("&");
    }

    /**
     * Send a string, Blob or ArrayBuffer; return false (and send nothing) unless open.
     * With {ack: true}: send a string acknowledged, return a promise (see the header).
     */
    send(data, options) {
      if (options && options.ack) {
        return this._sendAcked(data);
      }
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        return false;
      }
      this.socket.send(data);
      return true;
    }

    /** Send *obj* as JSON text; return false (and send nothing) unless open; {ack: true} as send(). */
    sendJSON(obj, options) {
      return this.send(JSON.stringify(obj), options);
    }

    /** How many acknowledged messages wait for their ack (or nack). */
    get unacknowledged() {
      return this._outbox.size;
    }

    _sendAcked(data) {
      if (typeof data !== "string") {
        return Promise.reject(new TypeError("acknowledged messages are text"));
      }
      if (this._stopped) {
        return Promise.reject(new Error("closed"));
      }
      this._sent += 1;
      const id = this._idPrefix + "-" + this._sent;
      const frame = JSON.stringify({ws: "send", id, data});
      return new Promise((resolve, reject) => {
        this._outbox.set(id, {frame, resolve, reject});
        if (this.socket && this.socket.readyState === WebSocket.OPEN) {
          this.socket.send(frame); // otherwise the next open sends it
        }
      });
    }

    /** Send the outbox again, in order (after an open: before anything newer). */
    _resend() {
      for (const entry of this._outbox.values()) {
        this.socket.send(entry.frame);
      }
    }

    /** Settle message *id* with an ack (*error* undefined) or a nack; an unknown id is a late duplicate. */
    _answered(id, error) {
      const entry = this._outbox.get(id);
      if (!entry) {
        return;
      }
      this._outbox.delete(id);
      if (error === undefined) {
        entry.resolve();
      } else {
        entry.reject(new Error(String(error)));
      }
    }

    /** Reject every pending acknowledged message: the client stopped for good. */
    _abandon() {
      const pending = Array.from(this._outbox.values());
      this._outbox.clear();
      pending.forEach((entry) => entry.reject(new Error("closed")));
    }

    /** Close for good: no reconnection afterwards, status "closed". */
    close(code = 1000, reason = "") {
      this._stopped = true;
      clearTimeout(this._timer);
      if (this.socket && this.socket.readyState < WebSocket.CLOSING) {
        this.socket.close(code, reason);
      }
      this._setStatus("closed");
      this._abandon();
    }

    /**
     * Drop the current connection and connect again at once (to this.url, which may have
     * changed), resuming from the current positions. Does nothing after close().
     */
    reconnect() {
      if (this._stopped) {
        return;
      }
      clearTimeout(this._timer);
      const previous = this.socket;
      this.socket = null; // its close event is then ignored: see _closed()
      if (previous && previous.readyState < WebSocket.CLOSING) {
        previous.close(1000, "reconnecting");
      }
      this._attempt = 0;
      this._connect();
    }

    /** The subprotocols to offer: the protocols option, then the token's pair when there is one. */
    protocolsWith(token) {
      const protocols = this.protocols === undefined ? [] : [].concat(this.protocols);
      if (token) {
        protocols.push(TOKEN_PROTOCOL, TOKEN_PROTOCOL + ".token." + token);
      }
      return protocols.length ? protocols : undefined;
    }

    _connect() {
      this._timer = null;
      this._binary = null;
      this._setStatus("connecting");
      if (typeof this.token !== "function") {
        this._open(this.token);
        return;
      }
      const connection = ++this._connection;
      const current = () => connection === this._connection && !this._stopped;
      new Promise((resolve) => resolve(this.token())).then(
        (token) => {
          if (current()) {
            this._open(token);
          }
        },
        (error) => {
          if (current()) {
            console.error("DjangoWebSocket: the token function failed:", error);
            this._retry();
          }
        }
      );
    }

    _open(token) {
      const socket = new WebSocket(this.connectionUrl(), this.protocolsWith(token));
      socket.binaryType = "arraybuffer";
      socket.onopen = (event) => {
        this._attempt = 0;
        this._setStatus("open");
        if (socket === this.socket) {
          this._resend();
        }
        this.onopen(event);
      };
      socket.onmessage = (event) => {
        if (socket === this.socket) {
          this._received(event);
        }
      };
      socket.onclose = (event) => this._closed(socket, event);
      this.socket = socket;
    }

    _received(event) {
      const pending = this._binary;
      this._binary = null;
      if (pending && typeof event.data !== "string") {
        this._remember(pending.channel, pending.id);
        this.onmessage(event.data, event, pending);
        return;
      }
      const frame = this._protocolFrame(event.data);
      if (frame === null) {
        this.onmessage(this._decode(event.data), event);
      } else {
        this._handleFrame(frame, event);
      }
    }

    /** The library's own frame in *data* (a JSON object with a "ws" key), or null. */
    _protocolFrame(data) {
      if (typeof data !== "string" || data.indexOf('"ws"') === -1) {
        return null; // cheap test first: most frames are not ours
      }
      let frame;
      try {
        frame = JSON.parse(data);
      } catch (error) {
        return null;
      }
      const isObject = frame !== null && typeof frame === "object" && !Array.isArray(frame);
      if (!isObject || typeof frame.ws !== "string") {
        return null;
      }
      const answer = (frame.ws === "ack" || frame.ws === "nack") && typeof frame.id === "string";
      return answer || typeof frame.channel === "string" ? frame : null;
    }

    _handleFrame(frame, event) {
      const channel = frame.channel;
      switch (frame.ws) {
        case "ack":
          this._answered(frame.id);
          return;
        case "nack":
          this._answered(frame.id, frame.error === undefined ? "refused" : frame.error);
          return;
        case "message":
          if (frame.binary) {
            this._binary = {channel, id: frame.id}; // the data is the next frame
            return;
          }
          this._remember(channel, frame.id);
          this.onmessage(this._unwrap(frame.data), event, {channel, id: frame.id});
          return;
        case "subscribed":
          this._remember(channel, frame.id);
          return;
        case "gap":
          this._remember(channel, frame.id);
          this.ongap(channel, frame.id);
          return;
        case "presence":
          this._members.set(channel, new Map((frame.members || []).map((member) => [member.conn, member])));
          this._presenceChanged(channel);
          return;
        case "presence_diff": {
          const changed = (frame.leaves || []).map((member) => this._joinOrLeave(channel, false, member))
            .concat((frame.joins || []).map((member) => this._joinOrLeave(channel, true, member)));
          if (changed.includes(true)) {
            this._presenceChanged(channel);
          }
          return;
        }
        case "join":
        case "leave":
          if (this._joinOrLeave(channel, frame.ws === "join", frame.member || {})) {
            this._presenceChanged(channel);
          }
          return;
        default:
          return; // a kind of frame this version does not know: not the application's either
      }
    }

    _remember(channel, id) {
      if (typeof id === "string" && id) {
        this._positions.set(channel, id); // "" (history off): nothing to resume from
      }
    }

    /** Apply one join or leave to channel's list; true if it changed the list. */
    _joinOrLeave(channel, joined, member) {
      if (!this._members.has(channel)) {
        this._members.set(channel, new Map());
      }
      const connections = this._members.get(channel);
      if (joined === connections.has(member.conn)) {
        return false; // a join of a listed connection, or a leave of an unlisted one
      }
      if (joined) {
        connections.set(member.conn, member);
      } else {
        connections.delete(member.conn);
      }
      return true;
    }

    _presenceChanged(channel) {
      this.onpresence(channel, this.presence(channel));
    }

    /** A "message" frame's data, as onmessage would have got the message in a frame of its own. */
    _unwrap(data) {
      if (typeof data === "string") {
        return this._decode(data); // a published str: the text of its frame
      }
      return this.json ? data : JSON.stringify(data);
    }

    _decode(data) {
      if (!this.json || typeof data !== "string") {
        return data;
      }
      try {
        return JSON.parse(data);
      } catch (error) {
        return data; // not JSON: hand over the text as it came
      }
    }

    _closed(socket, event) {
      if (socket !== this.socket) {
        return; // a socket replaced already (close() then a new DjangoWebSocket…)
      }
      const willReconnect = !this._stopped && !DjangoWebSocket.FINAL_CODES.includes(event.code);
      this.onclose(event, willReconnect);
      if (!willReconnect) {
        this._stopped = true;
        this._setStatus("closed");
        this._abandon();
        return;
      }
      if (event.code === SERVICE_RESTART) {
        // A reload: the server waited for its new workers and spreads its closes over a
        // second, so come back promptly, jitter only, whatever failed before.
        this._attempt = 0;
        this._retry(RESTART_DELAY);
        return;
      }
      this._retry();
    }

    /** Schedule the next connection attempt after the backoff delay (or a random one below *ceiling* ms). */
    _retry(ceiling) {
      const delay = ceiling === undefined
        ? DjangoWebSocket.delay(this._attempt, this.maxDelay)
        : Math.floor(Math.random() * ceiling);
      this._attempt += 1;
      this._setStatus("reconnecting in " + Math.ceil(delay / 1000) + "s");
      this._timer = setTimeout(() => this._connect(), delay);
    }

    _setStatus(status) {
      if (status !== this.status) {
        this.status = status;
        this.onstatus(status);
      }
    }
  }

  /** Close codes after which the client does not reconnect. */
  DjangoWebSocket.FINAL_CODES = [1000, 1008, 4403, 4404];

  global.DjangoWebSocket = DjangoWebSocket;
  // `this` is undefined when websocket.esm.js imports this file as a module: globalThis first.
})(typeof globalThis !== "undefined" ? globalThis : this);
