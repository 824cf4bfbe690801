// Events and webhooks against the real server: endpoints pointing at a local receiver, deliveries
// verified with verifyWebhook, secret rotation, the delivery log and retry, the event feed.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  StoreCrmError,
  verifyWebhook,
  WebhookVerificationError,
  type Crm,
  type Event,
  type EventOf,
  type WebhookVerificationErrorCode,
} from "@storecrm/sdk";

import { backends, eventually, startReceiver, startServer, uniqueEmail, type Receiver, type Received, type Server } from "./helpers.js";

const WEBHOOK_ENV = {
  WEBHOOKS_ALLOW_PRIVATE: "true",
  WEBHOOK_POLL_INTERVAL_MS: "50",
  // A failed attempt waits an hour: the retry test's manual retry is what delivers it.
  WEBHOOK_RETRY_SCHEDULE_SECS: "3600",
  // Events are in the feed at once (the default 2 s delay guards cursors against late commits).
  EVENT_FEED_DELAY_SECS: "0",
};

async function refused(p: Promise<unknown>, code: WebhookVerificationErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof WebhookVerificationError && err.code === code);
}

/** The profile.created event of `profileId` among the requests to `path`. */
function createdOf(path: string, profileId: string): (r: Received) => boolean {
  return (r) => {
    if (r.path !== path) return false;
    const e = JSON.parse(r.body.toString("utf8")) as Event;
    return e.type === "profile.created" && !e.data.redacted && e.data.object.id === profileId;
  };
}

