import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { memoryStorage, StoreCrmError, type AuthToken, type Crm, type TokenStorage } from "@storecrm/sdk";

import { backends, countingFetch, latestCode, startServer, uniqueEmail, type Server } from "./helpers.js";

/** Short lifetimes, so a real expiry and the end of the grace window come within seconds. */
const ACCESS_TTL = 2;
const GRACE = 2;

const REFRESH = "POST /profiles/auth/refresh";

/** An access token the server refuses (its signature broken), as an expired one is refused. */
async function breakAccessToken(storage: TokenStorage): Promise<AuthToken> {
  const t = await storage.get();
  assert.ok(t, "a session is stored");
  const sig = t.access_token.slice(-4);
  const broken = { ...t, access_token: t.access_token.slice(0, -4) + (sig === "AAAA" ? "BBBB" : "AAAA") };
  await storage.set(broken);
  return broken;
}

/** Storage over a shared backing Map: two of these are two tabs over one localStorage. */
function tabStorage(backing: Map<string, string>, key = "session"): TokenStorage {
  return {
    get: () => {
      const raw = backing.get(key);
      return raw === undefined ? null : (JSON.parse(raw) as AuthToken);
    },
    set: (t) => void backing.set(key, JSON.stringify(t)),
    clear: () => void backing.delete(key),
  };
}

