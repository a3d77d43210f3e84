// A chat page's script in TypeScript, over websocket.esm.js. `make typecheck` checks it
// (tsc --noEmit -p docs/examples/typescript); tsconfig.json maps "django_websocket/*" to the
// package's static directory, as the page's import map maps it to {% static %}.
import {
  DjangoWebSocket,
  type DjangoWebSocketStatus,
  type MessageMeta,
  type PresenceMember,
} from "django_websocket/websocket.esm.js";

/** What the chat view sends, and publishes to "chat:<room>". */
type ChatEvent =
  | { type: "message"; id: number; handle: string; message: string; color: string; timestamp: string }
  | { type: "announcement"; message: string; timestamp: string }
  | { type: "error"; error: string };

const room = "lobby";
const channel = `chat:${room}`;
const since: Record<string, string> = JSON.parse(document.getElementById("since")?.textContent ?? "{}");

function show(text: string): void {
  const item = document.createElement("li");
  item.textContent = text; // text, never HTML: anyone in the room wrote it
  document.getElementById("log")?.appendChild(item);
}

// A fresh token before every connection: tokens expire within a minute.
async function socketToken(): Promise<string | null> {
  const response = await fetch("/socket-token/", { credentials: "same-origin" });
  return response.ok ? ((await response.json()) as { token: string }).token : null;
}

const socket = new DjangoWebSocket<ChatEvent>(`wss://example.com/ws/chat/${room}/`, {
  json: true,
  since,
  token: socketToken,
  maxDelay: 10_000,
  onmessage(event: ChatEvent, _frame: MessageEvent, meta?: MessageMeta) {
    switch (event.type) {
      case "message":
        show(`${event.handle}: ${event.message}` + (meta ? ` (${meta.channel} #${meta.id})` : ""));
        break;
      case "announcement":
        show(`** ${event.message}`);
        break;
      case "error":
        show(`error: ${event.error}`);
        break;
    }
  },
  onstatus(status: DjangoWebSocketStatus) {
    const element = document.getElementById("status");
    if (element) {
      element.textContent = status;
    }
  },
  onclose(event: CloseEvent, willReconnect: boolean) {
    if (!willReconnect && DjangoWebSocket.FINAL_CODES.includes(event.code)) {
      show(`closed for good (${event.code})`);
    }
  },
  ongap(gapChannel: string, id: string) {
    show(`missed messages in ${gapChannel} before ${id}: reloading`);
    void fetch(`/chat/${room}/messages.json`);
  },
  onpresence(_channel: string, members: PresenceMember[]) {
    const here = members.map((member) => `${member.name} (${member.connections})`);
    document.title = `${here.length} here: ${here.join(", ")}`;
  },
});

document.getElementById("send")?.addEventListener("click", () => {
  const sent: boolean = socket.sendJSON({ handle: "alice", message: "hi", color: "#1f4e8c" });
  if (!sent) {
    show("not connected: nothing was sent");
  }
});

// Acknowledged: kept and resent after reconnections until the view acknowledges it.
document.getElementById("send-acked")?.addEventListener("click", () => {
  const acked: Promise<void> = socket.sendJSON({ handle: "alice", message: "hi" }, { ack: true });
  acked.then(
    () => show(`posted (${socket.unacknowledged} still pending)`),
    (error: Error) => show(`refused: ${error.message}`),
  );
});

// Without json, messages are strings or ArrayBuffers, and the types say so.
const echo = new DjangoWebSocket("wss://example.com/ws/echo/", {
  onopen() {
    this.send(new Uint8Array([1, 2, 3]));
  },
  onmessage(data) {
    show(typeof data === "string" ? data : `${data.byteLength} bytes`);
  },
});

export function moveTo(url: string): void {
  socket.url = url;
  socket.reconnect(); // resumes from socket.lastId(channel)
  const position: string | null = socket.lastId(channel);
  const members: PresenceMember[] = socket.presence(channel);
  show(`${position ?? "no position"}, ${members.length} here, next delay under ${DjangoWebSocket.delay(3)} ms`);
}

export function leave(): void {
  echo.close();
  socket.close(1000, "bye");
}
