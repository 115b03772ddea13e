// wsgate demo chat, on the browser client every wsgate server serves (/wsgate.js): the
// client gets a demo token, trades it for a single-use ticket (browsers cannot set
// Authorization on a WebSocket), connects, refreshes the token when the server says
// `expiring`, and reconnects and rejoins the room after a restart. This page only shows it.
import { WsgateClient } from "/wsgate.js";

const $ = (id) => document.getElementById(id);
let client = null;
let channel = null;
let expiresAt = null;

function line(text, cls, from) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  if (from !== undefined) {
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = from === null ? "server" : from;
    li.append(who);
  }
  li.append(document.createTextNode(String(text)));
  $("messages").appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}

async function demoToken(name) {
  const params = new URLSearchParams(location.search);
  const body = { name };
  if (params.has("ttl")) body.ttl_secs = Number(params.get("ttl")); // for the browser test
  const res = await fetch("/api/demo/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await res.json();
  if (!res.ok) throw new Error(answer.message || "could not get a token");
  return answer.token;
}

function setConnected(connected, status) {
  $("status").textContent = status;
  $("text").disabled = !connected;
  $("send-button").disabled = !connected;
}

function tick() {
  $("countdown").textContent =
    expiresAt === null ? "–" : Math.max(0, Math.round(expiresAt - Date.now() / 1000)) + " s";
}
setInterval(tick, 1000);

function start(name) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  client = new WsgateClient(`${scheme}//${location.host}/ws`, {
    getToken: () => demoToken(name),
    via: "ticket",
  });
  window.demoClient = client; // for the browser test
  let opened = false;
  client.addEventListener("open", (e) => {
    if (opened) line("reconnected; back in " + channel, "system");
    opened = true;
    expiresAt = e.detail.expires_at;
    tick();
    setConnected(true, "Connected as " + e.detail.sub);
    $("rejoin").hidden = true;
  });
  client.addEventListener("refreshed", (e) => {
    expiresAt = e.detail.expires_at;
    tick();
    line("token refreshed", "system");
  });
  client.addEventListener("message", (e) => {
    const m = e.detail;
    line(m.data && typeof m.data === "object" ? m.data.text : m.data, "", m.from);
  });
  client.addEventListener("reconnecting", (e) => {
    setConnected(false, `Connection lost (${e.detail.code}); reconnecting in ${Math.ceil(e.detail.delay_ms / 1000)} s…`);
  });
  // Why the server refused us, in words (a browser alone only sees "1006").
  client.addEventListener("authError", (e) => {
    const why = {
      invalid_token: "the server refused your token (expired, revoked or not valid here)",
      missing_token: "no token reached the server",
      insufficient_scope: "your token lacks a permission this room needs",
      forbidden_origin: "this page's origin is not allowed to connect",
      cookie_origin: "this page's origin is not allowed to use a login cookie",
      too_many_connections: "you have too many connections open already",
    }[e.detail.error] || `the server refused the connection (${e.detail.status} ${e.detail.error})`;
    line("Cannot connect: " + why + ".", "system");
  });
  client.addEventListener("closed", (e) => {
    expiresAt = null;
    tick();
    setConnected(false, `Disconnected (${e.detail.code}${e.detail.reason ? ": " + e.detail.reason : ""})`);
    $("rejoin").hidden = false;
  });
  client.addEventListener("error", (e) => {
    const f = e.detail;
    line("error: " + (f.code || f.message) + (f.channel ? " (" + f.channel + ")" : ""), "system");
  });
  return client.connect().then(() => client.subscribe(channel)).then(() => {
    line("joined " + channel, "system");
    $("text").focus();
  });
}

$("join").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("name").value.trim();
  channel = "room:" + $("room").value;
  $("join-error").hidden = true;
  try {
    await demoToken(name); // refuse a bad name here, before leaving the form
  } catch (err) {
    $("join-error").textContent = err.message;
    $("join-error").hidden = false;
    return;
  }
  $("join").hidden = true;
  $("chat").hidden = false;
  $("room-title").textContent = "Room " + $("room").value;
  setConnected(false, "Connecting…");
  start(name).catch((err) => line("could not join: " + err.message, "system"));
});

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !client || client.state !== "open") return;
  client.publish(channel, { text }).catch((err) => line("not sent: " + err.message, "system"));
  $("text").value = "";
});

$("leave").addEventListener("click", () => {
  client?.close();
  $("chat").hidden = true;
  $("join").hidden = false;
  $("messages").replaceChildren();
});

$("rejoin").addEventListener("click", () => {
  $("rejoin").hidden = true;
  setConnected(false, "Connecting…");
  start($("name").value.trim()).catch((err) => line("could not join: " + err.message, "system"));
});
