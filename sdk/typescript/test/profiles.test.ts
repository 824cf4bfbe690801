import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createClient, memoryStorage, type Crm, type Profile, type TaxonomyEntry } from "@storecrm/sdk";

import { backends, countingFetch, startServer, uniqueEmail, type Server } from "./helpers.js";

for (const { backend, skip } of backends()) {
  describe(`${backend}: profiles (admin)`, { skip }, () => {
    let server: Server;
    let admin: Crm;
    let taxonomyId: string;

    before(async () => {
      server = await startServer(backend);
      const client = server.client({ admin: true });
      admin = client.crm;
      const taxonomy = await client.request<{ id: string }>({
        method: "POST",
        path: "/taxonomies",
        body: {
          key: "loyalty",
          schema: [
            { key: "tier", type: "text", options: ["gold", "silver"] },
            { key: "points", type: "number" },
          ],
        },
      });
      taxonomyId = taxonomy.id;
    });
    after(async () => {
      await server?.stop();
    });

    const tier = (value: string, points: number): TaxonomyEntry[] => [
      {
        taxonomy_id: taxonomyId,
        fields: [
          { key: "tier", type: "text", value: [value] },
          { key: "points", type: "number", value: points },
        ],
      },
    ];

    it("create answers the profile and is idempotent on email", async () => {
      const email = uniqueEmail("create");
      const created = await admin.create({ email, taxonomies: tier("gold", 10) });
      assert.equal(created.email, email);
      assert.equal(created.status, "active");
      assert.equal(created.store_id, server.storeId);
      assert.equal(created.taxonomies[0]?.taxonomy_id, taxonomyId);
      const again = await admin.create({ email });
      assert.equal(again.id, created.id);
    });

    it("get answers a profile by id", async () => {
      const created = await admin.create({ email: uniqueEmail("get") });
      const got = await admin.get({ id: created.id });
      assert.deepEqual(
        { id: got.id, email: got.email, verified: got.verified },
        { id: created.id, email: created.email, verified: false },
      );
    });

    it("find filters by query, taxonomy_query and status, sorts, and pages with the cursor", async () => {
      const tag = `find${Date.now()}`;
      const a = await admin.create({ email: `${tag}-a@example.com`, taxonomies: tier("gold", 5) });
      const b = await admin.create({ email: `${tag}-b@example.com`, taxonomies: tier("silver", 50) });
      const c = await admin.create({ email: `${tag}-c@example.com` });
      await admin.update({ id: c.id, status: "archived" });

      const byQuery = await admin.find({ query: tag });
      assert.deepEqual(byQuery.items.map((p) => p.id).sort(), [a.id, b.id, c.id].sort());
      const active = await admin.find({ query: tag, status: "active" });
      assert.deepEqual(active.items.map((p) => p.id).sort(), [a.id, b.id].sort());

      const archived = await admin.find({ query: tag, status: "archived" });
      assert.deepEqual(
        archived.items.map((p) => p.id),
        [c.id],
      );

      const gold = await admin.find({
        query: tag,
        taxonomy_query: [{ taxonomy_id: taxonomyId, query: [{ key: "tier", type: "text", value: ["gold"] }] }],
      });
      assert.deepEqual(
        gold.items.map((p) => p.id),
        [a.id],
      );
      const many = await admin.find({
        query: tag,
        taxonomyQuery: [{ taxonomy_id: taxonomyId, query: [{ key: "points", type: "number", operation: "gt", value: 10 }] }],
      });
      assert.deepEqual(
        many.items.map((p) => p.id),
        [b.id],
      );

      const desc = await admin.find({ query: tag, status: "active", sortField: "createdAt", sortDirection: "desc" });
      assert.deepEqual(
        desc.items.map((p) => p.id),
        [b.id, a.id],
      );
      const byEmail = await admin.find({ query: tag, status: "active", sort_field: "email", sort_direction: "asc" });
      assert.deepEqual(
        byEmail.items.map((p) => p.id),
        [a.id, b.id],
      );

      const seen: string[] = [];
      let cursor: string | null | undefined = undefined;
      do {
        const page: Awaited<ReturnType<Crm["find"]>> = await admin.find({ query: tag, status: "active", limit: 1, cursor });
        assert.ok(page.items.length <= 1);
        seen.push(...page.items.map((p) => p.id));
        cursor = page.cursor;
      } while (cursor !== null && cursor !== undefined);
      assert.deepEqual(seen.sort(), [a.id, b.id].sort());
    });

    it("update changes email, status and taxonomies; null removes the email", async () => {
      const p = await admin.create({ email: uniqueEmail("upd") });
      const email = uniqueEmail("upd-new");
      const updated = await admin.update({ id: p.id, email, taxonomies: tier("silver", 1), status: "archived" });
      assert.equal(updated.email, email);
      assert.equal(updated.status, "archived");
      assert.equal(updated.taxonomies.length, 1);
      const cleared = await admin.update({ id: p.id, email: null, taxonomies: [] });
      assert.equal(cleared.email ?? null, null);
      assert.deepEqual(cleared.taxonomies, []);
    });

    it("merge moves subscriptions and orders into the target and deletes the source", async () => {
      const target = await admin.create({ email: uniqueEmail("target") });
      const source = await admin.create({ email: uniqueEmail("source"), taxonomies: tier("gold", 3) });
      const audience = await admin.audiences.create({ key: `merge-${Date.now()}` });
      await admin.audiences.addSubscriber({ id: audience.id, profile_id: source.id });
      await admin.linkOrder({ id: source.id, order_id: `ord-${Date.now()}`, total: 1999, currency: "EUR" });

      const merged: Profile = await admin.merge({ id: target.id, source_id: source.id });
      assert.equal(merged.id, target.id);
      assert.equal(merged.taxonomies[0]?.taxonomy_id, taxonomyId);
      await assert.rejects(admin.get({ id: source.id }), { status: 404 });
      const subscribers = await admin.audiences.getSubscribers({ id: audience.id });
      assert.deepEqual(
        subscribers.items.map((s) => s.profile_id),
        [target.id],
      );
      const orders = await admin.getOrders({ id: target.id });
      assert.equal(orders.items.length, 1);
      // the reference's camelCase spelling works too
      const third = await admin.create({ email: uniqueEmail("third") });
      assert.equal((await admin.merge({ id: target.id, sourceId: third.id })).id, target.id);
    });

    it("revokeToken and revokeAllTokens end a shopper's sessions; the shopper's next call clears its storage", async () => {
      const storage = memoryStorage();
      const shop = server.client({ storage }).crm;
      const token = await shop.connect({ email: uniqueEmail("revoke") });
      const sessions = await admin.getTokens({ id: token.profile_id });
      assert.deepEqual(
        sessions.items.map((s) => s.id),
        [token.id],
      );
      assert.deepEqual(await admin.revokeToken({ id: token.profile_id, tokenId: token.id }), { deleted: true });
      await assert.rejects(shop.getMe(), { status: 401 });
      assert.equal(await storage.get(), null, "a refresh that fails clears the storage");

      const second = await shop.connect({ email: uniqueEmail("revoke-all") });
      const other = server.client();
      await other.crm.refreshToken({ refresh_token: second.refresh_token });
      assert.deepEqual(await admin.revokeAllTokens({ id: second.profile_id }), { deleted: true });
      assert.deepEqual((await admin.getTokens({ id: second.profile_id })).items, []);
      await assert.rejects(other.crm.getMe(), { status: 401 });
      // snake_case token_id is accepted
      const third = await shop.connect({ email: uniqueEmail("revoke-snake") });
      assert.deepEqual(await admin.revokeToken({ id: third.profile_id, token_id: third.id }), { deleted: true });
    });

    it("linkOrder, getOrders, export and erase", async () => {
      const p = await admin.create({ email: uniqueEmail("gdpr") });
      const order = await admin.linkOrder({ id: p.id, order_id: "A-1001", total: 4200, currency: "EUR", status: "paid" });
      assert.equal(order.order_id, "A-1001");
      assert.equal(order.profile_id, p.id);
      assert.equal((await admin.getOrders({ id: p.id, limit: 10 })).items[0]?.order_id, "A-1001");
      const dump = await admin.export({ id: p.id });
      assert.equal(dump.profile.id, p.id);
      assert.equal(dump.orders.length, 1);
      assert.deepEqual(await admin.erase({ id: p.id }), { deleted: true });
      await assert.rejects(admin.get({ id: p.id }), { status: 404 });
    });

    it("an account access token (string or function) works as the admin credential", async () => {
      const anon = server.client();
      const login = await anon.request<{ access_token: string }>({
        method: "POST",
        path: "/v1/auth/login",
        auth: "none",
        body: { email: server.ownerEmail, password: server.ownerPassword },
      });
      const byString = createClient({ baseUrl: server.url, storeId: server.storeId, accessToken: login.access_token });
      const p = await byString.crm.create({ email: uniqueEmail("account") });
      let asked = 0;
      const byFunction = createClient({
        baseUrl: `${server.url}/`,
        storeId: server.storeId,
        accessToken: async () => {
          asked++;
          return login.access_token;
        },
      });
      assert.equal((await byFunction.crm.get({ id: p.id })).id, p.id);
      assert.equal(asked, 1);
      const me = await byFunction.request<{ account: { email: string } }>({ method: "GET", path: "/v1/auth/me" });
      assert.equal(me.account.email, server.ownerEmail);
    });

    it("sends what the contract says on the wire: bearer, JSON, encoded path and query", async () => {
      const seen: { url: string; init: RequestInit }[] = [];
      const counting = countingFetch();
      const { crm } = createClient({
        baseUrl: server.url,
        storeId: server.storeId,
        apiKey: server.apiKey,
        fetch: (url, init) => {
          seen.push({ url, init });
          return counting.fetch(url, init);
        },
      });
      await crm.find({
        query: "a b&c",
        taxonomy_query: [{ taxonomy_id: taxonomyId, query: [{ key: "tier", type: "text", value: ["gold"] }] }],
        limit: 5,
        cursor: null,
      });
      await crm.audiences.find({ ids: ["x", "y"] }).catch(() => undefined);
      const find = new URL(seen[0]?.url ?? "");
      assert.equal(find.pathname, `/v1/stores/${server.storeId}/profiles`);
      assert.equal(find.searchParams.get("query"), "a b&c");
      assert.deepEqual(JSON.parse(find.searchParams.get("taxonomy_query") ?? ""), [
        { taxonomy_id: taxonomyId, query: [{ key: "tier", type: "text", value: ["gold"] }] },
      ]);
      assert.equal(find.searchParams.get("limit"), "5");
      assert.equal(find.searchParams.has("cursor"), false);
      const headers = seen[0]?.init.headers as Record<string, string>;
      assert.equal(headers["authorization"], `Bearer ${server.apiKey}`);
      assert.equal(new URL(seen[1]?.url ?? "").searchParams.get("ids"), '["x","y"]');

      await crm.get({ id: "../audiences" }).catch(() => undefined);
      assert.ok(seen[2]?.url.endsWith("/profiles/..%2Faudiences"), seen[2]?.url);
    });
  });
}
