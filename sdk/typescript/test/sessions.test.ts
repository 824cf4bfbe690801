import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  localStorageStorage,
  memoryStorage,
  StoreCrmError,
  type AuthToken,
  type TokenStorage,
  type WebStorageLike,
} from "@storecrm/sdk";

import { backends, latestCode, startServer, uniqueEmail, type Server } from "./helpers.js";

for (const { backend, skip } of backends()) {
  describe(`${backend}: profile sessions`, { skip }, () => {
    let server: Server;
    before(async () => {
      server = await startServer(backend);
    });
    after(async () => {
      await server?.stop();
    });

    it("initialize stores a guest session and getMe answers the guest", async () => {
      const { crm } = server.client();
      assert.equal(await crm.getSession(), null);
      const token = await crm.initialize();
      assert.equal(token.token_type, "Bearer");
      assert.equal(token.is_verified, false);
      assert.ok(token.access_token.length > 20 && token.refresh_token.length > 20);
      assert.deepEqual(await crm.getSession(), token);
      const me = await crm.getMe();
      assert.equal(me.id, token.profile_id);
      assert.equal(me.email ?? null, null);
      assert.equal(me.verified, false);
    });

    it("connect sends the guest session: the guest gets the email and keeps its id", async () => {
      const { crm } = server.client();
      const guest = await crm.initialize();
      const email = uniqueEmail("upgrade");
      const token = await crm.connect({ email });
      assert.equal(token.profile_id, guest.profile_id);
      assert.notEqual(token.id, guest.id, "connect answers a fresh session");
      assert.deepEqual(await crm.getSession(), token);
      const me = await crm.getMe();
      assert.equal(me.email, email);
      assert.ok(me.auth_tokens.length > 0, "a session that gave the profile its email holds it");
    });

    it("connect without a session creates a profile for a new email", async () => {
      const { crm } = server.client();
      const email = uniqueEmail("fresh");
      const token = await crm.connect({ email });
      const me = await crm.getMe();
      assert.equal(me.id, token.profile_id);
      assert.equal(me.email, email);
    });

    it("connect to an existing email is a claim; verify with the mailed code gives a full session", async () => {
      const admin = server.client({ admin: true }).crm;
      const email = uniqueEmail("claim");
      const existing = await admin.create({ email });
      const audience = await admin.audiences.create({ key: `claim-${Date.now()}` });
      await admin.audiences.addSubscriber({ id: audience.id, profileId: existing.id });

      const { crm } = server.client();
      await crm.initialize();
      const claim = await crm.connect({ email });
      assert.equal(claim.profile_id, existing.id);
      assert.equal(claim.is_verified, false);
      const redacted = await crm.getMe();
      assert.equal(redacted.id, existing.id);
      assert.deepEqual(redacted.auth_tokens, []);
      assert.deepEqual(redacted.verification_codes, []);
      const denied = await crm.audiences.checkAccess({ id: audience.id });
      assert.equal(denied.has_access, false);
      assert.equal(denied.reason, "verification_required");
      await assert.rejects(crm.getTokens({ id: existing.id }), (e: unknown) => {
        assert.ok(e instanceof StoreCrmError);
        assert.equal(e.status, 403);
        assert.equal(e.code, "verification_required");
        return true;
      });

      assert.deepEqual(await crm.requestCode({ email }), { sent: true });
      const code = await latestCode(server.mailDir, email);
      const verified = await crm.verify({ email, code });
      assert.equal(verified.is_verified, true);
      assert.equal(verified.profile_id, existing.id);
      assert.deepEqual(await crm.getSession(), verified);
      const me = await crm.getMe();
      assert.equal(me.verified, true);
      assert.ok(me.auth_tokens.length > 0);
      const access = await crm.audiences.checkAccess({ id: audience.key });
      assert.equal(access.has_access, true);
      assert.equal(access.subscription?.status, "active");
    });

    it("verify sends the guest session: the guest's subscriptions carry over into the profile", async () => {
      const admin = server.client({ admin: true }).crm;
      const email = uniqueEmail("carry");
      const existing = await admin.create({ email });
      const audience = await admin.audiences.create({ key: `carry-${Date.now()}` });

      const { crm } = server.client();
      const guest = await crm.initialize();
      const sub = await crm.audiences.subscribe({ id: audience.id, profileId: guest.profile_id });
      assert.equal(sub.subscription.status, "active");

      await crm.requestCode({ email });
      const token = await crm.verify({ email, code: await latestCode(server.mailDir, email) });
      assert.equal(token.profile_id, existing.id);
      const subscribers = await admin.audiences.getSubscribers({ id: audience.id });
      assert.deepEqual(
        subscribers.items.map((s) => s.profile_id),
        [existing.id],
      );
      await assert.rejects(admin.get({ id: guest.profile_id }), { status: 404, code: "not_found" });
      assert.equal((await crm.audiences.checkAccess({ id: audience.id })).has_access, true);
    });

    it("verify with a wrong code throws invalid_code and keeps the stored session", async () => {
      const { crm } = server.client();
      const guest = await crm.initialize();
      const email = uniqueEmail("wrong");
      await crm.requestCode({ email });
      const code = await latestCode(server.mailDir, email);
      const wrong = code === "000000" ? "111111" : "000000";
      await assert.rejects(crm.verify({ email, code: wrong }), { status: 401, code: "invalid_code" });
      assert.deepEqual(await crm.getSession(), guest);
    });

    it("requestCode answers {sent: true} for an unknown email", async () => {
      const { crm } = server.client();
      assert.deepEqual(await crm.requestCode({ email: uniqueEmail("unknown") }), { sent: true });
    });

    it("refreshToken rotates the stored session; a given refresh token is refreshed and stored", async () => {
      const { crm } = server.client();
      const first = await crm.initialize();
      const second = await crm.refreshToken();
      assert.equal(second.id, first.id, "same session");
      assert.notEqual(second.refresh_token, first.refresh_token);
      assert.deepEqual(await crm.getSession(), second);

      const other = server.client();
      const third = await other.crm.refreshToken({ refreshToken: second.refresh_token });
      assert.equal(third.id, first.id);
      assert.deepEqual(await other.crm.getSession(), third);
      assert.equal((await other.crm.getMe()).id, first.profile_id);
    });

    it("refreshToken without a stored session throws no_session", async () => {
      const { crm } = server.client();
      await assert.rejects(crm.refreshToken(), { status: 401, code: "no_session" });
    });

    it("logout revokes the session and clears the storage", async () => {
      const { crm } = server.client();
      const token = await crm.initialize();
      assert.deepEqual(await crm.logout(), { logged_out: true });
      assert.equal(await crm.getSession(), null);
      // the old access token is refused from now on
      const stale = server.client({ storage: memoryStorage(token) });
      await assert.rejects(stale.crm.getMe(), { status: 401 });
      assert.equal(await stale.crm.getSession(), null, "the failed refresh cleared it");
      // logging out again is harmless
      assert.deepEqual(await crm.logout(), { logged_out: true });
    });

    it("revokeToken and revokeAllTokens by the profile itself end the stored session", async () => {
      const { crm } = server.client();
      await crm.connect({ email: uniqueEmail("self") });
      const token = await crm.connect({ email: uniqueEmail("self2") });
      const sessions = await crm.getTokens({ id: token.profile_id });
      assert.ok(sessions.items.some((s) => s.id === token.id));
      assert.deepEqual(await crm.revokeToken({ id: token.profile_id, tokenId: token.id }), { deleted: true });
      assert.equal(await crm.getSession(), null);

      const again = await crm.connect({ email: uniqueEmail("self3") });
      assert.deepEqual(await crm.revokeAllTokens({ id: again.profile_id }), { deleted: true });
      assert.equal(await crm.getSession(), null);
      await assert.rejects(server.client({ storage: memoryStorage(again) }).crm.getMe(), { status: 401 });
    });

    it("getMe without a session answers the server's 401", async () => {
      const { crm } = server.client();
      await assert.rejects(crm.getMe(), (e: unknown) => {
        assert.ok(e instanceof StoreCrmError);
        assert.equal(e.status, 401);
        assert.equal(e.code, "unauthorized");
        assert.ok(e.requestId !== undefined && e.requestId.length > 0);
        return true;
      });
    });

    it("localStorageStorage keeps the session as JSON under its key", async () => {
      const backing = new Map<string, string>();
      const fake: WebStorageLike = {
        getItem: (k) => backing.get(k) ?? null,
        setItem: (k, v) => void backing.set(k, v),
        removeItem: (k) => void backing.delete(k),
      };
      const { crm } = server.client({ storage: localStorageStorage("shop.session", fake) });
      const token = await crm.initialize();
      assert.deepEqual(JSON.parse(backing.get("shop.session") ?? "null"), token);
      // a second client over the same storage (a reload) continues the session
      const reloaded = server.client({ storage: localStorageStorage("shop.session", fake) });
      assert.equal((await reloaded.crm.getMe()).id, token.profile_id);
      await reloaded.crm.logout();
      assert.equal(backing.has("shop.session"), false);
      // an unreadable entry is no session
      backing.set("shop.session", "{not json");
      assert.equal(await reloaded.crm.getSession(), null);
      // without a localStorage and without a store, the first use says so
      assert.throws(() => localStorageStorage("k").get(), TypeError);
    });

    it("any asynchronous { get, set, clear } works as storage", async () => {
      let saved: AuthToken | null = null;
      const log: string[] = [];
      const storage: TokenStorage = {
        get: async () => {
          log.push("get");
          return saved;
        },
        set: async (t) => {
          log.push("set");
          saved = t;
        },
        clear: async () => {
          log.push("clear");
          saved = null;
        },
      };
      const { crm } = server.client({ storage });
      const token = await crm.initialize();
      assert.deepEqual(saved, token);
      assert.equal((await crm.getMe()).id, token.profile_id);
      await crm.logout();
      assert.equal(saved, null);
      assert.deepEqual(log.slice(0, 2), ["set", "get"]);
    });
  });
}
