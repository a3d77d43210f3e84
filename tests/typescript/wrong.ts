// Calls that websocket.esm.d.ts must reject: tests/test_typescript.py runs tsc on this file
// and expects exactly the error named at the end of each marked line, and no other. Were the
// declarations `any`, tsc would pass it.
import { DjangoWebSocket, type DjangoWebSocketStatus } from "django_websocket/websocket.esm.js";

const text = new DjangoWebSocket("ws://127.0.0.1/ws/echo/");
text.send(42); // expect TS2345
text.sendJSON(); // expect TS2554
const acked: boolean = text.send("hi", { ack: true }); // expect TS2322
text.send(new Uint8Array([1]), { ack: true }); // expect TS2769
const length: number = text.lastId("chat:lobby").length; // expect TS2531
text.onmessage = (data) => data.toUpperCase(); // expect TS2339
text.status = "open"; // expect TS2540
text.close("going away"); // expect TS2345
text.reconnect(true); // expect TS2554
DjangoWebSocket.delay("1"); // expect TS2345

new DjangoWebSocket("ws://127.0.0.1/ws/echo/", { maxDelay: "30s" }); // expect TS2769
new DjangoWebSocket("ws://127.0.0.1/ws/echo/", { token: 42 }); // expect TS2769
new DjangoWebSocket("ws://127.0.0.1/ws/echo/", { since: { "chat:lobby": 7 } }); // expect TS2769
new DjangoWebSocket("ws://127.0.0.1/ws/echo/", { onmessage: "print" }); // expect TS2769
new DjangoWebSocket("ws://127.0.0.1/ws/echo/", { onpresence: (channel: string, members: string[]) => members }); // expect TS2769
new DjangoWebSocket("ws://127.0.0.1/ws/echo/", { onmesage() {} }); // expect TS2769
new DjangoWebSocket(); // expect TS2554

const status: DjangoWebSocketStatus = "reconnecting"; // expect TS2820

export { acked, length, status };
