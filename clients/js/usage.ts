// Compiled by `tsc` (npm test) against wsgate.d.ts: the documented usage must type-check.
import { WsgateClient, backoffDelay, shouldReconnect, type Welcome } from "./wsgate.js";

async function main(): Promise<void> {
  const client = new WsgateClient("ws://127.0.0.1:8080/ws", {
    getToken: async () => "<token>",
    via: "subprotocol",
    reconnect: true,
  });
  client.addEventListener("open", (e) => {
    const w: Welcome | null = e.detail;
    if (w) console.log(w.sub, w.session, w.expires_at);
  });
  client.addEventListener("message", (e) => console.log(e.detail));
  client.addEventListener("refreshed", (e) => console.log(e.detail.expires_at));
  client.addEventListener("reconnecting", (e) => console.log(e.detail.attempt, e.detail.delay_ms, e.detail.code));
  client.addEventListener("authError", (e) => console.log(e.detail.status, e.detail.error, e.detail.retry_after));
  client.addEventListener("closed", (e) => console.log(e.detail.code, e.detail.reason));
  const welcome = await client.connect();
  console.log(welcome?.sub);
  await client.subscribe("chat:lobby");
  await client.publish("chat:lobby", { text: "hi" });
  client.send("raw");
  const state: "idle" | "connecting" | "open" | "reconnecting" | "closed" = client.state;
  console.log(state, backoffDelay(1), shouldReconnect(4001));
  client.close();
}

void main;
