import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import type { Crm } from "@storecrm/sdk";

import { backends, latestCode, packageRoot, startServer, uniqueEmail, type Server } from "./helpers.js";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** The JSON of the script's closing `done: {...}` line. */
  done: Record<string, unknown>;
}

function runExample(name: string, env: Record<string, string | undefined>): Promise<Run> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ["STORECRM_URL", "STORE_ID", "API_KEY", "MAIL_DIR", "EMAIL", "CODE", "AUDIENCE", "SESSION_FILE"]) delete childEnv[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) childEnv[k] = v;
  return new Promise((ok) => {
    const child = execFile(
      process.execPath,
      [join("examples", name)],
      { cwd: packageRoot, env: childEnv, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
        const line = stdout.split("\n").find((l) => l.startsWith("done: "));
        ok({ code, stdout, stderr, done: line === undefined ? {} : (JSON.parse(line.slice(6)) as Record<string, unknown>) });
      },
    );
    child.stdin?.end();
  });
}

for (const { backend, skip } of backends()) {
  describe(`${backend}: the reference's typical flows (examples/)`, { skip }, () => {
    let server: Server;
    let admin: Crm;
    let env: Record<string, string>;
    before(async () => {
      server = await startServer(backend);
      admin = server.client({ admin: true }).crm;
      env = { STORECRM_URL: server.url, STORE_ID: server.storeId, API_KEY: server.apiKey, MAIL_DIR: server.mailDir };
    });
    after(async () => {
      await server?.stop();
    });

    it("checkout.mjs: initialize, connect, the order linked with the API key", async () => {
      const email = uniqueEmail("ex-shopper");
      const run = await runExample("checkout.mjs", { ...env, EMAIL: email, ORDER_ID: "ex-order-1" });
      assert.equal(run.code, 0, run.stderr + run.stdout);
      assert.equal(run.done["email"], email);
      const profileId = String(run.done["profile_id"]);
      assert.equal((await admin.get({ id: profileId })).email, email);
      assert.deepEqual(
        (await admin.getOrders({ id: profileId })).items.map((o) => o.order_id),
        ["ex-order-1"],
      );
      assert.match(run.stdout, /\(same profile\)/, "the guest kept its id");
    });

    it("newsletter-double-opt-in.mjs: pending, confirmed from the mail, access granted; setup is reused on a second run", async () => {
      for (const round of [1, 2]) {
        const email = uniqueEmail(`ex-reader${round}`);
        const run = await runExample("newsletter-double-opt-in.mjs", { ...env, EMAIL: email });
        assert.equal(run.code, 0, run.stderr + run.stdout);
        assert.match(run.stdout, /is pending; a confirmation mail is on its way/);
        assert.deepEqual([run.done["status"], run.done["has_access"]], ["active", true]);
      }
      const audience = await admin.audiences.get({ id: "newsletter" });
      assert.ok(audience.confirm_template_id);
      assert.equal(audience.subscriber_count, 2);
    });

    it("newsletter-double-opt-in.mjs without MAIL_DIR stops at the pending subscription", async () => {
      const run = await runExample("newsletter-double-opt-in.mjs", { ...env, MAIL_DIR: undefined, AUDIENCE: "digest" });
      assert.equal(run.code, 0, run.stderr + run.stdout);
      assert.equal(run.done["status"], "pending");
    });

    it("magic-code-login.mjs: the code read from MAIL_DIR gives a verified session", async () => {
      const email = uniqueEmail("ex-login");
      const run = await runExample("magic-code-login.mjs", {
        ...env,
        EMAIL: email,
        SESSION_FILE: join(server.mailDir, "..", "session.json"),
      });
      assert.equal(run.code, 0, run.stderr + run.stdout);
      assert.equal(run.done["verified"], true);
      assert.equal((await admin.get({ id: String(run.done["profile_id"]) })).verified, true);
    });

    it("magic-code-login.mjs: without MAIL_DIR it asks for CODE, and a second run with CODE verifies", async () => {
      const email = uniqueEmail("ex-code");
      const sessionFile = join(server.mailDir, "..", "session-code.json");
      const first = await runExample("magic-code-login.mjs", { ...env, MAIL_DIR: undefined, EMAIL: email, SESSION_FILE: sessionFile });
      assert.equal(first.code, 0, first.stderr + first.stdout);
      assert.match(first.stdout, /CODE=<the code>/);
      const code = await latestCode(server.mailDir, email);
      const second = await runExample("magic-code-login.mjs", {
        ...env,
        MAIL_DIR: undefined,
        EMAIL: email,
        CODE: code,
        SESSION_FILE: sessionFile,
      });
      assert.equal(second.code, 0, second.stderr + second.stdout);
      assert.equal(second.done["verified"], true);
    });

    it("the examples explain their settings when STORE_ID is missing", async () => {
      const run = await runExample("checkout.mjs", { STORECRM_URL: server.url });
      assert.equal(run.code, 2);
      assert.match(run.stderr, /Set STORE_ID/);
    });
  });
}
