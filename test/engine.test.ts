import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SmtpError } from "../mod.ts";
import { codes, transcript } from "./helpers/transcript.ts";

describe("engine: basic session", () => {
  it("delivers one message with dot-unstuffing", () => {
    const r = transcript(
      "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    assert.deepEqual(r.messages, ["hello\r\n.dot\r\n"]);
    assert.deepEqual(codes(r.output), [
      "220",
      "250",
      "250 2.1.0",
      "250 2.1.5",
      "354 2.0.0",
      "250 2.0.0",
      "221 2.0.0",
    ]);
    assert.equal(r.closed, "quit");
  });

  it("sends a rejected RCPT's reply and goes on with the next", () => {
    const r = transcript(
      "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<no@y.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nhi\r\n.\r\n",
      {},
      (ev) =>
        ev.type === "rcpt" && ev.to.address === "no@y.test"
          ? new SmtpError(550, "5.1.1", "No such user")
          : undefined,
    );
    assert.deepEqual(codes(r.output).slice(3), [
      "550 5.1.1",
      "250 2.1.5",
      "354 2.0.0",
      "250 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["hi\r\n"]);
  });
});
