// @ts-check
// Typical flow 2, "Newsletter Subscribe with Double Opt-in".
//
// Setup (admin, with API_KEY): an email template whose body links `{{ confirm_url }}` and an
// audience that uses it as `confirm_template_id` (both created once, then reused by key).
// Then the storefront: initialize + connect, subscribe with a `confirmUrl` (a pending subscription
// and a confirmation mail). The page at `confirmUrl` POSTs the mailed token to `audiences.confirm`;
// with MAIL_DIR set, this script reads the mail and does what that page does.
//
//   STORECRM_URL=http://127.0.0.1:8080 STORE_ID=... API_KEY=sk_... MAIL_DIR=./mail \
//     node examples/newsletter-double-opt-in.mjs
//
// CONFIRM_URL must be on the store's allowed_origins; with none set, only http://localhost[:port]
// and http://127.0.0.1[:port] pass, hence the default.
import { createClient, StoreCrmError } from "@storecrm/sdk";

import { config, demoEmail, mailSeen, requireApiKey, waitForMail } from "./_shared.mjs";

const { baseUrl, storeId, apiKey, mailDir } = config();
const audienceKey = process.env.AUDIENCE ?? "newsletter";
const confirmUrl = process.env.CONFIRM_URL ?? "http://localhost:3000/confirm";

// --- setup, on the server side (API key) ---------------------------------------------------
const admin = createClient({ baseUrl, storeId, apiKey: requireApiKey(apiKey) });

/**
 * @template T
 * @param {() => Promise<T>} get
 * @param {() => Promise<T>} create
 */
async function getOrCreate(get, create) {
  try {
    return await get();
  } catch (e) {
    if (e instanceof StoreCrmError && e.status === 404) return create();
    throw e;
  }
}

const templateKey = `${audienceKey}-confirm`;
/** @type {{ id: string }} */
const template = await getOrCreate(
  () => admin.request({ method: "GET", path: `/email-templates/${templateKey}` }),
  () =>
    admin.request({
      method: "POST",
      path: "/email-templates",
      body: {
        key: templateKey,
        subject: "Please confirm your subscription",
        body: '<p>Thanks for signing up! <a href="{{ confirm_url }}">Confirm your subscription</a>.</p>',
      },
    }),
);
const audience = await getOrCreate(
  () => admin.crm.audiences.get({ id: audienceKey }),
  () => admin.crm.audiences.create({ key: audienceKey, name: "Newsletter", confirmTemplateId: template.id }),
);
console.log(`setup: audience "${audience.key}" (${audience.id}), double opt-in template ${audience.confirm_template_id}`);

// --- the storefront (no API key) ---------------------------------------------------------
const { crm } = createClient({ baseUrl, storeId });

// 1. Initialize + connect to get a profile. Note: the answer is the session (AuthToken); its `id`
//    is the session id, the profile is `profile_id` (the reference's `{ id: profileId }` would
//    pick the session id).
await crm.initialize();
const email = demoEmail("reader");
const { profile_id: profileId } = await crm.connect({ email });
console.log(`1. profile ${profileId} for ${email}`);

// 2. Subscribe to the audience (sends the confirmation email).
const seen = mailDir ? mailSeen(mailDir) : new Set();
const { subscription } = await crm.audiences.subscribe({ id: audience.id, profileId, confirmUrl });
console.log(`2. subscription ${subscription.id} is ${subscription.status}; a confirmation mail is on its way`);

// 3. The confirm page: it reads `?token=` from its URL and POSTs it.
if (!mailDir) {
  console.log(`3. open the mail to ${email} and follow its link (${confirmUrl}?token=...);`);
  console.log("   that page calls crm.audiences.confirm({ token }). Set MAIL_DIR to let this script do it.");
  console.log(`done: ${JSON.stringify({ profile_id: profileId, email, status: subscription.status })}`);
} else {
  const mail = await waitForMail(mailDir, email, (m) => m.text.includes(`${confirmUrl}?token=`), seen);
  const link = mail.text.slice(mail.text.indexOf(`${confirmUrl}?token=`));
  const token = /\?token=([A-Za-z0-9_.~%-]+)/.exec(link)?.[1];
  if (!token) throw new Error(`no confirm link in ${mail.file}`);
  const confirmed = await crm.audiences.confirm({ token: decodeURIComponent(token) });
  console.log(`3. confirmed from the mail: subscription is ${confirmed.subscription.status}`);
  const access = await crm.audiences.checkAccess({ id: audience.id });
  console.log(`   checkAccess: has_access=${access.has_access}${access.reason ? ` (${access.reason})` : ""}`);
  console.log(`done: ${JSON.stringify({ profile_id: profileId, email, status: confirmed.subscription.status, has_access: access.has_access })}`);
}
