// @ts-check
// Typical flow 3, "Profile Login (Magic Code)".
//
// 1. ask for a code, 2. verify the code the user got by mail, 3. keep the session: the client
// stores the AuthToken (here in a file, as an app would in localStorage) and sends the access
// token; when it expires the client refreshes it with the refresh token, once, for all calls.
//
// Where the code comes from, in this order:
//   CODE=123456 EMAIL=ann@example.com   the code mailed to EMAIL by an earlier run (no new code is asked for)
//   MAIL_DIR=./mail                     the server's mail folder (.eml files; the code leads the Subject)
//   a prompt                            when run in a terminal
//
//   STORECRM_URL=http://127.0.0.1:8080 STORE_ID=... MAIL_DIR=./mail node examples/magic-code-login.mjs
import { existsSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline/promises";

import { createClient } from "@storecrm/sdk";

import { config, demoEmail, mailSeen, waitForMail } from "./_shared.mjs";

const { baseUrl, storeId, mailDir } = config();

/**
 * A `{ get, set, clear }` storage over a JSON file: the session survives a restart of the script,
 * as `localStorageStorage()` keeps it across page loads in a browser.
 * @param {string} file
 * @returns {import("@storecrm/sdk").TokenStorage}
 */
function fileStorage(file) {
  return {
    get: () => (existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : null),
    set: (token) => writeFileSync(file, JSON.stringify(token), { mode: 0o600 }),
    clear: () => rmSync(file, { force: true }),
  };
}

const sessionFile = process.env.SESSION_FILE ?? join(tmpdir(), `storecrm-demo-session-${storeId}.json`);
const { crm } = createClient({ baseUrl, storeId, storage: fileStorage(sessionFile) });

const email = demoEmail("login");
let code = process.env.CODE;

if (code) {
  console.log(`1. using CODE for ${email} (no new code asked for: that would void this one)`);
} else {
  // 1. Ask for a code (the answer is the same whether or not a profile has this email).
  const seen = mailDir ? mailSeen(mailDir) : new Set();
  await crm.requestCode({ email });
  console.log(`1. a sign-in code was mailed to ${email}`);

  // 2. The user enters the code from their email.
  if (mailDir) {
    const mail = await waitForMail(mailDir, email, (m) => /^\d{6}\b/.test(m.subject), seen);
    code = mail.subject.slice(0, 6);
    console.log(`2. read the code from the mail to ${email} in ${mailDir}`);
  } else if (process.stdin.isTTY) {
    const rl = createInterface({ input: process.stdin, output: process.stdout });
    code = (await rl.question("2. the 6-digit code from the mail: ")).trim();
    rl.close();
  } else {
    console.log("2. set MAIL_DIR to read the code from the server's mail folder, or run again with");
    console.log(`   EMAIL=${email} CODE=<the code>`);
    console.log(`done: ${JSON.stringify({ email, verified: false })}`);
    process.exit(0);
  }
}

const token = await crm.verify({ email, code });
console.log(`2. verified: session ${token.id} for profile ${token.profile_id} (is_verified=${token.is_verified})`);

// 3. The client stored the token (token.refresh_token included) and sends token.access_token:
const me = await crm.getMe();
console.log(`3. getMe: ${me.email}, verified=${me.verified}, ${me.auth_tokens.length} live session(s)`);

// A restart: a new client over the same storage continues the session.
const restarted = createClient({ baseUrl, storeId, storage: fileStorage(sessionFile) }).crm;
const rotated = await restarted.refreshToken();
console.log(`   after a restart: refreshed session ${rotated.id}, access token valid until ${new Date(rotated.access_expires_at * 1000).toISOString()}`);
console.log(`   getMe again: ${(await restarted.getMe()).email}`);

if (process.env.KEEP_SESSION !== "1") {
  await restarted.logout();
  console.log(`   logged out (the session file ${sessionFile} is cleared; KEEP_SESSION=1 keeps it)`);
}
console.log(`done: ${JSON.stringify({ email, profile_id: token.profile_id, verified: me.verified })}`);
