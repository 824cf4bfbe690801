/**
 * Test support: starts the real `storecrm` binary on a free port with a fresh database (SQLite,
 * or Postgres when TEST_DATABASE_URL is set), bootstraps an account, a store and an API key with
 * the CLI, and reads the mail the server writes as .eml files.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type IncomingHttpHeaders } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

import { createClient, type ClientOptions, type StoreCrmClient } from "@storecrm/sdk";

/** The package folder (`sdk/typescript`); compiled tests live in `build-test/test/`. */
export const packageRoot = fileURLToPath(new URL("../../", import.meta.url));

export function binaryPath(): string {
  const configured = process.env["STORECRM_BIN"] ?? "../../target/debug/storecrm";
  return resolve(packageRoot, configured);
}

export type Backend = "sqlite" | "postgres";

/** The backends to run: SQLite always, Postgres when TEST_DATABASE_URL is set. */
export function backends(): { backend: Backend; skip: string | false }[] {
  const pg = process.env["TEST_DATABASE_URL"];
  return [
    { backend: "sqlite", skip: false },
    { backend: "postgres", skip: pg !== undefined && pg !== "" ? false : "TEST_DATABASE_URL is not set: Postgres half skipped" },
  ];
}

/** Settings every test server gets; per-file servers add their own. */
const BASE_ENV: Record<string, string> = {
  RUST_LOG: "warn",
  LOG_FORMAT: "pretty",
  MAIL_POLL_INTERVAL_MS: "50",
  // The tests come from one address: keep the per-address limits out of the way...
  SESSION_LIMIT_PER_ADDRESS: "100000",
  CODE_LIMIT_PER_IP: "100000",
  LOGIN_LIMIT_PER_ADDRESS: "100000",
  // ...and make the per-email code limit small enough to test 429.
  CODE_LIMIT_PER_EMAIL: "2",
};

/** Variables of the server that must not leak in from the shell running the tests. */
const SERVER_VARS = [
  "DATABASE_URL",
  "LISTEN_ADDR",
  "PUBLIC_BASE_URL",
  "SECRET_KEY",
  "SMTP_URL",
  "MAIL_DIR",
  "MAIL_FROM",
  "MAIL_WORKER",
  "STRIPE_SECRET_KEY",
  "STRIPE_WEBHOOK_SECRET",
  "STRIPE_API_BASE",
  "CORS_ALLOWED_ORIGINS",
  "TRUSTED_PROXY_HOPS",
  "WEBHOOKS_ALLOW_PRIVATE",
  "WEBHOOK_WORKER",
  "WEBHOOK_POLL_INTERVAL_MS",
  "WEBHOOK_RETRY_SCHEDULE_SECS",
  "EVENT_FEED_DELAY_SECS",
];

export interface Server {
  backend: Backend;
  /** `http://127.0.0.1:<port>` */
  url: string;
  storeId: string;
  apiKey: string;
  ownerEmail: string;
  ownerPassword: string;
  mailDir: string;
  databaseUrl: string;
  /** Runs `storecrm <args>` against the same database; answers its JSON. */
  cli(args: string[], stdin?: string): unknown;
  /** A client of this server's store; `admin: true` adds the API key. */
  client(opts?: Partial<ClientOptions> & { admin?: boolean }): StoreCrmClient;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => ok(port));
    });
  });
}