for (const { backend, skip } of backends()) {
  describe(`${backend}: events and webhooks`, { skip }, () => {
    let server: Server;
    let receiver: Receiver;
    let admin: Crm;
    let n = 0;
    const hookPath = (tag: string): string => `/hooks/${tag}-${n++}`;

    before(async () => {
      receiver = await startReceiver();
      server = await startServer(backend, WEBHOOK_ENV);
      admin = server.client({ admin: true }).crm;
    });
    after(async () => {
      await server?.stop();
      await receiver?.close();
    });

    it("create (secret shown once), get, find, update, delete", async () => {
      const url = `${receiver.url}${hookPath("crud")}`;
      const created = await admin.webhooks.create({ url, events: ["profile.created", "profile.erased"], description: "ERP" });
      assert.match(created.secret, /^whsec_[A-Za-z0-9+/]+=*$/);
      assert.deepEqual([created.url, created.events, created.description, created.status], [
        url,
        ["profile.created", "profile.erased"],
        "ERP",
        "active",
      ]);

      const got = await admin.webhooks.get({ id: created.id });
      assert.equal(got.id, created.id);
      assert.ok(!("secret" in got), "get does not show the secret");
      const page = await admin.webhooks.find({ limit: 200 });
      assert.ok(page.items.some((w) => w.id === created.id));
      assert.ok(page.items.every((w) => !("secret" in w)));

      const updated = await admin.webhooks.update({ id: created.id, events: ["*"], description: null, status: "disabled" });
      assert.deepEqual([updated.events, updated.description ?? null, updated.status], [["*"], null, "disabled"]);

      assert.deepEqual(await admin.webhooks.delete({ id: created.id }), { deleted: true });
      await assert.rejects(admin.webhooks.get({ id: created.id }), (err: unknown) => err instanceof StoreCrmError && err.status === 404);
    });

    it("refuses an unknown event type and a missing url", async () => {
      await assert.rejects(
        // @ts-expect-error not an event type
        admin.webhooks.create({ url: `${receiver.url}/x`, events: ["profile.exploded"] }),
        (err: unknown) => err instanceof StoreCrmError && err.status === 422,
      );
      // @ts-expect-error url is required
      await assert.rejects(admin.webhooks.create({ events: ["*"] }), TypeError);
    });

    it("a change is delivered signed: verifyWebhook answers the event; tampering, a wrong secret and an old timestamp are refused", async () => {
      const path = hookPath("deliver");
      const hook = await admin.webhooks.create({ url: `${receiver.url}${path}`, events: ["profile.created"] });
      const email = uniqueEmail("hooked");
      const profile = await admin.create({ email });

      const req = await receiver.waitFor(createdOf(path, profile.id));
      assert.equal(req.headers["content-type"], "application/json");
      const id = String(req.headers["webhook-id"]);
      const ts = Number(req.headers["webhook-timestamp"]);
      assert.ok(Math.abs(Date.now() / 1000 - ts) < 60, "the timestamp is the attempt's");
      assert.match(String(req.headers["webhook-signature"]), /^v1,[A-Za-z0-9+/]+=*$/);

      // Node's header record as it came, the raw bytes
      const event = await verifyWebhook({ secret: hook.secret, headers: req.headers, body: req.body });
      assert.equal(event.id, id, "webhook-id is the event id");
      assert.equal(event.type, "profile.created");
      const typed = event as EventOf<"profile.created">;
      assert.ok(!typed.data.redacted);
      assert.equal(typed.data.object.id, profile.id);
      assert.equal(typed.data.object.email, email);
      // a Fetch Headers object and the body as text
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
      assert.deepEqual(await verifyWebhook({ secret: hook.secret, headers, body: req.body.toString("utf8") }), event);
      // the delivery is the event as the feed lists it
      const feed = await admin.events.find({ types: ["profile.created"], limit: 200 });
      assert.deepEqual(
        feed.items.find((e) => e.id === id),
        event,
      );

      const tampered = req.body.toString("utf8").replace(email, uniqueEmail("mallory"));
      await refused(verifyWebhook({ secret: hook.secret, headers: req.headers, body: tampered }), "invalid_signature");
      const other = await admin.webhooks.create({ url: `${receiver.url}${hookPath("other")}`, events: ["order.linked"] });
      await refused(verifyWebhook({ secret: other.secret, headers: req.headers, body: req.body }), "invalid_signature");
      await refused(verifyWebhook({ secret: hook.secret, headers: req.headers, body: req.body, now: ts + 301 }), "timestamp_too_old");
      // a replay with another timestamp header no longer matches the signature
      await refused(
        verifyWebhook({ secret: hook.secret, headers: { ...req.headers, "webhook-timestamp": String(ts + 1) }, body: req.body }),
        "invalid_signature",
      );
      await refused(verifyWebhook({ secret: hook.secret, headers: { ...req.headers, "webhook-id": "msg_other" }, body: req.body }), "invalid_signature");

      // the delivery log
      const log = await eventually(
        () => admin.webhooks.deliveries({ id: hook.id }),
        (p) => p.items.some((d) => d.event_id === id && d.status === "delivered"),
      );
      const delivery = log.items.find((d) => d.event_id === id);
      assert.ok(delivery);
      assert.equal(delivery.event_type, "profile.created");
      assert.equal(delivery.attempts.length, 1);
      assert.equal(delivery.attempts[0]?.status_code, 200);
    });

    it("rotateSecret: during the overlap each delivery carries both signatures and both secrets verify", async () => {
      const path = hookPath("rotate");
      const hook = await admin.webhooks.create({ url: `${receiver.url}${path}`, events: ["profile.created"] });
      const rotated = await admin.webhooks.rotateSecret({ id: hook.id });
      assert.equal(rotated.id, hook.id);
      assert.match(rotated.secret, /^whsec_/);
      assert.notEqual(rotated.secret, hook.secret);
      assert.ok((rotated.previous_secret_until ?? 0) > Date.now() / 1000 + 23 * 3600, "the old secret signs for 24 h");
      assert.ok(!("secret" in (await admin.webhooks.get({ id: hook.id }))));

      const profile = await admin.create({ email: uniqueEmail("rotated") });
      const req = await receiver.waitFor(createdOf(path, profile.id));
      const signatures = String(req.headers["webhook-signature"]).split(" ");
      assert.equal(signatures.length, 2, "signed with the new and the old secret");
      const args = { headers: req.headers, body: req.body };
      const a = await verifyWebhook({ ...args, secret: rotated.secret });
      const b = await verifyWebhook({ ...args, secret: hook.secret });
      assert.deepEqual(a, b);
      await verifyWebhook({ ...args, secrets: [hook.secret, rotated.secret] });
      // each signature alone is the one of its secret
      for (const secret of [rotated.secret, hook.secret]) {
        const matches = await Promise.all(
          signatures.map((s) =>
            verifyWebhook({ headers: { ...req.headers, "webhook-signature": s }, body: req.body, secret }).then(
              () => true,
              () => false,
            ),
          ),
        );
        assert.equal(matches.filter(Boolean).length, 1);
      }
      const stranger = await admin.webhooks.create({ url: `${receiver.url}${hookPath("stranger")}`, events: ["order.linked"] });
      await refused(verifyWebhook({ ...args, secret: stranger.secret }), "invalid_signature");
    });

    it("a failed attempt is in the log; retry({ id, deliveryId }) sends it again", async () => {
      const path = hookPath("retry");
      receiver.statusFor.set(path, 500);
      const hook = await admin.webhooks.create({ url: `${receiver.url}${path}`, events: ["profile.created"] });
      const profile = await admin.create({ email: uniqueEmail("retried") });
      await receiver.waitFor(createdOf(path, profile.id));
      // Settled: the log's two reads (deliveries, then attempts) are not one snapshot, so an attempt
      // can show up while the delivery still shows its lease.
      const failed = await eventually(
        () => admin.webhooks.deliveries({ id: hook.id }),
        (p) => (p.items[0]?.attempts.length ?? 0) >= 1 && (p.items[0]?.next_attempt_at ?? 0) > Date.now() / 1000 + 600,
      );
      const delivery = failed.items[0];
      assert.ok(delivery);
      assert.equal(delivery.status, "pending");
      assert.equal(delivery.attempts[0]?.status_code, 500);

      receiver.statusFor.delete(path);
      const before = receiver.received.filter((r) => r.path === path).length;
      const retried = await admin.webhooks.retry({ id: hook.id, deliveryId: delivery.id });
      assert.equal(retried.id, delivery.id);
      const done = await eventually(
        () => admin.webhooks.deliveries({ id: hook.id, limit: 10 }),
        (p) => p.items.find((d) => d.id === delivery.id)?.status === "delivered",
      );
      const log = done.items.find((d) => d.id === delivery.id);
      assert.deepEqual(
        log?.attempts.map((x) => x.status_code),
        [500, 200],
      );
      assert.equal(receiver.received.filter((r) => r.path === path).length, before + 1);
      // snake_case spelling; retrying a delivered one sends it once more
      await admin.webhooks.retry({ id: hook.id, delivery_id: delivery.id });
      await eventually(
        () => admin.webhooks.deliveries({ id: hook.id }),
        (p) => (p.items.find((d) => d.id === delivery.id)?.attempts.length ?? 0) === 3,
      );
      await assert.rejects(
        admin.webhooks.retry({ id: hook.id, deliveryId: "00000000-0000-7000-8000-000000000000" }),
        (err: unknown) => err instanceof StoreCrmError && err.status === 404,
      );
    });

    it("deliveries pages newest first", async () => {
      const path = hookPath("pages");
      const hook = await admin.webhooks.create({ url: `${receiver.url}${path}`, events: ["profile.created"] });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await admin.create({ email: uniqueEmail(`page${i}`) })).id);
      await eventually(
        () => admin.webhooks.deliveries({ id: hook.id, limit: 200 }),
        (p) => p.items.length === 3,
      );
      const seen: string[] = [];
      let cursor: string | null | undefined;
      do {
        const page = await admin.webhooks.deliveries({ id: hook.id, limit: 2, cursor });
        assert.ok(page.items.length <= 2);
        seen.push(...page.items.map((d) => d.event_id));
        cursor = page.cursor;
      } while (cursor);
      assert.equal(seen.length, 3);
      const feed = await admin.events.find({ types: ["profile.created"], limit: 200 });
      const eventOf = (profileId: string): string | undefined =>
        feed.items.find((e) => e.type === "profile.created" && !e.data.redacted && e.data.object.id === profileId)?.id;
      assert.deepEqual(seen, ids.map(eventOf).reverse());
    });

    it("events.find: oldest first, keyset pages, the types filter", async () => {
      const created: string[] = [];
      for (let i = 0; i < 5; i++) created.push((await admin.create({ email: uniqueEmail(`feed${i}`) })).id);
      const first = created[0];
      assert.ok(first);
      await admin.update({ id: first, status: "archived" });

      const all: Event[] = [];
      let cursor: string | null | undefined;
      let pages = 0;
      // The feed is polled: every page carries a cursor, and an empty page means caught up.
      for (;;) {
        const page = await admin.events.find({ types: ["profile.created"], limit: 2, cursor });
        assert.ok(page.items.length <= 2);
        if (page.items.length === 0) {
          assert.equal(page.cursor, cursor, "an empty page gives back the cursor sent");
          break;
        }
        all.push(...page.items);
        assert.ok(page.cursor, "a feed page always carries a cursor");
        cursor = page.cursor;
        pages++;
      }
      assert.ok(pages >= 3);
      assert.ok(all.every((e) => e.type === "profile.created"));
      assert.equal(new Set(all.map((e) => e.id)).size, all.length, "no event twice");
      const profileIds = all.map((e) => (e.type === "profile.created" && !e.data.redacted ? e.data.object.id : ""));
      const positions = created.map((id) => profileIds.indexOf(id));
      assert.ok(positions.every((p) => p >= 0), "every created profile has its event");
      assert.deepEqual(positions, [...positions].sort((x, y) => x - y), "oldest first");
      assert.ok(all.every((e) => e.store_id === server.storeId));

      const updates = await admin.events.find({ types: "profile.updated", limit: 200 });
      assert.ok(updates.items.length >= 1);
      assert.ok(updates.items.every((e) => e.type === "profile.updated"));
      const archived = updates.items.at(-1);
      assert.ok(archived?.type === "profile.updated" && !archived.data.redacted);
      assert.deepEqual([archived.data.object.id, archived.data.object.status], [first, "archived"]);

      const both = await admin.events.find({ types: "profile.created,profile.updated", limit: 200 });
      assert.deepEqual(new Set(both.items.map((e) => e.type)), new Set(["profile.created", "profile.updated"]));
      const unfiltered = await admin.events.find({ limit: 200 });
      assert.ok(unfiltered.items.length >= both.items.length);

      await assert.rejects(
        // @ts-expect-error not an event type
        admin.events.find({ types: ["profile.exploded"] }),
        (err: unknown) => err instanceof StoreCrmError && err.status === 422,
      );
    });

    it("events and webhooks are admin calls", async () => {
      const shop = server.client().crm;
      await shop.initialize();
      await assert.rejects(shop.events.find(), (err: unknown) => err instanceof StoreCrmError && err.status === 401);
      await assert.rejects(shop.webhooks.find(), (err: unknown) => err instanceof StoreCrmError && err.status === 401);
    });
  });
}
