from django.http import HttpRequest, HttpResponse

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Chat</title>
<style>
 body { font-family: sans-serif; max-width: 40rem; margin: 2rem auto; }
 #log { border: 1px solid #ccc; height: 20rem; overflow-y: auto; padding: .5rem; }
 #log p { margin: .2rem 0; }
</style></head>
<body>
<h1>Room <input id="room" value="lobby" size="12" pattern="[a-z0-9_-]+"></h1>
<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" size="50" autofocus>
<button>Send</button></form>
<p id="status">connecting...</p>
<script>
let socket;
const log = document.getElementById("log");
function join(room) {
  if (socket) socket.close();
  log.textContent = "";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws/chat/${room}/`);
  const status = document.getElementById("status");
  socket.onopen = () => { status.textContent = "connected to " + room; };
  socket.onclose = () => { status.textContent = "disconnected"; };
  socket.onmessage = (event) => {
    const line = document.createElement("p");
    line.textContent = event.data;
    log.appendChild(line);
    log.scrollTop = log.scrollHeight;
  };
}
document.getElementById("room").onchange = (event) => join(event.target.value);
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  if (input.value) socket.send(input.value);
  input.value = "";
};
join(document.getElementById("room").value);
</script>
</body></html>
"""


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)