function psql(url: string, sql: string): void {
  const r = spawnSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], { encoding: "utf8" });
  if (r.error !== undefined) throw new Error(`psql could not run: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`psql failed (${sql}): ${r.stderr}`);
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of SERVER_VARS) delete env[k];
  return { ...env, ...BASE_ENV, ...extra };
}

async function waitReady(url: string, child: ChildProcess, log: () => string): Promise<boolean> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    try {
      const res = await fetch(`${url}/readyz`);
      if (res.status === 200) return true;
    } catch {
      // not listening yet
    }
    await sleep(25);
  }
  throw new Error(`storecrm did not become ready within 60 s:\n${log()}`);
}

/** Starts a server with a fresh database; `env` adds or overrides settings. */
export async function startServer(backend: Backend, env: Record<string, string> = {}): Promise<Server> {
  const bin = binaryPath();
  if (!existsSync(bin)) {
    throw new Error(`storecrm binary not found at ${bin}: run \`cargo build\` at the repository root or set STORECRM_BIN`);
  }
  const dir = mkdtempSync(join(tmpdir(), "storecrm-sdk-"));
  const mailDir = join(dir, "mail");
  const secret = randomBytes(32).toString("hex");
  let databaseUrl: string;
  let dropDatabase: (() => void) | undefined;
  if (backend === "postgres") {
    const admin = process.env["TEST_DATABASE_URL"];
    if (admin === undefined || admin === "") throw new Error("TEST_DATABASE_URL is not set");
    const name = `sdk_test_${Date.now()}_${randomBytes(6).toString("hex")}`;
    psql(admin, `CREATE DATABASE "${name}"`);
    databaseUrl = withDatabase(admin, name);
    dropDatabase = () => psql(admin, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  } else {
    databaseUrl = `sqlite://${join(dir, "crm.db")}`;
  }
  const common = { DATABASE_URL: databaseUrl, SECRET_KEY: secret, MAIL_DIR: mailDir, ...env };

  let child: ChildProcess | undefined;
  let url = "";
  let stderr = "";
  try {
    for (let attempt = 0; attempt < 5 && child === undefined; attempt++) {
      const port = await freePort();
      url = `http://127.0.0.1:${port}`;
      stderr = "";
      const c = spawn(bin, ["serve"], {
        cwd: dir,
        env: childEnv({ ...common, LISTEN_ADDR: `127.0.0.1:${port}` }),
        stdio: ["ignore", "ignore", "pipe"],
      });
      c.stderr?.setEncoding("utf8").on("data", (d: string) => {
        stderr = (stderr + d).slice(-20_000);
      });
      if (await waitReady(url, c, () => stderr)) child = c;
      // exited early (the port was taken meanwhile, say): try another port
    }
    if (child === undefined) throw new Error(`storecrm did not start:\n${stderr}`);
  } catch (err) {
    dropDatabase?.();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const proc = child;

  const cli = (args: string[], stdin?: string): unknown => {
    const r = spawnSync(bin, args, { cwd: dir, env: childEnv(common), input: stdin ?? "", encoding: "utf8" });
    if (r.status !== 0) throw new Error(`storecrm ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
    return JSON.parse(r.stdout);
  };

  const ownerEmail = `owner-${randomBytes(4).toString("hex")}@example.com`;
  const ownerPassword = `pw-${randomBytes(12).toString("hex")}`;
  cli(["accounts", "create", "--email", ownerEmail, "--password-stdin"], `${ownerPassword}\n`);
  const store = cli(["stores", "create", "--name", "SDK Test Shop", "--owner", ownerEmail]) as { store: { id: string } };
  const key = cli(["api-keys", "create", "--store", store.store.id, "--name", "sdk-tests"]) as { api_key: { key: string } };

  const server: Server = {
    backend,
    url,
    storeId: store.store.id,
    apiKey: key.api_key.key,
    ownerEmail,
    ownerPassword,
    mailDir,
    databaseUrl,
    cli,
    client: (opts = {}) => {
      const { admin, ...rest } = opts;
      return createClient({
        baseUrl: url,
        storeId: store.store.id,
        ...(admin === true ? { apiKey: key.api_key.key } : {}),
        ...rest,
      });
    },
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise<void>((ok) => proc.once("exit", () => ok()));
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(timer);
      }
      try {
        dropDatabase?.();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  return server;
}

// ---- mail ---------------------------------------------------------------------------------

export interface Mail {
  file: string;
  to: string;
  subject: string;
  /** All text and HTML parts, transfer-decoded. */
  text: string;
  headers: Record<string, string>;
}

function decodeQuotedPrintable(s: string): string {
  const soft = s.replace(/=\r?\n/g, "");
  const bytes: number[] = [];
  for (let i = 0; i < soft.length; i++) {
    const ch = soft[i] ?? "";
    const hex = soft.slice(i + 1, i + 3);
    if (ch === "=" && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      for (const b of Buffer.from(ch, "utf8")) bytes.push(b);
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

function decodeEncodedWords(s: string): string {
  return s.replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=/g, (_m, _charset: string, enc: string, data: string) =>
    enc.toUpperCase() === "B"
      ? Buffer.from(data, "base64").toString("utf8")
      : decodeQuotedPrintable(data.replace(/_/g, " ")),
  );
}

export function parseMail(file: string): Mail {
  const raw = readFileSync(file, "utf8").replace(/\r\n/g, "\n");
  const split = raw.indexOf("\n\n");
  const head = split < 0 ? raw : raw.slice(0, split);
  const body = split < 0 ? "" : raw.slice(split + 2);
  const headers: Record<string, string> = {};
  for (const line of head.replace(/\n[ \t]+/g, " ").split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const text = body
    .split(/\n--[^\n]+\n/)
    .map((part) => {
      const p = part.indexOf("\n\n");
      if (p < 0) return part;
      const partHead = part.slice(0, p).toLowerCase();
      const partBody = part.slice(p + 2);
      if (partHead.includes("quoted-printable")) return decodeQuotedPrintable(partBody);
      if (partHead.includes("base64")) return Buffer.from(partBody.replace(/\s+/g, ""), "base64").toString("utf8");
      return partBody;
    })
    .join("\n");
  return {
    file,
    to: decodeEncodedWords(headers["to"] ?? ""),
    subject: decodeEncodedWords(headers["subject"] ?? ""),
    text: headers["content-transfer-encoding"]?.toLowerCase() === "quoted-printable" ? decodeQuotedPrintable(text) : text,
    headers,
  };
}

/** The newest mail to `to` that `match` accepts, waiting for it up to `timeoutMs`. */
export async function waitForMail(
  dir: string,
  to: string,
  match: (m: Mail) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<Mail> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (existsSync(dir)) {
      const files = readdirSync(dir)
        .filter((f) => f.endsWith(".eml"))
        .sort()
        .reverse();
      for (const f of files) {
        const mail = parseMail(join(dir, f));
        if (mail.to.toLowerCase().includes(to.toLowerCase()) && match(mail)) return mail;
      }
    }
    if (Date.now() > deadline) throw new Error(`no mail to ${to} within ${timeoutMs} ms`);
    await sleep(25);
  }
}

/** Mails sent to `to` so far. */
export function mailsTo(dir: string, to: string): Mail[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".eml"))
    .sort()
    .map((f) => parseMail(join(dir, f)))
    .filter((m) => m.to.toLowerCase().includes(to.toLowerCase()));
}

/** The sign-in code of the newest code mail to `email` (the code leads the Subject). */
export async function latestCode(dir: string, email: string, notBefore?: string): Promise<string> {
  const mail = await waitForMail(dir, email, (m) => /^\d{6}\b/.test(m.subject) && (notBefore === undefined || m.file > notBefore));
  return mail.subject.slice(0, 6);
}

/** The `token` of the newest mail to `email` whose link has one. */
export async function latestLinkToken(dir: string, email: string, base = "http://localhost:3000/confirm"): Promise<string> {
  const mail = await waitForMail(dir, email, (m) => m.text.includes(`${base}?token=`));
  const found = new RegExp(`${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\?token=([A-Za-z0-9_.~-]+)`).exec(mail.text);
  if (found === null || found[1] === undefined) throw new Error(`no confirm link in ${mail.file}`);
  return decodeURIComponent(found[1]);
}

// ---- misc ---------------------------------------------------------------------------------

export function uniqueEmail(tag: string): string {
  return `${tag}-${randomBytes(5).toString("hex")}@example.com`;
}

/** A fetch wrapper that counts requests per "METHOD /path" (store prefix and query removed). */
export function countingFetch(inner: typeof fetch = fetch): {
  fetch: (input: string, init: RequestInit) => Promise<Response>;
  count: (route: string) => number;
  calls: string[];
} {
  const calls: string[] = [];
  return {
    calls,
    fetch: (input, init) => {
      const path = new URL(input).pathname.replace(/^\/v1\/stores\/[^/]+/, "");
      calls.push(`${init.method ?? "GET"} ${path}`);
      return inner(input, init);
    },
    count: (route) => calls.filter((c) => c === route).length,
  };
}

/** Admin helpers for things the SDK's `crm` does not wrap (templates, taxonomies, store settings). */
export async function createConfirmTemplate(client: StoreCrmClient, key: string): Promise<{ id: string }> {
  return client.request<{ id: string }>({
    method: "POST",
    path: "/email-templates",
    body: { key, subject: "Please confirm", body: '<p><a href="{{ confirm_url }}">Confirm your subscription</a></p>' },
  });
}

// ---- webhooks -----------------------------------------------------------------------------

/** One request a `Receiver` got. */
export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  /** The raw body, as the server sent it. */
  body: Buffer;
}

/** A local HTTP server that records every request and answers `status(path)` (200 by default). */
export interface Receiver {
  /** `http://127.0.0.1:<port>` */
  url: string;
  received: Received[];
  /** The status answered for a path; set an entry to make one endpoint fail. */
  statusFor: Map<string, number>;
  /** The first request (received already or later) that `match` accepts, within `timeoutMs`. */
  waitFor(match: (r: Received) => boolean, timeoutMs?: number): Promise<Received>;
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  const statusFor = new Map<string, number>();
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = req.url ?? "/";
      received.push({ path, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(statusFor.get(path) ?? 200, { "content-type": "text/plain" }).end("ok");
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => ok());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    statusFor,
    waitFor: async (match, timeoutMs = 15_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = received.find(match);
        if (hit !== undefined) return hit;
        if (Date.now() > deadline) throw new Error(`no matching webhook request within ${timeoutMs} ms (${received.length} received)`);
        await sleep(20);
      }
    },
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

/** Polls `get` until `done` accepts its answer (within `timeoutMs`). */
export async function eventually<T>(get: () => Promise<T>, done: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${JSON.stringify(v)}`);
    await sleep(50);
  }
}
