// wsgate demo chat: get a demo token, trade it for a single-use ticket (browsers cannot set
// Authorization on a WebSocket), connect, join a room, chat, and refresh the token before it
// expires. Everything the page shows comes from server frames.
"use strict";

const $ = (id) => document.getElementById(id);
let ws = null;
let token = null;
let expiresAt = null;
let channel = null;
let refreshing = false;

function say(text, cls) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  li.textContent = text;
  $("messages").appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}

function chatLine(from, text) {
  const li = document.createElement("li");
  const who = document.createElement("span");
  who.className = "from";
  who.textContent = from === null ? "server" : from;
  li.append(who, document.createTextNode(String(text)));
  $("messages").appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}

async function demoToken(name) {
  const res = await fetch("/api/demo/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(body.message || "could not get a token");
  return body.token;
}

async function ticketFor(tok) {
  const res = await fetch("/api/tickets", {
    method: "POST",
    headers: { authorization: "Bearer " + tok },
  });
  const body = await res.json();
  if (!res.ok) throw new Error(body.message || "could not get a ticket");
  return body.ticket;
}

function tick() {
  if (expiresAt === null) return;
  const left = Math.max(0, Math.round(expiresAt - Date.now() / 1000));
  $("countdown").textContent = left + " s";
  if (left <= 30 && !refreshing && ws && ws.readyState === WebSocket.OPEN) refresh();
}

async function refresh() {
  refreshing = true;
  try {
    token = await demoToken($("name").value);
    ws.send(JSON.stringify({ type: "refresh", id: "refresh", token }));
  } catch (e) {
    say("refresh failed: " + e.message, "system");
  } finally {
    refreshing = false;
  }
}

function onFrame(event) {
  const f = JSON.parse(event.data);
  switch (f.type) {
    case "welcome":
      expiresAt = f.expires_at;
      tick();
      $("status").textContent = "Connected as " + f.sub;
      ws.send(JSON.stringify({ type: "subscribe", id: "join", channel }));
      break;
    case "subscribed":
      say("joined " + f.channel, "system");
      $("text").disabled = false;
      $("text").focus();
      break;
    case "message":
      chatLine(f.from, f.data && f.data.text);
      break;
    case "refreshed":
      expiresAt = f.expires_at;
      say("token refreshed", "system");
      break;
    case "error":
      say("error: " + f.code + (f.channel ? " (" + f.channel + ")" : ""), "system");
      break;
  }
}

$("join").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("name").value;
  channel = "room:" + $("room").value;
  try {
    token = await demoToken(name);
    const ticket = await ticketFor(token);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(scheme + "//" + location.host + "/ws?ticket=" + encodeURIComponent(ticket));
  } catch (err) {
    alert(err.message);
    return;
  }
  $("join").hidden = true;
  $("chat").hidden = false;
  $("room-title").textContent = "Room " + $("room").value;
  $("status").textContent = "Connecting…";
  $("text").disabled = true;
  ws.addEventListener("message", onFrame);
  ws.addEventListener("close", (ev) => {
    $("status").textContent = "Disconnected (" + ev.code + (ev.reason ? ": " + ev.reason : "") + ")";
    $("text").disabled = true;
    expiresAt = null;
  });
  setInterval(tick, 1000);
});

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify({ type: "publish", channel, data: { text } }));
  $("text").value = "";
});
