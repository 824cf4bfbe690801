// @ts-check
// What the three examples share: the settings from the environment, and reading the mail the
// server writes as .eml files (MAIL_DIR; the default transport of a server started by `cargo run`).
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** STORECRM_URL (default http://127.0.0.1:8080), STORE_ID, API_KEY, MAIL_DIR. */
export function config() {
  const storeId = process.env.STORE_ID;
  if (!storeId) {
    console.error(
      "Set STORE_ID (and API_KEY for the admin steps); see sdk/typescript/README.md, \"Examples\".\n" +
        "  STORECRM_URL=http://127.0.0.1:8080 STORE_ID=... API_KEY=sk_... MAIL_DIR=../../mail node examples/<flow>.mjs",
    );
    process.exit(2);
  }
  return {
    baseUrl: process.env.STORECRM_URL ?? "http://127.0.0.1:8080",
    storeId,
    apiKey: process.env.API_KEY,
    mailDir: process.env.MAIL_DIR,
  };
}

/** @param {string | undefined} apiKey */
export function requireApiKey(apiKey) {
  if (!apiKey) {
    console.error("This flow has an admin step: set API_KEY (storecrm api-keys create --store <STORE_ID> --name demo).");
    process.exit(2);
  }
  return apiKey;
}

/** @param {string} tag */
export function demoEmail(tag) {
  return process.env.EMAIL ?? `${tag}-${Date.now().toString(36)}@example.com`;
}

/** @param {string} s */
function decodeQuotedPrintable(s) {
  const soft = s.replace(/=\r?\n/g, "");
  return Buffer.from(
    soft.replace(/=([0-9A-Fa-f]{2})/g, (_m, hex) => String.fromCharCode(parseInt(hex, 16))),
    "latin1",
  ).toString("utf8");
}

/**
 * @param {string} file
 * @returns {{ file: string, to: string, subject: string, text: string }}
 */
function readMail(file) {
  const raw = readFileSync(file, "utf8").replace(/\r\n/g, "\n");
  const split = raw.indexOf("\n\n");
  const head = raw.slice(0, split).replace(/\n[ \t]+/g, " ");
  /** @param {string} name */
  const header = (name) => new RegExp(`^${name}:\\s*(.*)$`, "im").exec(head)?.[1] ?? "";
  return { file, to: header("To"), subject: header("Subject"), text: decodeQuotedPrintable(raw.slice(split + 2)) };
}

/**
 * The names of the mail files there now: pass them to `waitForMail` to wait for a newer one.
 * @param {string} mailDir
 * @returns {Set<string>}
 */
export function mailSeen(mailDir) {
  return new Set(existsSync(mailDir) ? readdirSync(mailDir) : []);
}

/**
 * The newest mail to `email` that `match` accepts and that is not in `seen`, waiting up to
 * `timeoutMs` for the server's mail worker to write it.
 * @param {string} mailDir
 * @param {string} email
 * @param {(mail: { subject: string, text: string }) => boolean} match
 * @param {Set<string>} [seen]
 * @param {number} [timeoutMs]
 */
export async function waitForMail(mailDir, email, match, seen = new Set(), timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (existsSync(mailDir)) {
      const names = readdirSync(mailDir).filter((f) => f.endsWith(".eml") && !seen.has(f)).sort().reverse();
      for (const name of names) {
        const mail = readMail(join(mailDir, name));
        if (mail.to.toLowerCase().includes(email.toLowerCase()) && match(mail)) return mail;
      }
    }
    if (Date.now() > deadline) throw new Error(`no mail to ${email} in ${mailDir} within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}
