/*
 * websocket.js as an ES module, for pages and bundlers that import:
 *
 *   <script type="importmap">
 *     {"imports": {"django_websocket/websocket.esm.js": "{% static 'django_websocket/websocket.esm.js' %}"}}
 *   </script>
 *   <script type="module">
 *     import { DjangoWebSocket } from "django_websocket/websocket.esm.js";
 *   </script>
 *
 * Types: websocket.esm.d.ts, beside this file.
 *
 * Why a wrapper: one file cannot be both forms, since `export` is a syntax error in a
 * classic script, and a classic script cannot import a module synchronously, so making
 * websocket.js the wrapper would leave DjangoWebSocket undefined for the inline script
 * that follows its <script> tag. The implementation stays in websocket.js, written to be
 * valid module code as well (strict mode, and `globalThis` rather than a top-level
 * `this`, which is undefined in a module), so this file imports it for its side effect
 * and exports the class it defines. Importing it therefore also defines
 * globalThis.DjangoWebSocket, as the classic script does.
 *
 * Why ".esm.js" and not ".mjs": servers pick the Content-Type by extension, browsers
 * refuse a module script that is not served as JavaScript, and ".mjs" is missing from
 * some of their tables (Debian's nginx mime.types; Python's mimetypes before 3.12
 * without /etc/mime.types), whereas ".js" is JavaScript everywhere.
 */
import "./websocket.js";

export const DjangoWebSocket = globalThis.DjangoWebSocket;
