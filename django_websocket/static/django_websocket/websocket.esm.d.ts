/**
 * TypeScript declarations of django_websocket's browser client as an ES module,
 * websocket.esm.js:
 *
 *   import { DjangoWebSocket } from "django_websocket/websocket.esm.js";
 *
 * websocket.d.ts declares the same API as the global the classic script defines.
 * The behaviour behind each declaration is described in websocket.js's header comment.
 */

/** A JSON value, as `JSON.parse` returns it. */
export type JSONValue = string | number | boolean | null | JSONValue[] | { [key: string]: JSONValue };

/**
 * What `onstatus` is told and `status` holds: "connecting", "open",
 * "reconnecting in 3s" (the delay rounded up to seconds) or "closed".
 */
export type DjangoWebSocketStatus = "connecting" | "open" | "closed" | `reconnecting in ${number}s`;

/** A token, or nothing: empty and null connect without one. */
export type DjangoWebSocketTokenValue = string | null | undefined;

/**
 * The `token` option: a token (from `django_websocket.tokens.websocket_token()`), or a
 * function returning one or a promise of one, called before every (re)connection so
 * that each attempt has a fresh token. A function that throws or rejects counts as a
 * failed attempt, retried later.
 */
export type DjangoWebSocketToken =
  | DjangoWebSocketTokenValue
  | (() => DjangoWebSocketTokenValue | PromiseLike<DjangoWebSocketTokenValue>);

/** Where a channel message came from: `onmessage`'s third argument, absent for the view's own frames. */
export interface MessageMeta {
  /** The channel it was published to. */
  channel: string;
  /** Its id in the channel's history: the client's new position in that channel. */
  id: string;
}

/** One connection in a channel, as the server announces it ("presence", "join", "leave" frames). */
export interface PresenceConnection {
  /** Identifies the connection. */
  conn: string;
  /** The user's pk, or null for an anonymous user. */
  user: string | number | null;
  /** The username, or the handle the view set with `presence={"name": ...}`. */
  name: string;
  /** Fields the view added to its member dict, passed through. */
  [field: string]: JSONValue | undefined;
}

/**
 * A row of `presence()` and `onpresence`: the channel's connections grouped by user and
 * name, sorted by name, then user. Fields a view adds come from the group's first connection.
 */
export interface PresenceMember {
  /** The user's pk, or null for an anonymous user. */
  user: string | number | null;
  /** The username, or the handle the view set. */
  name: string;
  /** How many of the channel's connections this user and name have. */
  connections: number;
  /** Fields the view added to its member dict. */
  [field: string]: JSONValue | undefined;
}

/** `{"ws": "message"}`: a channel message; with `binary`, the next (binary) frame is its data. */
export interface MessageFrame {
  ws: "message";
  channel: string;
  id: string;
  /** The published message as JSON (a published str arrives as a JSON string); absent when `binary`. */
  data?: JSONValue;
  binary?: true;
}

/** `{"ws": "subscribed"}`: once per subscription, after the replay and before live messages. */
export interface SubscribedFrame {
  ws: "subscribed";
  channel: string;
  /** The position the client now has ("0-0" for an empty channel, "" without history). */
  id: string;
  /** How many messages were replayed. */
  replayed: number;
}

/** `{"ws": "gap"}`: the client's position was no longer in the history: reload the state. */
export interface GapFrame {
  ws: "gap";
  channel: string;
  /** The new position. */
  id: string;
}

/** `{"ws": "presence"}`: the channel's full member list, one entry per connection. */
export interface PresenceFrame {
  ws: "presence";
  channel: string;
  members: PresenceConnection[];
}

/** `{"ws": "join"}` / `{"ws": "leave"}`: one connection came or went. */
export interface JoinOrLeaveFrame {
  ws: "join" | "leave";
  channel: string;
  member: PresenceConnection;
}

/** `{"ws": "presence_diff"}`: the connections that left and joined during one batch window. */
export interface PresenceDiffFrame {
  ws: "presence_diff";
  channel: string;
  joins: PresenceConnection[];
  leaves: PresenceConnection[];
}

/** `{"ws": "ack"}`: the server processed acknowledged message *id* (or had before: a resend). */
export interface AckFrame {
  ws: "ack";
  id: string;
}

/** `{"ws": "nack"}`: the server refused acknowledged message *id* for good; it is not resent. */
export interface NackFrame {
  ws: "nack";
  id: string;
  error: string;
}

