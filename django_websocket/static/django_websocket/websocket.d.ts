/**
 * TypeScript declarations of django_websocket's browser client as the classic script,
 * websocket.js, which defines the global `DjangoWebSocket`:
 *
 *   /// <reference path="path/to/django_websocket/websocket.d.ts" />
 *
 * (or list this file in tsconfig.json's "files"). The API itself is declared, with its
 * documentation, in websocket.esm.d.ts, the ES module's declarations; this file only
 * puts it in the global scope. It has no exports because websocket.js has none: as a
 * module (`import "./websocket.js"`) it only defines the global.
 */

/** The client class: see websocket.esm.d.ts. */
declare var DjangoWebSocket: import("./websocket.esm.js").DjangoWebSocketConstructor;

/** A client instance; `Data` is what its `onmessage` receives. */
type DjangoWebSocket<Data = unknown> = import("./websocket.esm.js").DjangoWebSocket<Data>;

/** The module's other types, under the class's name: `DjangoWebSocket.Options`, `DjangoWebSocket.Status`... */
declare namespace DjangoWebSocket {
  type Options<Data = string | ArrayBuffer> = import("./websocket.esm.js").DjangoWebSocketOptions<Data>;
  type TextOptions<Data = string | ArrayBuffer> = import("./websocket.esm.js").DjangoWebSocketTextOptions<Data>;
  type JSONOptions<Data = JSONValue | ArrayBuffer> = import("./websocket.esm.js").DjangoWebSocketJSONOptions<Data>;
  type Status = import("./websocket.esm.js").DjangoWebSocketStatus;
  type Token = import("./websocket.esm.js").DjangoWebSocketToken;
  type TokenValue = import("./websocket.esm.js").DjangoWebSocketTokenValue;
  type JSONValue = import("./websocket.esm.js").JSONValue;
  type MessageMeta = import("./websocket.esm.js").MessageMeta;
  type MessageHandler<Data> = import("./websocket.esm.js").MessageHandler<Data>;
  type PresenceConnection = import("./websocket.esm.js").PresenceConnection;
  type PresenceMember = import("./websocket.esm.js").PresenceMember;
  type ProtocolFrame = import("./websocket.esm.js").ProtocolFrame;
  type MessageFrame = import("./websocket.esm.js").MessageFrame;
  type SubscribedFrame = import("./websocket.esm.js").SubscribedFrame;
  type GapFrame = import("./websocket.esm.js").GapFrame;
  type PresenceFrame = import("./websocket.esm.js").PresenceFrame;
  type PresenceDiffFrame = import("./websocket.esm.js").PresenceDiffFrame;
  type JoinOrLeaveFrame = import("./websocket.esm.js").JoinOrLeaveFrame;
  type AckFrame = import("./websocket.esm.js").AckFrame;
  type NackFrame = import("./websocket.esm.js").NackFrame;
  type SendFrame = import("./websocket.esm.js").SendFrame;
  type SendOptions = import("./websocket.esm.js").SendOptions;
}