for (const { backend, skip } of backends()) {
  describe(`${backend}: session refresh`, { skip }, () => {
    let server: Server;
    let admin: Crm;
    before(async () => {
      server = await startServer(backend, {
        ACCESS_TOKEN_TTL_SECS: String(ACCESS_TTL),
        REFRESH_REUSE_GRACE_SECS: String(GRACE),
      });
      admin = server.client({ admin: true }).crm;
    });
    after(async () => {
      await server?.stop();
    });

    it("ten concurrent calls that meet a refused access token cause exactly one refresh", async () => {
      const counting = countingFetch();
      const storage = memoryStorage();
      const { crm } = server.client({ storage, fetch: counting.fetch });
      const { profile_id } = await crm.connect({ email: uniqueEmail("flight") });
      const audience = await admin.audiences.create({ key: `flight-${Date.now()}` });
      const stale = await breakAccessToken(storage);

      const results = await Promise.all([
        ...Array.from({ length: 7 }, () => crm.getMe()),
        ...Array.from({ length: 3 }, () => crm.audiences.checkAccess({ id: audience.id })),
      ]);
      assert.equal(counting.count(REFRESH), 1);
      assert.equal(results.length, 10);
      for (const r of results.slice(0, 7)) assert.equal((r as { id: string }).id, profile_id);
      assert.equal(counting.count("GET /profiles/me"), 14, "each call was sent twice: refused, then retried");
      const now = await storage.get();
      assert.notEqual(now?.refresh_token, stale.refresh_token);
    });

    it("ten concurrent calls after the access token really expired cause exactly one refresh", async () => {
      const counting = countingFetch();
      const { crm } = server.client({ fetch: counting.fetch });
      const token = await crm.initialize();
      // the token is refused once the clock is past its exp (no leeway)
      await sleep((token.access_expires_at + 1) * 1000 - Date.now() + 100);
      const before = counting.calls.length;
      const answers = await Promise.all(Array.from({ length: 10 }, () => crm.getMe()));
      assert.ok(answers.every((a) => a.id === token.profile_id));
      assert.equal(counting.count(REFRESH), 1);
      assert.equal(counting.calls.length - before, 21, "10 refused, 1 refresh, 10 retried");
    });

    it("a call refused after another call's refresh finished uses the new session without refreshing again", async () => {
      const counting = countingFetch();
      let releaseSlow: () => void = () => undefined;
      const slowGate = new Promise<void>((ok) => (releaseSlow = ok));
      let slowSeen = false;
      const storage = memoryStorage();
      const { crm } = server.client({
        storage,
        fetch: async (url, init) => {
          const res = await counting.fetch(url, init);
          // hold the first answer to the access check until the other call has refreshed
          if (!slowSeen && url.includes("/access")) {
            slowSeen = true;
            await slowGate;
          }
          return res;
        },
      });
      const { profile_id } = await crm.connect({ email: uniqueEmail("late") });
      const audience = await admin.audiences.create({ key: `late-${Date.now()}` });
      await breakAccessToken(storage);
      const slow = crm.audiences.checkAccess({ id: audience.id });
      const me = await crm.getMe();
      assert.equal(me.id, profile_id);
      assert.equal(counting.count(REFRESH), 1);
      releaseSlow();
      assert.equal((await slow).has_access, false);
      assert.equal(counting.count(REFRESH), 1, "the late 401 found the refreshed session in storage");
    });

    it("two clients sharing one storage object share one refresh", async () => {
      const counting = countingFetch();
      const storage = memoryStorage();
      const a = server.client({ storage, fetch: counting.fetch }).crm;
      const b = server.client({ storage, fetch: counting.fetch }).crm;
      const token = await a.initialize();
      await breakAccessToken(storage);
      const [meA, meB] = await Promise.all([a.getMe(), b.getMe()]);
      assert.equal(meA.id, token.profile_id);
      assert.equal(meB.id, token.profile_id);
      assert.equal(counting.count(REFRESH), 1);
    });

    it("two tabs refreshing the same refresh token at once get the same successor; the session lives on", async () => {
      const backing = new Map<string, string>();
      const counting = countingFetch();
      // hold each refresh until both tabs have sent theirs, so both present the same token
      let pending = 0;
      let releaseBoth: () => void = () => undefined;
      const both = new Promise<void>((ok) => (releaseBoth = ok));
      const gated = async (url: string, init: RequestInit): Promise<Response> => {
        if (url.endsWith("/profiles/auth/refresh")) {
          if (++pending === 2) releaseBoth();
          await Promise.race([both, sleep(3_000)]);
          const sent = JSON.parse(String(init.body)) as { refresh_token: string };
          sentTokens.push(sent.refresh_token);
        }
        return counting.fetch(url, init);
      };
      const sentTokens: string[] = [];
      const tab1 = server.client({ storage: tabStorage(backing), fetch: gated }).crm;
      const tab2 = server.client({ storage: tabStorage(backing), fetch: gated }).crm;
      const token = await tab1.initialize();
      await breakAccessToken(tabStorage(backing));

      const [me1, me2] = await Promise.all([tab1.getMe(), tab2.getMe()]);
      assert.equal(me1.id, token.profile_id);
      assert.equal(me2.id, token.profile_id);
      assert.equal(counting.count(REFRESH), 2, "each tab refreshed");
      assert.deepEqual(sentTokens, [token.refresh_token, token.refresh_token], "with the same refresh token");
      const stored = await tabStorage(backing).get();
      assert.ok(stored && stored.refresh_token !== token.refresh_token);

      // no reuse was detected: the chain goes on from the shared successor
      const next = await tab2.refreshToken();
      assert.equal(next.id, token.id);
      assert.equal((await tab1.getMe()).id, token.profile_id);
    });

    it("a refresh token presented again within the grace window answers the same successor", async () => {
      const { crm } = server.client();
      const first = await crm.initialize();
      const a = await server.client().crm.refreshToken({ refresh_token: first.refresh_token });
      const b = await server.client().crm.refreshToken({ refresh_token: first.refresh_token });
      assert.equal(a.refresh_token, b.refresh_token);
      assert.equal(a.id, first.id);
    });

    it("reuse after the grace window revokes the session: refresh_token_reused, and the next call clears the storage", async () => {
      const storage = memoryStorage();
      const { crm } = server.client({ storage });
      const first = await crm.initialize();
      await crm.refreshToken();
      await sleep((GRACE + 1.2) * 1000);
      const thief = server.client();
      await assert.rejects(thief.crm.refreshToken({ refreshToken: first.refresh_token }), (e: unknown) => {
        assert.ok(e instanceof StoreCrmError);
        assert.deepEqual([e.status, e.code], [401, "refresh_token_reused"]);
        return true;
      });
      assert.notEqual(await storage.get(), null, "the owner's storage is not the thief's");
      // the whole session is revoked: the owner's refresh fails, which clears its storage
      await breakAccessToken(storage);
      await assert.rejects(crm.getMe(), { status: 401 });
      assert.equal(await storage.get(), null);
    });

    it("a refresh that fails clears the storage and throws the refresh's error", async () => {
      const storage = memoryStorage();
      const counting = countingFetch();
      const { crm } = server.client({ storage, fetch: counting.fetch });
      const token = await crm.connect({ email: uniqueEmail("dead") });
      await admin.revokeToken({ id: token.profile_id, tokenId: token.id });
      await assert.rejects(crm.getMe(), (e: unknown) => {
        assert.ok(e instanceof StoreCrmError);
        assert.equal(e.status, 401);
        assert.ok(e.requestId !== undefined);
        return true;
      });
      assert.equal(await storage.get(), null);
      assert.equal(counting.count(REFRESH), 1);
      assert.equal(counting.count("GET /profiles/me"), 1, "no retry after a failed refresh");
    });

    it("a refresh that fails on the network keeps the session for the next try", async () => {
      const storage = memoryStorage();
      let offline = false;
      const { crm } = server.client({
        storage,
        fetch: (url, init) => (offline && url.endsWith("/auth/refresh") ? Promise.reject(new TypeError("fetch failed")) : fetch(url, init)),
      });
      const token = await crm.initialize();
      await breakAccessToken(storage);
      offline = true;
      await assert.rejects(crm.getMe(), TypeError);
      assert.equal((await storage.get())?.refresh_token, token.refresh_token);
      offline = false;
      assert.equal((await crm.getMe()).id, token.profile_id);
    });

    it("connect and verify refresh the stored session, or go on without it when it is over", async () => {
      const counting = countingFetch();
      const storage = memoryStorage();
      const { crm } = server.client({ storage, fetch: counting.fetch });
      const guest = await crm.initialize();
      await breakAccessToken(storage);
      const email = uniqueEmail("conn");
      const connected = await crm.connect({ email });
      assert.equal(connected.profile_id, guest.profile_id, "the refreshed guest session was sent");
      assert.equal(counting.count(REFRESH), 1);

      // a session that can no longer be refreshed: connect goes on without it
      await admin.revokeAllTokens({ id: connected.profile_id });
      const other = uniqueEmail("conn2");
      const fresh = await crm.connect({ email: other });
      assert.notEqual(fresh.profile_id, connected.profile_id);
      assert.deepEqual(await storage.get(), fresh);

      // verify likewise
      await admin.revokeAllTokens({ id: fresh.profile_id });
      await crm.requestCode({ email: other });
      const verified = await crm.verify({ email: other, code: await latestCode(server.mailDir, other) });
      assert.equal(verified.profile_id, fresh.profile_id);
      assert.equal(verified.is_verified, true);
      assert.deepEqual(await storage.get(), verified);
    });
  });
}