/** The client's `{"ws": "send"}`: an acknowledged message, resent with the same id until answered. */
export interface SendFrame {
  ws: "send";
  id: string;
  data: string;
}

/** `send()`'s and `sendJSON()`'s second argument. */
export interface SendOptions {
  /** Keep the message until the server acknowledges it, resending after reconnections; returns a promise. */
  ack?: boolean;
}

/**
 * The resume protocol's frames (docs/topics/history.md): JSON text frames with a "ws"
 * key that a view subscribed with `forward=True, resume=True` sends. The client consumes
 * them: they never reach `onmessage` as they are.
 */
export type ProtocolFrame =
  | MessageFrame
  | SubscribedFrame
  | GapFrame
  | PresenceFrame
  | PresenceDiffFrame
  | JoinOrLeaveFrame
  | AckFrame
  | NackFrame;

/**
 * `onmessage`: *data* is the message (see `DjangoWebSocket`'s `Data`), *event* the
 * WebSocket's message event, *meta* the channel and id of a channel message (absent for
 * frames the view sent itself). Called with `this` the client.
 */
export type MessageHandler<Data> = (
  this: DjangoWebSocket<Data>,
  data: Data,
  event: MessageEvent,
  meta?: MessageMeta,
) => void;

/** The constructor's options, all optional. `Data` is what `onmessage` receives. */
export interface DjangoWebSocketOptions<Data = string | ArrayBuffer> {
  /** Parse text frames as JSON before `onmessage` (text that is not JSON is passed as it came). Default false. */
  json?: boolean;
  /** Each message: see {@link MessageHandler}. */
  onmessage?(this: DjangoWebSocket<Data>, data: Data, event: MessageEvent, meta?: MessageMeta): void;
  /** After every (re)connection: the place to reload what resume does not bring back. */
  onopen?(this: DjangoWebSocket<Data>, event: Event): void;
  /** After every close; *willReconnect* is false after `close()` and the final codes. */
  onclose?(this: DjangoWebSocket<Data>, event: CloseEvent, willReconnect: boolean): void;
  /** Each change of `status`. */
  onstatus?(this: DjangoWebSocket<Data>, status: DjangoWebSocketStatus): void;
  /** The cap of the reconnection delay, in ms. Default 30000. */
  maxDelay?: number;
  /** Subprotocols to offer, passed to `WebSocket` (before the token's). */
  protocols?: string | string[];
  /** The positions to resume from, `{channel: id}` (from `last_id()` read when the page was rendered). */
  since?: Record<string, string>;
  /** Messages of *channel* were lost: reload its state some other way; *id* is the new position. */
  ongap?(this: DjangoWebSocket<Data>, channel: string, id: string): void;
  /** *channel*'s members changed; *members* is what `presence(channel)` now returns. */
  onpresence?(this: DjangoWebSocket<Data>, channel: string, members: PresenceMember[]): void;
  /** Authenticate with a token instead of the session cookie: see {@link DjangoWebSocketToken}. */
  token?: DjangoWebSocketToken;
}

/** Options without `json` (or `json: false`): messages arrive as strings and ArrayBuffers. */
export interface DjangoWebSocketTextOptions<Data = string | ArrayBuffer> extends DjangoWebSocketOptions<Data> {
  json?: false;
}

/** Options with `json: true`: text frames arrive parsed. */
export interface DjangoWebSocketJSONOptions<Data = JSONValue | ArrayBuffer> extends DjangoWebSocketOptions<Data> {
  json: true;
}

/**
 * A WebSocket that reconnects (full-jitter backoff), resumes channels where it left
 * off and keeps track of who is in them. Plain messages are not queued while disconnected;
 * acknowledged ones (`send(text, {ack: true})`) wait in an outbox until the server answers.
 *
 * `Data` is what `onmessage` receives: `string | ArrayBuffer` (binary frames) without
 * `json`; with `json: true`, `JSONValue | ArrayBuffer` unless you name the type your
 * view sends (`new DjangoWebSocket<ChatEvent>(...)`), which is your promise, not checked.
 */
