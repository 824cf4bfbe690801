import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { createClient, StoreCrmError, type Crm, type CreateProfileArgs } from "@storecrm/sdk";

import { backends, startServer, uniqueEmail, type Server } from "./helpers.js";

/** Asserts `promise` rejects with a StoreCrmError and answers it. */
async function failure(promise: Promise<unknown>): Promise<StoreCrmError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof StoreCrmError, `expected a StoreCrmError, got ${String(e)}`);
    assert.ok(e instanceof Error);
    assert.equal(e.name, "StoreCrmError");
    return e;
  }
  assert.fail("expected the call to fail");
}

const UUID = "01900000-0000-7000-8000-000000000000";

for (const { backend, skip } of backends()) {
  describe(`${backend}: errors`, { skip }, () => {
    let server: Server;
    let admin: Crm;
    before(async () => {
      server = await startServer(backend); // CODE_LIMIT_PER_EMAIL=2 (see helpers)
      admin = server.client({ admin: true }).crm;
    });
    after(async () => {
      await server?.stop();
    });

    it("422 carries the validation errors and the request id", async () => {
      const e = await failure(admin.create({ email: "not-an-email" }));
      assert.equal(e.status, 422);
      assert.equal(e.code, "validation_failed");
      assert.deepEqual(e.validationErrors, [{ field: "email", error: "invalid_email" }]);
      assert.match(e.message, /email/);
      assert.ok(typeof e.requestId === "string" && e.requestId.length > 0);
      assert.equal(e.retryAfter, undefined);
      assert.equal((e.body as { status_code: number }).status_code, 422);
    });

    it("422 unknown_field: an argument the server does not know reaches it and is refused", async () => {
      const args = { email: uniqueEmail("typo"), taxonomy: [] } as unknown as CreateProfileArgs;
      const e = await failure(admin.create(args));
      assert.equal(e.status, 422);
      assert.deepEqual(e.validationErrors, [{ field: "taxonomy", error: "unknown_field" }]);
    });

    it("422 for a confirm link outside the allowed origins names the field", async () => {
      const { crm } = server.client();
      const { profile_id } = await crm.connect({ email: uniqueEmail("origin") });
      const template = await server.client({ admin: true }).request<{ id: string }>({
        method: "POST",
        path: "/email-templates",
        body: { key: `origin-${Date.now()}`, subject: "Confirm", body: "{{ confirm_url }}" },
      });
      const audience = await admin.audiences.create({ key: `origin-${Date.now()}`, confirmTemplateId: template.id });
      const e = await failure(
        crm.audiences.subscribe({ id: audience.id, profileId: profile_id, confirmUrl: "https://evil.example/confirm" }),
      );
      assert.equal(e.status, 422);
      assert.ok(e.validationErrors.some((v) => v.field === "confirm_url"), JSON.stringify(e.validationErrors));
    });

    it("404 not_found for a record the store does not have", async () => {
      const e = await failure(admin.get({ id: UUID }));
      assert.deepEqual([e.status, e.code], [404, "not_found"]);
      const a = await failure(admin.audiences.get({ id: "no-such-audience" }));
      assert.deepEqual([a.status, a.code], [404, "not_found"]);
    });

    it("404 for another store's id", async () => {
      const stranger = createClient({ baseUrl: server.url, storeId: UUID, apiKey: server.apiKey });
      const e = await failure(stranger.crm.find());
      assert.ok(e.status === 404 || e.status === 403, String(e.status));
    });

    it("401 for a wrong API key and for a profile call without a session", async () => {
      const wrong = createClient({ baseUrl: server.url, storeId: server.storeId, apiKey: "sk_wrong" });
      const e = await failure(wrong.crm.find());
      assert.deepEqual([e.status, e.code], [401, "unauthorized"]);
      const noSession = await failure(server.client().crm.getMe());
      assert.equal(noSession.status, 401);
    });

    it("403 verification_required for a claim listing sessions", async () => {
      const email = uniqueEmail("claim403");
      const p = await admin.create({ email });
      const { crm } = server.client();
      await crm.connect({ email });
      const e = await failure(crm.getTokens({ id: p.id }));
      assert.deepEqual([e.status, e.code], [403, "verification_required"]);
    });

    it("409 email_taken", async () => {
      const a = await admin.create({ email: uniqueEmail("taken-a") });
      const b = await admin.create({ email: uniqueEmail("taken-b") });
      const e = await failure(admin.update({ id: b.id, email: a.email ?? "" }));
      assert.deepEqual([e.status, e.code], [409, "email_taken"]);
    });

    it("429 rate_limited carries retryAfter in seconds", async () => {
      const { crm } = server.client();
      const email = uniqueEmail("limit");
      await crm.requestCode({ email });
      await crm.requestCode({ email });
      const e = await failure(crm.requestCode({ email }));
      assert.deepEqual([e.status, e.code], [429, "rate_limited"]);
      assert.ok(typeof e.retryAfter === "number" && e.retryAfter > 0, `retryAfter: ${String(e.retryAfter)}`);
      assert.ok(e.retryAfter <= 900);
    });

    it("a non-JSON error answer (a proxy's page) still becomes a StoreCrmError", async () => {
      const { crm } = createClient({
        baseUrl: server.url,
        storeId: server.storeId,
        fetch: async () =>
          new Response("<html>Bad Gateway</html>", {
            status: 502,
            statusText: "Bad Gateway",
            headers: { "content-type": "text/html", "x-request-id": "proxy-1", "retry-after": "7" },
          }),
      });
      const e = await failure(crm.initialize());
      assert.deepEqual([e.status, e.code, e.requestId, e.retryAfter], [502, "http_502", "proxy-1", 7]);
      assert.match(e.message, /Bad Gateway/);
      assert.equal(await crm.getSession(), null);
    });

    it("a network failure is thrown as it is", async () => {
      const { crm } = createClient({
        baseUrl: server.url,
        storeId: server.storeId,
        fetch: () => Promise.reject(new TypeError("fetch failed")),
      });
      await assert.rejects(crm.initialize(), { name: "TypeError", message: "fetch failed" });
    });

    it("missing or conflicting arguments are a TypeError before any request", async () => {
      let sent = 0;
      const { crm } = createClient({
        baseUrl: server.url,
        storeId: server.storeId,
        apiKey: server.apiKey,
        fetch: (url, init) => {
          sent++;
          return fetch(url, init);
        },
      });
      await assert.rejects(crm.get({ id: "" }), TypeError);
      await assert.rejects(crm.get({ id: ".." }), TypeError);
      await assert.rejects(crm.audiences.subscribe({ id: "x" } as never), TypeError);
      await assert.rejects(
        crm.audiences.subscribe({ id: "x", profileId: UUID, profile_id: "other" } as never),
        /both profileId and profile_id/,
      );
      assert.equal(sent, 0);
      assert.throws(() => createClient({ baseUrl: "", storeId: "s" }), TypeError);
    });
  });
}
