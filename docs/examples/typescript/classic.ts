// The classic script's global, as a page that loads websocket.js with a <script> tag sees it
// (this file is a script, not a module: no imports; websocket.d.ts is in tsconfig.json's files).
function connectClassic(url: string): DjangoWebSocket<DjangoWebSocket.JSONValue | ArrayBuffer> {
  const options: DjangoWebSocket.JSONOptions = {
    json: true,
    token: "a-token-from-the-template",
    onmessage(data, _event, meta) {
      console.log(meta ? `${meta.channel}@${meta.id}` : "direct", data);
    },
  };
  return new DjangoWebSocket(url, options);
}

connectClassic("ws://127.0.0.1:8000/ws/echo/").sendJSON({ hello: "world" });