export interface DjangoWebSocket<Data = unknown> {
  /** Where the next connection goes (with the since parameters added): change it, then `reconnect()`. */
  url: string;
  /** Whether text frames are parsed as JSON (the `json` option). */
  readonly json: boolean;
  /** The cap of the reconnection delay, in ms. */
  maxDelay: number;
  /** The `protocols` option. */
  protocols: string | string[] | undefined;
  /** The `token` option, read before every connection. */
  token: DjangoWebSocketToken;
  /** The handlers, from the options (a no-op when not given); they may be replaced at any time. */
  onmessage(this: DjangoWebSocket<Data>, data: Data, event: MessageEvent, meta?: MessageMeta): void;
  onopen(this: DjangoWebSocket<Data>, event: Event): void;
  onclose(this: DjangoWebSocket<Data>, event: CloseEvent, willReconnect: boolean): void;
  onstatus(this: DjangoWebSocket<Data>, status: DjangoWebSocketStatus): void;
  ongap(this: DjangoWebSocket<Data>, channel: string, id: string): void;
  onpresence(this: DjangoWebSocket<Data>, channel: string, members: PresenceMember[]): void;
  /** The current status, as last given to `onstatus`. */
  readonly status: DjangoWebSocketStatus;
  /** The current WebSocket, or null between connections. */
  readonly socket: WebSocket | null;
  /** The current WebSocket's readyState (`WebSocket.CLOSED` between connections). */
  readonly readyState: number;
  /** The id of the last message of *channel* this client has (its resume position), or null. */
  lastId(channel: string): string | null;
  /** *channel*'s members, sorted by name; [] when unknown. */
  presence(channel: string): PresenceMember[];
  /** The URL of the next connection: `url` with a `since=<channel>@<id>` parameter per known position. */
  connectionUrl(): string;
  /**
   * Send text acknowledged: a promise resolved once the server processed it, rejected on a
   * nack (the server's error as the message) or when the client closes for good. Kept and
   * resent after reconnections until then.
   */
  send(data: string, options: SendOptions & { ack: true }): Promise<void>;
  /** Send a message as it is; false (and nothing sent) unless open. */
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView, options?: SendOptions & { ack?: false }): boolean;
  /** Send *obj* as JSON text acknowledged: see `send(data, {ack: true})`. */
  sendJSON(obj: unknown, options: SendOptions & { ack: true }): Promise<void>;
  /** Send *obj* as JSON text; false (and nothing sent) unless open. */
  sendJSON(obj: unknown, options?: SendOptions & { ack?: false }): boolean;
  /** How many acknowledged messages wait for their answer. */
  readonly unacknowledged: number;
  /** Close for good (default 1000, ""): no reconnection afterwards, status "closed". */
  close(code?: number, reason?: string): void;
  /** Drop the connection and connect again at once (to `url`), resuming; nothing after `close()`. */
  reconnect(): void;
  /** The subprotocols offered with *token*: the `protocols` option, then the token's pair; undefined if none. */
  protocolsWith(token: DjangoWebSocketTokenValue): string[] | undefined;
}

/**
 * The class. Which `Data` a client gets follows from its `json` option; name it to
 * promise more (`new DjangoWebSocket<ChatEvent>(url, {json: true, ...})`).
 */
export interface DjangoWebSocketConstructor {
  /** Connect to *url* at once, without `json`: messages are strings and ArrayBuffers. */
  new <Data = string | ArrayBuffer>(url: string, options?: DjangoWebSocketTextOptions<Data>): DjangoWebSocket<Data>;
  /** Connect to *url* at once, with `json: true`: text frames are parsed. */
  new <Data = JSONValue | ArrayBuffer>(url: string, options: DjangoWebSocketJSONOptions<Data>): DjangoWebSocket<Data>;
  /** Connect to *url* at once, with `json` known only at run time. */
  new <Data = JSONValue | ArrayBuffer>(url: string, options?: DjangoWebSocketOptions<Data>): DjangoWebSocket<Data>;
  readonly prototype: DjangoWebSocket;
  /** The delay before reconnection *attempt* (0, 1, 2...), in ms: full jitter below min(maxDelay, 500 * 2^attempt). */
  delay(attempt: number, maxDelay?: number, random?: () => number): number;
  /** Close codes after which the client does not reconnect: 1000, 1008, 4403, 4404. */
  FINAL_CODES: number[];
}

/** The client class (also set as `globalThis.DjangoWebSocket`, as the classic script does). */
export declare const DjangoWebSocket: DjangoWebSocketConstructor;
