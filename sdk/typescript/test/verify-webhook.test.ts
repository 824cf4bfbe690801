// verifyWebhook against fixed vectors: the Standard Webhooks reference example (docs/webhooks.md)
// and signatures computed here independently with node:crypto.
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { describe, it } from "node:test";

import { verifyWebhook as fromRoot, WebhookVerificationError as ErrorFromRoot } from "@storecrm/sdk";
import { verifyWebhook, WebhookVerificationError, type WebhookVerificationErrorCode } from "@storecrm/sdk/webhooks";

// The reference example of docs/webhooks.md (and of the Standard Webhooks libraries).
const REF = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};

function refHeaders(signature = REF.signature): Record<string, string> {
  return { "webhook-id": REF.id, "webhook-timestamp": String(REF.timestamp), "webhook-signature": signature };
}

/** A new secret and a signer for it, with node:crypto (independent of the SDK's Web Crypto code). */
function newSecret(): { secret: string; sign: (id: string, ts: number, body: string | Buffer) => string } {
  const key = randomBytes(24);
  return {
    secret: `whsec_${key.toString("base64")}`,
    sign: (id, ts, body) =>
      `v1,${createHmac("sha256", key).update(`${id}.${ts}.`).update(body).digest("base64")}`,
  };
}

async function refused(p: Promise<unknown>, code: WebhookVerificationErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof WebhookVerificationError, `a WebhookVerificationError, not ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.name, "WebhookVerificationError");
    return true;
  });
}

describe("verifyWebhook", () => {
  it("is exported from the package root and from @storecrm/sdk/webhooks", () => {
    assert.equal(fromRoot, verifyWebhook);
    assert.equal(ErrorFromRoot, WebhookVerificationError);
  });

  it("accepts the Standard Webhooks reference example and answers the parsed body", async () => {
    const out = await verifyWebhook<{ test: number }>({ secret: REF.secret, headers: refHeaders(), body: REF.body, now: REF.timestamp });
    assert.deepEqual(out, { test: 2432232314 });
  });

  it("the reference example's signature is what node:crypto computes (the vector is independent)", () => {
    const key = Buffer.from(REF.secret.slice("whsec_".length), "base64");
    const mac = createHmac("sha256", key).update(`${REF.id}.${REF.timestamp}.${REF.body}`).digest("base64");
    assert.equal(`v1,${mac}`, REF.signature);
  });

  it("accepts a signature computed with node:crypto, with string, Buffer, Uint8Array and ArrayBuffer bodies", async () => {
    const { secret, sign } = newSecret();
    const id = "01936d0e-5c1a-7e3b-9a8e-4c2f0d1b7a55";
    const ts = 1764547200;
    const event = { id, type: "profile.created", store_id: "s", created_at: ts, data: { object: { id: "p", email: "zoë@example.com" } } };
    const body = JSON.stringify(event);
    const headers = { "webhook-id": id, "webhook-timestamp": String(ts), "webhook-signature": sign(id, ts, body) };
    const bytes = Buffer.from(body, "utf8");
    for (const b of [body, bytes, new Uint8Array(bytes), bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)]) {
      assert.deepEqual(await verifyWebhook({ secret, headers, body: b, now: ts }), event);
    }
    // a Buffer that is a view into a larger pool
    const pooled = Buffer.concat([Buffer.from("xxxx"), bytes]).subarray(4);
    assert.deepEqual(await verifyWebhook({ secret, headers, body: pooled, now: ts }), event);
  });

  it("signs the raw bytes: a body that is not valid UTF-8 is checked byte for byte", async () => {
    const { secret, sign } = newSecret();
    const body = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]);
    const headers = { "webhook-id": "m", "webhook-timestamp": "100", "webhook-signature": sign("m", 100, body) };
    // Signed correctly, but not JSON...
    await refused(verifyWebhook({ secret, headers, body, now: 100 }), "invalid_payload");
    // ...while a different byte is a wrong signature.
    await refused(verifyWebhook({ secret, headers, body: Buffer.from([0x7b, 0xff, 0xfd, 0x7d]), now: 100 }), "invalid_signature");
  });

  it("headers: a Headers object, or a record in any case, with array values", async () => {
    await verifyWebhook({ secret: REF.secret, headers: new Headers(refHeaders()), body: REF.body, now: REF.timestamp });
    await verifyWebhook({
      secret: REF.secret,
      headers: { "Webhook-Id": REF.id, "WEBHOOK-TIMESTAMP": String(REF.timestamp), "Webhook-Signature": [REF.signature] },
      body: REF.body,
      now: REF.timestamp,
    });
    // A header sent on two lines, as an array or joined with ", " (Headers and Node do): both count.
    const twoLines = new Headers(refHeaders("v1,bm90IGl0"));
    twoLines.append("webhook-signature", REF.signature);
    assert.equal(twoLines.get("webhook-signature"), `v1,bm90IGl0, ${REF.signature}`);
    await verifyWebhook({ secret: REF.secret, headers: twoLines, body: REF.body, now: REF.timestamp });
    await verifyWebhook({
      secret: REF.secret,
      headers: { ...refHeaders(), "webhook-signature": ["v1,bm90IGl0", REF.signature] },
      body: REF.body,
      now: REF.timestamp,
    });
  });

  it("any of several signatures in the header; other versions are ignored", async () => {
    const other = newSecret().sign(REF.id, REF.timestamp, REF.body);
    for (const header of [`${other} ${REF.signature}`, `${REF.signature} ${other}`, `v1a,abc ${REF.signature}`, ` ${REF.signature}  `]) {
      await verifyWebhook({ secret: REF.secret, headers: refHeaders(header), body: REF.body, now: REF.timestamp });
    }
    await refused(
      verifyWebhook({ secret: REF.secret, headers: refHeaders(REF.signature.replace("v1,", "v1a,")), body: REF.body, now: REF.timestamp }),
      "invalid_signature",
    );
    await refused(
      verifyWebhook({ secret: REF.secret, headers: refHeaders(REF.signature.slice("v1,".length)), body: REF.body, now: REF.timestamp }),
      "invalid_signature",
    );
  });

  it("any of several secrets", async () => {
    const wrong = newSecret().secret;
    await verifyWebhook({ secrets: [wrong, REF.secret], headers: refHeaders(), body: REF.body, now: REF.timestamp });
    await verifyWebhook({ secret: wrong, secrets: [REF.secret], headers: refHeaders(), body: REF.body, now: REF.timestamp });
    await refused(verifyWebhook({ secrets: [wrong], headers: refHeaders(), body: REF.body, now: REF.timestamp }), "invalid_signature");
  });

  it("refuses a tampered body, id or timestamp, and a wrong secret", async () => {
    const base = { secret: REF.secret, body: REF.body, now: REF.timestamp };
    await refused(verifyWebhook({ ...base, headers: refHeaders(), body: '{"test": 2432232315}' }), "invalid_signature");
    await refused(verifyWebhook({ ...base, headers: refHeaders(), body: `${REF.body} ` }), "invalid_signature");
    await refused(verifyWebhook({ ...base, headers: { ...refHeaders(), "webhook-id": `${REF.id}x` } }), "invalid_signature");
    await refused(
      verifyWebhook({ ...base, headers: { ...refHeaders(), "webhook-timestamp": String(REF.timestamp + 1) }, now: REF.timestamp + 1 }),
      "invalid_signature",
    );
    await refused(verifyWebhook({ ...base, secret: newSecret().secret, headers: refHeaders() }), "invalid_signature");
    // the same key bytes without the prefix are the same secret
    await verifyWebhook({ ...base, secret: REF.secret.slice("whsec_".length), headers: refHeaders() });
  });

  it("checks the timestamp against the tolerance (default 5 minutes), after the signature", async () => {
    const args = { secret: REF.secret, headers: refHeaders(), body: REF.body };
    await verifyWebhook({ ...args, now: REF.timestamp + 300 });
    await verifyWebhook({ ...args, now: REF.timestamp - 300 });
    await verifyWebhook({ ...args, now: new Date((REF.timestamp + 299) * 1000) });
    await refused(verifyWebhook({ ...args, now: REF.timestamp + 301 }), "timestamp_too_old");
    await refused(verifyWebhook({ ...args, now: REF.timestamp - 301 }), "timestamp_too_new");
    await refused(verifyWebhook({ ...args }), "timestamp_too_old"); // the clock: 2021 is long gone
    await verifyWebhook({ ...args, now: REF.timestamp + 3600, toleranceSeconds: 3600 });
    await refused(verifyWebhook({ ...args, now: REF.timestamp + 3601, toleranceSeconds: 3600 }), "timestamp_too_old");
    await verifyWebhook({ ...args, toleranceSeconds: Infinity });
    // an old timestamp with a wrong signature is a wrong signature
    await refused(verifyWebhook({ ...args, secret: newSecret().secret }), "invalid_signature");
  });

  it("refuses missing headers and a malformed timestamp", async () => {
    for (const drop of ["webhook-id", "webhook-timestamp", "webhook-signature"]) {
      const headers: Record<string, string> = refHeaders();
      delete headers[drop];
      await refused(verifyWebhook({ secret: REF.secret, headers, body: REF.body, now: REF.timestamp }), "missing_headers");
      await refused(
        verifyWebhook({ secret: REF.secret, headers: { ...refHeaders(), [drop]: " " }, body: REF.body, now: REF.timestamp }),
        "missing_headers",
      );
    }
    await assert.rejects(verifyWebhook({ secret: REF.secret, headers: {}, body: REF.body }), /webhook-id, webhook-timestamp, webhook-signature/);
    for (const ts of ["1614265330.5", "-1614265330", "abc", "1e9"]) {
      await refused(
        verifyWebhook({ secret: REF.secret, headers: { ...refHeaders(), "webhook-timestamp": ts }, body: REF.body, now: REF.timestamp }),
        "invalid_timestamp",
      );
    }
  });

  it("the error carries the webhook id", async () => {
    await assert.rejects(verifyWebhook({ secret: REF.secret, headers: refHeaders(), body: "{}", now: REF.timestamp }), (err: unknown) => {
      assert.ok(err instanceof WebhookVerificationError);
      assert.ok(err instanceof Error);
      assert.equal(err.webhookId, REF.id);
      return true;
    });
  });

  it("a wrong call is a TypeError: no secret, a bad secret, a parsed body", async () => {
    const headers = refHeaders();
    await assert.rejects(verifyWebhook({ headers, body: REF.body }), TypeError);
    await assert.rejects(verifyWebhook({ secrets: [], headers, body: REF.body }), TypeError);
    await assert.rejects(verifyWebhook({ secret: "whsec_***", headers, body: REF.body }), TypeError);
    await assert.rejects(verifyWebhook({ secret: "whsec_", headers, body: REF.body }), TypeError);
    await assert.rejects(
      // @ts-expect-error a parsed body is refused by the types too
      verifyWebhook({ secret: REF.secret, headers, body: JSON.parse(REF.body) as object }),
      (err: unknown) => err instanceof TypeError && /raw body/.test(err.message),
    );
    await assert.rejects(verifyWebhook({ secret: REF.secret, headers, body: REF.body, toleranceSeconds: -1 }), TypeError);
  });
});
