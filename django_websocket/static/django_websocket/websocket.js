/*
 * django_websocket's browser client: a WebSocket that reconnects.
 *
 * Plain ES2017, no build step; load it as a classic script:
 *
 *   <script src="{% static 'django_websocket/websocket.js' %}"></script>
 *   <script>
 *     const socket = new DjangoWebSocket("{% websocket_url 'chat' room.name %}", {
 *       json: true,                                  // onmessage gets parsed JSON
 *       onmessage(data, event) { ... },
 *       onopen(event) { ... },                       // after every (re)connection
 *       onclose(event, willReconnect) { ... },
 *       onstatus(status) { ... },                    // "connecting", "open", "reconnecting in 3s", "closed"
 *       maxDelay: 30000,                             // cap of the reconnection delay, in ms
 *     });
 *     socket.sendJSON({message: "hi"});              // false when not open: nothing is queued
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
 * (server error), 1012 (restart), 1013 (slow consumer: try again later).
 *
 * Messages are not queued while disconnected: send() returns false instead, and
 * what was missed is the application's to reload (onopen is the place).
 */
(function (global) {
  "use strict";

  const BASE_DELAY = 500;

  function noop() {}

  class DjangoWebSocket {
    /**
     * Connect to *url* at once. Options (all optional): onmessage(data, event),
     * onopen(event), onclose(event, willReconnect), onstatus(status), json (false),
     * maxDelay (30000 ms), protocols (passed to WebSocket).
     */
    constructor(url, options = {}) {
      this.url = url;
      this.json = Boolean(options.json);
      this.maxDelay = options.maxDelay === undefined ? 30000 : options.maxDelay;
      this.protocols = options.protocols;
      this.onmessage = options.onmessage || noop;
      this.onopen = options.onopen || noop;
      this.onclose = options.onclose || noop;
      this.onstatus = options.onstatus || noop;
      this.status = null; // _connect() sets "connecting" (and tells onstatus)
      this.socket = null;
      this._attempt = 0;
      this._timer = null;
      this._stopped = false;
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

    /** Send a string, Blob or ArrayBuffer; return false (and send nothing) unless open. */
    send(data) {
      if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
        return false;
      }
      this.socket.send(data);
      return true;
    }

    /** Send *obj* as JSON text; return false (and send nothing) unless open. */
    sendJSON(obj) {
      return this.send(JSON.stringify(obj));
    }

    /** Close for good: no reconnection afterwards, status "closed". */
    close(code = 1000, reason = "") {
      this._stopped = true;
      clearTimeout(this._timer);
      if (this.socket && this.socket.readyState < WebSocket.CLOSING) {
        this.socket.close(code, reason);
      }
      this._setStatus("closed");
    }

    _connect() {
      this._timer = null;
      this._setStatus("connecting");
      const socket = new WebSocket(this.url, this.protocols);
      socket.binaryType = "arraybuffer";
      socket.onopen = (event) => {
        this._attempt = 0;
        this._setStatus("open");
        this.onopen(event);
      };
      socket.onmessage = (event) => {
        this.onmessage(this._decode(event.data), event);
      };
      socket.onclose = (event) => this._closed(socket, event);
      this.socket = socket;
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
        return;
      }
      const delay = DjangoWebSocket.delay(this._attempt, this.maxDelay);
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
})(typeof globalThis !== "undefined" ? globalThis : this);
