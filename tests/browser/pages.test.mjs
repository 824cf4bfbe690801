// The hosted confirm and unsubscribe pages, as a person uses them: open the link from a real mail
// in the mail folder, in a real (headless) Chromium, press the button, read the result page, and
// find the subscription changed; opening a link alone changes nothing.
//
// Needs the storecrm binary (STORECRM_BIN, default ../../target/debug/storecrm) and Chromium
// (CHROMIUM, default /usr/bin/chromium); scripts/browser-tests.sh provides both.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createServer } from "node:net";
import { chromium } from "playwright-core";

const BIN = resolve(process.env.STORECRM_BIN ?? new URL("../../target/debug/storecrm", import.meta.url).pathname);
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

let dir, server, base, env, browser, storeId, apiKey;

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on("error", fail);
  });
}

async function api(method, path, body, token = apiKey) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** The newest .eml to `to`, decoded from quoted-printable, waiting for the outbox worker. */
async function mailTo(to) {
  const mailDir = join(dir, "mail");
  for (let i = 0; i < 100; i++) {
    const files = readdirSync(mailDir, { withFileTypes: true })
      .filter((f) => f.isFile() && f.name.endsWith(".eml"))
      .map((f) => readFileSync(join(mailDir, f.name), "utf8"))
      .filter((m) => m.toLowerCase().includes(`to: ${to}`));
    if (files.length) {
      return files
        .at(-1)
        .replace(/=\r?\n/g, "")
        .replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no mail to ${to}`);
}

/** A link of the server's, pointed at the test server (links are built on PUBLIC_BASE_URL). */
const local = (link) => base + link.slice(link.indexOf("/v1/"));

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "storecrm-browser-"));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  env = {
    ...process.env,
    DATABASE_URL: `sqlite://${join(dir, "crm.db")}`,
    LISTEN_ADDR: `127.0.0.1:${port}`,
    PUBLIC_BASE_URL: base,
    MAIL_DIR: join(dir, "mail"),
    MAIL_POLL_INTERVAL_MS: "50",
    RUST_LOG: "warn",
  };
  const init = execFileSync(BIN, ["init", "--email", "ops@example.com", "--password-stdin", "--store-name", "Shop <&> Co"], {
    env,
    input: "a long password\n",
  });
  const boot = JSON.parse(init.toString());
  storeId = boot.store.id;
  apiKey = boot.api_key.key;
  server = spawn(BIN, ["serve"], { env, stdio: ["ignore", "inherit", "inherit"] });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) break;
    } catch {}
    if (i > 200) throw new Error("the server did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("a person confirms and unsubscribes from a real mail with nothing but a browser", async () => {
  const s = `/v1/stores/${storeId}`;
  const template = await api("POST", `${s}/email-templates`, {
    key: "confirm",
    subject: "Please confirm {{ audience_name }}",
    body: '<p>Hello! <a href="{{ confirm_url }}">Confirm</a> your subscription to {{ audience_name }}.</p>',
  });
  assert.equal(template.status, 201, JSON.stringify(template.body));
  const audience = await api("POST", `${s}/audiences`, { key: "news", name: "Weekly <News>", confirm_template_id: template.body.id });
  assert.equal(audience.status, 201);
  const profile = await api("POST", `${s}/profiles`, { email: "reader@example.com" });
  const sub = await api("POST", `${s}/audiences/news/subscribe`, { profile_id: profile.body.id });
  assert.equal(sub.body.subscription.status, "pending");
  const access = async () => (await api("GET", `${s}/audiences/news/subscribers`)).body.items[0].status;

  const mail = await mailTo("reader@example.com");
  const confirmLink = mail.match(/href="([^"]*\/audiences\/confirm\?token=[^"]+)"/)[1].replaceAll("&amp;", "&");
  const page = await browser.newPage();

  // Opening the link shows the page and changes nothing (mail scanners open links too).
  const shown = await page.goto(local(confirmLink));
  assert.equal(shown.status(), 200);
  assert.equal(shown.headers()["cache-control"], "no-store");
  assert.match(shown.headers()["content-security-policy"], /default-src 'none'/);
  assert.match(await page.textContent("main"), /Weekly <News>/);
  assert.match(await page.textContent("main"), /Shop <&> Co/);
  assert.equal(await access(), "pending");

  await Promise.all([page.waitForNavigation(), page.click("button")]);
  assert.equal(await page.textContent("h1"), "Subscription confirmed");
  assert.equal(await access(), "active");

  // The mail's unsubscribe link: page, button, done; again, the same page.
  const unsubscribeLink = mail.match(/List-Unsubscribe: <([^>]+)>/)[1];
  await page.goto(local(unsubscribeLink));
  assert.equal(await page.textContent("h1"), "Unsubscribe");
  assert.equal(await access(), "active", "opening the link unsubscribes nobody");
  await Promise.all([page.waitForNavigation(), page.click("button")]);
  assert.equal(await page.textContent("h1"), "You are unsubscribed");
  assert.equal(await access(), "cancelled");
  await page.goto(local(unsubscribeLink));
  assert.equal(await page.textContent("h1"), "You are unsubscribed");

  // A used confirmation link says so.
  const used = await page.goto(local(confirmLink));
  assert.equal(used.status(), 404);
  assert.equal(await page.textContent("h1"), "This link does not work");
  await page.close();
});
