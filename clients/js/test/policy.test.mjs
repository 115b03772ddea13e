// The reconnect policy of wsgate.js (node --test): which closes are retried, and when.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, shouldReconnect, RECONNECT_CODES } from "../wsgate.js";

test("retried closes are exactly the documented ones (docs/protocol.md)", () => {
  for (const code of [1001, 1006, 1011, 1012, 1013, 1014, 4001, 4029]) {
    assert.equal(shouldReconnect(code), true, `${code}`);
  }
  for (const code of [1000, 1002, 1003, 1007, 1008, 1009, 4003, 4000, 3000]) {
    assert.equal(shouldReconnect(code), false, `${code}`);
  }
  assert.equal(RECONNECT_CODES.length, 8);
});

test("the first delay is at most 1 s, then doubles, never past 30 s", () => {
  for (const r of [0, 0.5, 0.999999]) {
    const first = backoffDelay(1, () => r);
    assert.ok(first <= 1000 && first >= 500, `first ${first}`);
  }
  assert.equal(backoffDelay(2, () => 1), 2000);
  assert.equal(backoffDelay(3, () => 1), 4000);
  for (let attempt = 1; attempt < 60; attempt++) {
    assert.ok(backoffDelay(attempt) <= 30000, `attempt ${attempt}`);
  }
  assert.equal(backoffDelay(40, () => 1), 30000);
  assert.equal(backoffDelay(40, () => 0), 15000);
});

test("jitter spreads clients out", () => {
  const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(5)));
  assert.ok(delays.size > 10, `only ${delays.size} distinct delays`);
});
