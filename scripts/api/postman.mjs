// Generates the Postman collection of the storecrm API from its OpenAPI document.
//
//   node scripts/api/postman.mjs [docs/openapi.json] [postman/storecrm.postman_collection.json]
//
// (scripts/api/check.sh runs it on the served document with the pinned tools, installed into
// target/api-tools; `scripts/api/check.sh --write-collection` refreshes the committed file.)
//
// openapi-to-postmanv2 converts the document (one folder per tag, every operation with its
// query parameters, headers and description); this script then makes the result runnable and
// deterministic: a "Getting started" folder first, the tag folders in an order where each
// request finds what it needs, collection variables (`baseUrl`, `storeId`, `apiKey`,
// `accountToken`, `profileToken`, ...), auth per folder, request bodies (the bodies below, which
// chain the variables of earlier requests, else the document's example) and a `pm.test` on every
// request asserting its status and key fields and saving ids and tokens into variables.
//
// Every operation of the document needs a recipe below, and every recipe an operation: a route
// added to the API fails this script until it is given one.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

// The npm tools live where check.sh installed them (API_TOOLS_DIR, default: target/api-tools).
const toolsDir = path.resolve(process.env.API_TOOLS_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), '../../target/api-tools'));
const require = createRequire(path.join(toolsDir, 'package.json'));
const Converter = require('openapi-to-postmanv2');

const [docPath = 'docs/openapi.json', outPath = 'postman/storecrm.postman_collection.json'] = process.argv.slice(2);
const doc = JSON.parse(fs.readFileSync(docPath, 'utf8'));

// ------------------------------------------------------------------ helpers for test scripts

const js = (...lines) => lines.flat();
const status = (code) => [`pm.test("status ${code}", () => pm.response.to.have.status(${code}));`];
const json = ['const body = pm.response.json();'];
const expectKeys = (what, keys) => [
  `pm.test(${JSON.stringify(what)}, () => pm.expect(body).to.include.keys(${keys.map((k) => JSON.stringify(k)).join(', ')}));`,
];
const check = (what, expr) => [`pm.test(${JSON.stringify(what)}, () => { ${expr} });`];
const save = (vars) => Object.entries(vars).map(([k, expr]) => `pm.collectionVariables.set(${JSON.stringify(k)}, ${expr});`);
const isError = (code) => check(`error code ${code}`, `pm.expect(body.error).to.eql(${JSON.stringify(code)});`);
const authToken = ['access_token', 'refresh_token', 'token_type', 'access_expires_at', 'refresh_expires_at', 'id', 'profile_id', 'is_verified'];
const uniqueVar = (name, prefix) => [
  `pm.collectionVariables.set(${JSON.stringify(name)}, ${JSON.stringify(prefix)} + Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36));`,
];
const bearer = (v) => ({ type: 'bearer', bearer: [{ key: 'token', value: `{{${v}}}`, type: 'string' }] });
const NOAUTH = { type: 'noauth' };

// A request sent from a script (fixtures a step needs; Postman's pm.sendRequest).
const send = (method, urlExpr, { token, body, then }) => [
  'pm.sendRequest({',
  `  url: pm.variables.replaceIn(${urlExpr}), method: ${JSON.stringify(method)},`,
  `  header: [{ key: 'content-type', value: 'application/json' }${token ? `, { key: 'authorization', value: 'Bearer ' + pm.variables.get(${JSON.stringify(token)}) }` : ''}],`,
  `  body: { mode: 'raw', raw: pm.variables.replaceIn(${JSON.stringify(JSON.stringify(body ?? {}))}) },`,
  '}, (err, res) => {',
  '  if (err) { throw err; }',
  ...then.map((l) => '  ' + l),
  '});',
];

// ------------------------------------------------------------------ folders and variables

const VARIABLES = [
  ['baseUrl', 'http://127.0.0.1:8080', 'The server, without a trailing slash.'],
  ['storeId', '', 'Paste: your store id (`storecrm stores create` printed it).'],
  ['apiKey', '', 'Paste: a store API key `sk_...` (`storecrm api-keys create`). Admin folders use it.'],
  ['accountEmail', '', 'Paste: your account email (for accounts/login).'],
  ['accountPassword', '', 'Paste: your account password (for accounts/login).'],
  ['accountToken', '', 'Set by accounts/login. The stores folder uses it.'],
  ['accountRefreshToken', '', 'Set by accounts/login and accounts/refreshToken.'],
  ['shopperEmail', 'ann@example.com', 'The storefront shopper of Getting started: use an address whose mail you can read.'],
  ['code', '', 'Paste: the 6-digit code from the sign-in mail (its subject starts with it), before "verify".'],
  ['profileToken', '', 'Set by Getting started (initialize, connect, verify). Profile folders use it.'],
  ['refreshToken', '', "Set by verify and profiles/refreshToken: the shopper's refresh token."],
  ['profileId', '', "Set by Getting started: the shopper's profile id."],
  ['sessionId', '', "Set by verify: the shopper's session id (the tokenId of the revoke routes)."],
  ['confirmToken', '', 'Optional paste: the token of a double opt-in mail (`?token=` of its confirm link).'],
  ['unsubscribeToken', '', "Optional paste: the token of a mail's List-Unsubscribe link."],
  ['webhookUrl', 'https://example.com/storecrm-webhook', 'Where the webhooks folder sends events: an https URL of yours (a public host).'],
];

// Folder order (each folder uses what an earlier one made) and auth.
const FOLDERS = [
  ['accounts', 'accountToken', 'An account: a person who administers stores. `login` saves `accountToken`.'],
  ['stores', 'accountToken', 'Stores of the account (account token; API keys reach their own store only).'],
  ['api keys', 'apiKey', 'API keys of the store (admin).'],
  ['taxonomies', 'apiKey', 'Typed attributes for profiles (admin).'],
  ['profiles', 'apiKey', 'Admin work on profiles: find, update, merge, export, erase.'],
  ['segments', 'apiKey', 'Saved profile filters: their profiles, counts, exports (admin).'],
  ['imports', 'apiKey', 'Customer lists imported from CSV or NDJSON, as jobs (admin).'],
  ['profile sessions', 'profileToken', 'Storefront sessions: guests, sign-in codes, tokens (public routes send no auth).'],
  ['email templates', 'apiKey', 'Mail templates (admin).'],
  ['audiences', 'apiKey', 'Newsletters and memberships (admin; subscribe and checkAccess as the profile).'],
  ['mail', 'apiKey', "The store's outbox (admin)."],
  ['events', 'apiKey', 'What happened in the store (admin).'],
  ['webhooks', 'apiKey', 'Signed deliveries of events to `webhookUrl` (admin).'],
  ['payments', null, 'Stripe webhooks (public, signed by Stripe).'],
  ['operations', null, 'Health, readiness and metrics (public).'],
];

// ------------------------------------------------------------------ recipes, per operation
//
// order: position inside its folder; auth: a variable name, or null for none (default: the
// folder's); path: values of path parameters; query: query parameters to enable; body: the
// request body (else the document's example); pre/test: script lines.

const S = '{{baseUrl}}/v1/stores/{{storeId}}';
const R = {
  // accounts
  accounts_login: {
    order: 1, auth: null, body: { email: '{{accountEmail}}', password: '{{accountPassword}}' },
    test: js(status(200), json, expectKeys('an account token pair', ['access_token', 'refresh_token', 'account_id']),
      save({ accountToken: 'body.access_token', accountRefreshToken: 'body.refresh_token', accountId: 'body.account_id' })),
  },
  accounts_getMe: {
    order: 2,
    test: js(status(200), json, expectKeys('account and stores', ['account', 'stores']),
      check('the store is among them', "pm.expect(body.stores.map((s) => s.id || (s.store && s.store.id))).to.include(pm.variables.get('storeId'));")),
  },
  accounts_refreshToken: {
    order: 3, auth: null, body: { refresh_token: '{{accountRefreshToken}}' },
    test: js(status(200), json, expectKeys('a new pair', ['access_token', 'refresh_token']),
      check('the refresh token rotated', "pm.expect(body.refresh_token).to.not.eql(pm.variables.get('accountRefreshToken'));"),
      save({ accountToken: 'body.access_token', accountRefreshToken: 'body.refresh_token' })),
  },
  accounts_logout: {
    // Logs out a second session, opened here, so that accountToken stays usable.
    order: 4, auth: 'logoutAccountToken',
    pre: send('POST', "'{{baseUrl}}/v1/auth/login'", {
      body: { email: '{{accountEmail}}', password: '{{accountPassword}}' },
      then: ["pm.collectionVariables.set('logoutAccountToken', res.json().access_token);"],
    }),
    test: js(status(200), json, check('logged out', 'pm.expect(body.logged_out).to.eql(true);'),
      send('GET', "'{{baseUrl}}/v1/auth/me'", {
        token: 'logoutAccountToken',
        then: ["pm.test('the logged-out token is refused', () => pm.expect(res.code).to.eql(401));"],
      })),
  },
  // stores
  stores_find: {
    order: 1,
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('the store is listed', "pm.expect(JSON.stringify(body.items)).to.include(pm.variables.get('storeId'));")),
  },
  stores_create: {
    order: 2, body: { name: 'Second shop' },
    test: js(status(201), json, expectKeys('a store', ['id', 'name', 'allowed_origins', 'created_at']),
      check('named as asked', "pm.expect(body.name).to.eql('Second shop');"), save({ newStoreId: 'body.id' })),
  },
  stores_get: {
    order: 3,
    test: js(status(200), json, expectKeys('a store', ['id', 'name', 'allowed_origins']),
      check('this store', "pm.expect(body.id).to.eql(pm.variables.get('storeId'));")),
  },
  stores_update: {
    order: 4, body: { from_name: 'The shop', allowed_origins: ['http://localhost:3000'] },
    test: js(status(200), json, check('settings changed', "pm.expect(body.from_name).to.eql('The shop'); pm.expect(body.allowed_origins).to.eql(['http://localhost:3000']);")),
  },
  // api keys
  apiKeys_create: {
    order: 1, body: { name: 'postman' },
    test: js(status(201), json, expectKeys('the key, shown once', ['id', 'name', 'prefix', 'key']),
      check('an sk_ secret', "pm.expect(body.key).to.match(/^sk_/);"), save({ newApiKeyId: 'body.id', newApiKey: 'body.key' })),
  },
  apiKeys_find: {
    order: 2,
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('no secrets', "body.items.forEach((k) => pm.expect(k).to.not.have.property('key'));"),
      check('the new key is listed', "pm.expect(body.items.map((k) => k.id)).to.include(pm.variables.get('newApiKeyId'));")),
  },
  apiKeys_revoke: {
    order: 3, path: { id: '{{newApiKeyId}}' },
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);'),
      send('GET', `'${S}'`, { token: 'newApiKey', then: ["pm.test('the revoked key is refused', () => pm.expect(res.code).to.eql(401));"] })),
  },
  // taxonomies
  taxonomies_create: {
    order: 1, pre: uniqueVar('taxonomyKey', 'tier-'),
    body: { key: '{{taxonomyKey}}', schema: [{ key: 'level', type: 'text', options: ['gold', 'silver'] }, { key: 'spend', type: 'number', min: 0 }] },
    test: js(status(201), json, expectKeys('a taxonomy', ['id', 'key', 'schema', 'status']),
      check('its two fields', 'pm.expect(body.schema.map((f) => f.key)).to.eql(["level", "spend"]);'), save({ taxonomyId: 'body.id' })),
  },
  taxonomies_find: {
    order: 2,
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('listed', "pm.expect(body.items.map((t) => t.id)).to.include(pm.variables.get('taxonomyId'));")),
  },
  taxonomies_get: {
    order: 3, path: { id: '{{taxonomyKey}}' },
    test: js(status(200), json, check('found by key', "pm.expect(body.id).to.eql(pm.variables.get('taxonomyId'));")),
  },
  taxonomies_update: {
    order: 4, path: { id: '{{taxonomyId}}' },
    body: { schema: [{ key: 'level', type: 'text', options: ['gold', 'silver', 'bronze'] }, { key: 'spend', type: 'number', min: 0 }, { key: 'vip', type: 'boolean' }] },
    test: js(status(200), json, check('three fields now', 'pm.expect(body.schema.length).to.eql(3);')),
  },
  taxonomies_delete: {
    // A taxonomy made here: the profiles folder still uses taxonomyId.
    order: 5, path: { id: '{{oldTaxonomyId}}' }, name: 'Delete a taxonomy (one made for the purpose) and every value profiles hold under it',
    pre: send('POST', `'${S}/taxonomies'`, {
      token: 'apiKey', body: { key: 'old-{{taxonomyKey}}', schema: [{ key: 'size', type: 'text' }] },
      then: ["pm.collectionVariables.set('oldTaxonomyId', res.json().id);"],
    }),
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);'),
      send('GET', `'${S}/taxonomies/{{oldTaxonomyId}}'`, { token: 'apiKey', then: ["pm.test('gone', () => pm.expect(res.code).to.eql(404));"] })),
  },
  // profiles
  profiles_create: {
    order: 1, pre: uniqueVar('customerEmail', 'customer-').concat(["pm.collectionVariables.set('customerEmail', pm.collectionVariables.get('customerEmail') + '@example.com');"]),
    body: { email: '{{customerEmail}}', taxonomies: [{ taxonomy_id: '{{taxonomyId}}', fields: [{ key: 'level', type: 'text', value: ['gold'] }, { key: 'spend', type: 'number', value: 120 }] }] },
    test: js(status(201), json, expectKeys('a profile', ['id', 'store_id', 'email', 'verified', 'status', 'taxonomies', 'created_at']),
      check('with the email and the taxonomy values', "pm.expect(body.email).to.eql(pm.variables.get('customerEmail')); pm.expect(body.taxonomies[0].taxonomy_id).to.eql(pm.variables.get('taxonomyId'));"),
      save({ customerId: 'body.id' })),
  },
  profiles_get: {
    order: 2, path: { id: '{{customerId}}' },
    test: js(status(200), json, check('the profile', "pm.expect(body.id).to.eql(pm.variables.get('customerId'));"),
      check('sessions and codes carry no secret', "(body.auth_tokens || []).forEach((t) => pm.expect(t).to.not.have.any.keys('access_token', 'refresh_token'));")),
  },
  profiles_find: {
    order: 3, query: { query: '{{customerEmail}}', limit: '10' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('found by email', "pm.expect(body.items.map((p) => p.id)).to.include(pm.variables.get('customerId'));")),
  },
  profiles_update: {
    order: 4, path: { id: '{{customerId}}' },
    body: { taxonomies: [{ taxonomy_id: '{{taxonomyId}}', fields: [{ key: 'level', type: 'text', value: ['silver'] }, { key: 'vip', type: 'boolean', value: true }] }] },
    test: js(status(200), json, check('taxonomies replaced', "pm.expect(JSON.stringify(body.taxonomies)).to.include('silver').and.not.include('gold');")),
  },
  profiles_linkOrder: {
    order: 5, path: { id: '{{customerId}}' }, pre: uniqueVar('orderId', 'order-'),
    body: { order_id: '{{orderId}}', total: 4990, currency: 'EUR', status: 'paid' },
    test: js(status(201), json, check('linked', "pm.expect(body.order_id).to.eql(pm.variables.get('orderId'));")),
  },
  profiles_getOrders: {
    order: 6, path: { id: '{{customerId}}' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('the order', "pm.expect(body.items.map((o) => o.order_id)).to.include(pm.variables.get('orderId'));")),
  },
  profiles_merge: {
    // The source: a second profile made here, with an order of its own.
    order: 7, path: { id: '{{customerId}}' }, body: { source_id: '{{mergeSourceId}}' },
    pre: send('POST', `'${S}/profiles'`, {
      token: 'apiKey', body: { email: 'duplicate-{{orderId}}@example.com' },
      then: ["pm.collectionVariables.set('mergeSourceId', res.json().id);"],
    }),
    test: js(status(200), json, check('the target keeps its id and email', "pm.expect(body.id).to.eql(pm.variables.get('customerId')); pm.expect(body.email).to.eql(pm.variables.get('customerEmail'));"),
      send('GET', `'${S}/profiles/{{mergeSourceId}}'`, { token: 'apiKey', then: ["pm.test('the source is gone', () => pm.expect(res.code).to.eql(404));"] })),
  },
  profiles_getConsents: {
    order: 7.5, path: { id: '{{customerId}}' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor'])),
  },
  profiles_exportMany: {
    order: 7.7, query: { format: 'csv', query: '{{customerEmail}}' },
    test: js(status(200),
      check('CSV with a header and the customer', "pm.expect(pm.response.headers.get('content-type')).to.include('text/csv'); pm.expect(pm.response.text()).to.include('id,email,status').and.include(pm.variables.get('customerId'));")),
  },
  profiles_export: {
    order: 8, path: { id: '{{customerId}}' },
    test: js(status(200), json, check('the profile and its orders', "pm.expect(JSON.stringify(body)).to.include(pm.variables.get('customerId')).and.include(pm.variables.get('orderId'));")),
  },
  profiles_erase: {
    order: 9, path: { id: '{{customerId}}' },
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);'),
      send('GET', `'${S}/profiles/{{customerId}}'`, { token: 'apiKey', then: ["pm.test('erased', () => pm.expect(res.code).to.eql(404));"] })),
  },
  // profile sessions: a second storefront visitor ("guest"), then the shopper of Getting started
  profiles_initialize: {
    order: 1, auth: null,
    test: js(status(200), json, expectKeys('a session', authToken), check('unverified guest', 'pm.expect(body.is_verified).to.eql(false);'),
      save({ guestToken: 'body.access_token', guestSessionId: 'body.id', guestProfileId: 'body.profile_id' })),
  },
  profiles_connect: {
    order: 2, auth: 'guestToken', pre: js(uniqueVar('guestEmail', 'guest-'), ["pm.collectionVariables.set('guestEmail', pm.collectionVariables.get('guestEmail') + '@example.com');"]),
    body: { email: '{{guestEmail}}' },
    test: js(status(200), json, expectKeys('a session', authToken),
      check('the guest keeps its profile id', "pm.expect(body.profile_id).to.eql(pm.variables.get('guestProfileId'));"),
      save({ guestEmailToken: 'body.access_token', guestEmailRefreshToken: 'body.refresh_token' })),
  },
  profiles_requestCode: {
    order: 3, auth: null, body: { email: '{{guestEmail}}' },
    test: js(status(202), json, check('sent', 'pm.expect(body.sent).to.eql(true);')),
  },
  profiles_verify: {
    // The real sign-in is in Getting started; here, what a wrong code answers.
    order: 4, auth: null, body: { email: '{{guestEmail}}', code: '000000' },
    name: 'A wrong code is refused (the sign-in itself is in Getting started)',
    test: js(status(401), json, isError('invalid_code')),
  },
  profiles_refreshToken: {
    order: 5, auth: null, body: { refresh_token: '{{refreshToken}}' },
    test: js(status(200), json, expectKeys('a new pair', authToken), check('still verified', 'pm.expect(body.is_verified).to.eql(true);'),
      save({ profileToken: 'body.access_token', refreshToken: 'body.refresh_token' })),
  },
  profiles_getMe: {
    order: 6,
    test: js(status(200), json, check('the shopper, verified', "pm.expect(body.id).to.eql(pm.variables.get('profileId')); pm.expect(body.email).to.eql(pm.variables.get('shopperEmail')); pm.expect(body.verified).to.eql(true);")),
  },
  profiles_getTokens: {
    order: 7, path: { id: '{{profileId}}' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('this session is listed, without secrets', "pm.expect(body.items.map((s) => s.id)).to.include(pm.variables.get('sessionId')); body.items.forEach((s) => pm.expect(s).to.not.have.any.keys('access_token', 'refresh_token'));")),
  },
  profiles_revokeToken: {
    // The guest, now holding its profile, revokes its first (guest) session.
    order: 8, auth: 'guestEmailToken', path: { id: '{{guestProfileId}}', tokenId: '{{guestSessionId}}' },
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);'),
      send('GET', `'${S}/profiles/me'`, { token: 'guestToken', then: ["pm.test('the revoked session is refused', () => pm.expect(res.code).to.eql(401));"] })),
  },
  profiles_logout: {
    order: 9, auth: 'guestEmailToken',
    test: js(status(200), json, check('logged out', 'pm.expect(body.logged_out).to.eql(true);')),
  },
  profiles_revokeAllTokens: {
    // As an admin: every session of the guest's profile ends.
    order: 10, auth: 'apiKey', path: { id: '{{guestProfileId}}' },
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);')),
  },
  // email templates
  templates_create: {
    order: 1, pre: uniqueVar('templateKey', 'confirm-'),
    body: {
      key: '{{templateKey}}', subject: 'Confirm your subscription to {{ audience_name }}',
      body: '<p>Hello {{ email }},</p><p><a href="{{ confirm_url }}">Yes, subscribe me to {{ audience_name }}</a></p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · {{ store_name }}</p>',
    },
    test: js(status(201), json, expectKeys('a template', ['id', 'key', 'subject', 'body', 'status']), save({ templateId: 'body.id' })),
  },
  templates_find: {
    order: 2,
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('listed', "pm.expect(body.items.map((t) => t.id)).to.include(pm.variables.get('templateId'));")),
  },
  templates_get: {
    order: 3, path: { id: '{{templateKey}}' },
    test: js(status(200), json, check('found by key', "pm.expect(body.id).to.eql(pm.variables.get('templateId'));")),
  },
  templates_update: {
    order: 4, path: { id: '{{templateId}}' }, body: { preheader: 'One click and you are in.' },
    test: js(status(200), json, check('changed', "pm.expect(body.preheader).to.eql('One click and you are in.');")),
  },
  templates_preview: {
    order: 5, path: { id: '{{templateId}}' },
    body: { vars: { email: 'ann@example.com', audience_name: 'News', confirm_url: 'https://shop.example/confirm?token=t', store_name: 'The shop' } },
    test: js(status(200), json, expectKeys('rendered', ['subject', 'html', 'text', 'warnings']),
      check('variables rendered', "pm.expect(body.subject).to.eql('Confirm your subscription to News');"),
      check('what the mail gets at send time is filled in: no warnings', "pm.expect(body.warnings).to.eql([]); pm.expect(body.html).to.include('/unsubscribe?token=');")),
  },
  templates_delete: {
    // A template made here: the audiences folder still uses templateId.
    order: 6, path: { id: '{{oldTemplateId}}' }, name: 'Delete an email template (one made for the purpose)',
    pre: send('POST', `'${S}/email-templates'`, {
      token: 'apiKey', body: { key: 'old-{{templateKey}}', subject: 'Old', body: '<p>old</p>' },
      then: ["pm.collectionVariables.set('oldTemplateId', res.json().id);"],
    }),
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);'),
      send('GET', `'${S}/email-templates/{{oldTemplateId}}'`, { token: 'apiKey', then: ["pm.test('gone', () => pm.expect(res.code).to.eql(404));"] })),
  },
  // audiences
  audiences_create: {
    order: 1, pre: uniqueVar('audienceKey', 'news-'),
    body: { key: '{{audienceKey}}', name: 'Weekly news', confirm_template_id: '{{templateId}}' },
    test: js(status(201), json, expectKeys('an audience', ['id', 'key', 'name', 'status', 'type', 'confirm_template_id', 'subscriber_count']),
      check('double opt-in, standard', "pm.expect(body.confirm_template_id).to.eql(pm.variables.get('templateId')); pm.expect(body.type.type).to.eql('standard');"),
      save({ audienceId: 'body.id' })),
  },
  audiences_get: {
    order: 2, auth: null, path: { id: '{{audienceKey}}' },
    name: 'One audience by id or key (public: no credential)',
    test: js(status(200), json, check('found by key', "pm.expect(body.id).to.eql(pm.variables.get('audienceId'));")),
  },
  audiences_find: {
    order: 3, query: { query: '{{audienceKey}}' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('found', "pm.expect(body.items.map((a) => a.id)).to.include(pm.variables.get('audienceId'));")),
  },
  audiences_update: {
    order: 4, path: { id: '{{audienceId}}' }, body: { name: 'The weekly news' },
    test: js(status(200), json, check('renamed', "pm.expect(body.name).to.eql('The weekly news');")),
  },
  audiences_subscribe: {
    order: 5, auth: 'profileToken', path: { id: '{{audienceId}}' },
    body: { profile_id: '{{profileId}}', confirm_url: 'http://localhost:3000/newsletter/confirm' },
    test: js(status(201), json, expectKeys('a subscription', ['subscription']),
      check('pending until the mail is confirmed', "pm.expect(body.subscription.status).to.eql('pending');"),
      save({ subscriptionId: 'body.subscription.id' })),
  },
  audiences_checkAccess: {
    order: 6, auth: 'profileToken', path: { id: '{{audienceId}}' },
    test: js(status(200), json, check('no access while pending', "pm.expect(body.has_access).to.eql(false); pm.expect(body.reason).to.eql('pending');")),
  },
  audiences_confirm: {
    order: 7, auth: null, body: { token: '{{confirmToken}}' },
    name: 'Confirm a double opt-in (paste confirmToken from the mail; without it, the refusal)',
    test: js(json, [
      "if (pm.variables.get('confirmToken')) {",
      '  pm.test("status 200", () => pm.response.to.have.status(200));',
      '  pm.test("confirmed", () => { pm.expect(body.confirmed).to.eql(true); pm.expect(body.subscription.status).to.eql("active"); });',
      '} else {',
      '  pm.test("status 422 without a token", () => pm.response.to.have.status(422));',
      '  pm.test("the token is required", () => pm.expect(body.validation_errors[0].field).to.eql("token"));',
      '}',
    ]),
  },
  audiences_getSubscribers: {
    order: 8, path: { id: '{{audienceId}}' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('the shopper, pending', "const s = body.items.find((i) => i.profile_id === pm.variables.get('profileId')); pm.expect(s).to.be.an('object'); pm.expect(s.email).to.eql(pm.variables.get('shopperEmail'));")),
  },
  audiences_addSubscriber: {
    order: 9, path: { id: '{{audienceId}}' }, body: { profile_id: '{{profileId}}' },
    test: js(status(200), json, expectKeys('subscriber', ['subscriber', 'skipped']),
      check('now active', "pm.expect(body.subscriber.profile_id).to.eql(pm.variables.get('profileId')); pm.expect(body.subscriber.status).to.eql('active');")),
  },
  audiences_unsubscribe: {
    order: 10, auth: null, body: { token: '{{unsubscribeToken}}' },
    name: "Unsubscribe with a mail's token (paste unsubscribeToken; without it, the refusal)",
    test: js(json, [
      "if (pm.variables.get('unsubscribeToken')) {",
      '  pm.test("status 200", () => pm.response.to.have.status(200));',
      '  pm.test("unsubscribed", () => pm.expect(body.unsubscribed).to.eql(true));',
      '} else {',
      '  pm.test("status 422 without a token", () => pm.response.to.have.status(422));',
      '  pm.test("the token is required", () => pm.expect(body.validation_errors[0].field).to.eql("token"));',
      '}',
    ]),
  },
  audiences_exportSubscribers: {
    order: 8.5, path: { id: '{{audienceId}}' }, query: { format: 'csv' },
    test: js(status(200), check('CSV of subscribers', "pm.expect(pm.response.text()).to.include('profile_id,email,subscription_id,status');")),
  },
  audiences_removeSubscriber: {
    order: 11, path: { id: '{{audienceId}}', profileId: '{{profileId}}' },
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);'),
      send('GET', `'${S}/audiences/{{audienceId}}/access'`, { token: 'profileToken', then: ["pm.test('no access any more', () => pm.expect(res.json().has_access).to.eql(false));"] })),
  },
  audiences_confirmPage: {
    order: 12, auth: null, query: { token: '{{confirmToken}}' },
    name: 'The hosted confirm page of a mail link (a page; it never confirms by itself)',
    test: js(check('a page: 200 for a valid link, 404 otherwise', "pm.expect(pm.response.code).to.be.oneOf([200, 404]); pm.expect(pm.response.headers.get('content-type')).to.include('text/html');")),
  },
  audiences_unsubscribePage: {
    order: 13, auth: null, query: { token: '{{unsubscribeToken}}' },
    name: 'The hosted unsubscribe page of a mail link (a page; it never unsubscribes by itself)',
    test: js(check('a page: 200 for a valid link, 404 otherwise', "pm.expect(pm.response.code).to.be.oneOf([200, 404]); pm.expect(pm.response.headers.get('content-type')).to.include('text/html');")),
  },
  // mail
  mail_find: {
    order: 1, query: { limit: '10' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('the sign-in mails are there', 'pm.expect(body.items.length).to.be.above(0);'),
      save({ mailId: 'body.items[0].id' })),
  },
  mail_retry: {
    order: 2, path: { id: '{{mailId}}' }, name: 'Retry a failed mail (a mail that did not fail is refused)',
    test: js(json, check('retried, or refused as not failed', "pm.expect(pm.response.code).to.be.oneOf([200, 409]); if (pm.response.code === 409) pm.expect(body.error).to.eql('not_failed');")),
  },
  // segments
  segments_create: {
    order: 1, pre: uniqueVar('segmentKey', 'example-'), body: { key: '{{segmentKey}}', name: 'Example customers', query: '@example.com' },
    test: js(status(201), json, expectKeys('a segment', ['id', 'key', 'query']), save({ segmentId: 'body.id' })),
  },
  segments_find: {
    order: 2,
    test: js(status(200), json, check('listed', "pm.expect(body.items.map((s) => s.id)).to.include(pm.variables.get('segmentId'));")),
  },
  segments_get: {
    order: 3, path: { id: '{{segmentKey}}' },
    test: js(status(200), json, check('found by key', "pm.expect(body.id).to.eql(pm.variables.get('segmentId'));")),
  },
  segments_update: {
    order: 4, path: { id: '{{segmentId}}' }, body: { name: 'Customers at example.com', status: 'active' },
    test: js(status(200), json, check('renamed', "pm.expect(body.name).to.eql('Customers at example.com');")),
  },
  segments_count: {
    order: 5, path: { id: '{{segmentId}}' },
    test: js(status(200), json, check('a count', "pm.expect(body.count).to.be.a('number');")),
  },
  segments_getProfiles: {
    order: 6, path: { id: '{{segmentId}}' }, query: { limit: '10' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor'])),
  },
  segments_delete: {
    order: 7, path: { id: '{{segmentId}}' },
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);')),
  },
  // imports
  imports_start: {
    order: 1, pre: uniqueVar('importEmail', 'imported-'), query: { on_existing: 'update' },
    rawBody: 'email,status\n{{importEmail}}@example.com,active\n', contentType: 'text/csv',
    test: js(status(202), json, expectKeys('a job', ['id', 'status', 'progress_percent', 'errors_url']), save({ importId: 'body.id' })),
  },
  imports_get: {
    order: 2, path: { id: '{{importId}}' },
    test: js(status(200), json, check('the job', "pm.expect(body.id).to.eql(pm.variables.get('importId')); pm.expect(['running', 'completed']).to.include(body.status);")),
  },
  imports_getErrors: {
    order: 3, path: { id: '{{importId}}' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor'])),
  },
  // events
  events_find: {
    order: 1, query: { types: 'profile.created' },
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('profile.created events only', "pm.expect(body.items.length).to.be.above(0); body.items.forEach((e) => pm.expect(e.type).to.eql('profile.created'));")),
  },
  // webhooks
  webhooks_create: {
    order: 1, body: { url: '{{webhookUrl}}', events: ['profile.created', 'subscription.activated'], description: 'Postman' },
    test: js(status(201), json, expectKeys('an endpoint with its secret', ['id', 'url', 'events', 'status', 'secret']),
      check('a whsec_ secret', 'pm.expect(body.secret).to.match(/^whsec_/);'), save({ webhookId: 'body.id', webhookSecret: 'body.secret' })),
  },
  webhooks_find: {
    order: 2,
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      check('listed, without its secret', "pm.expect(body.items.map((w) => w.id)).to.include(pm.variables.get('webhookId')); body.items.forEach((w) => pm.expect(w).to.not.have.property('secret'));")),
  },
  webhooks_get: {
    order: 3, path: { id: '{{webhookId}}' },
    test: js(status(200), json, check('this endpoint', "pm.expect(body.id).to.eql(pm.variables.get('webhookId'));")),
  },
  webhooks_update: {
    order: 4, path: { id: '{{webhookId}}' }, body: { events: ['*'], description: 'Postman: every event' },
    test: js(status(200), json, check('every event now', "pm.expect(body.events).to.eql(['*']);")),
  },
  webhooks_rotateSecret: {
    order: 5, path: { id: '{{webhookId}}' },
    test: js(status(200), json, check('a new secret; the old one signs for 24 h more', "pm.expect(body.secret).to.match(/^whsec_/).and.not.eql(pm.variables.get('webhookSecret')); pm.expect(body.previous_secret_until).to.be.a('number');")),
  },
  webhooks_getDeliveries: {
    // A profile made here, so that the endpoint has an event to deliver.
    order: 6, path: { id: '{{webhookId}}' },
    pre: send('POST', `'${S}/profiles'`, {
      token: 'apiKey', body: { email: 'webhook-{{webhookId}}@example.com' },
      then: ["pm.test('a profile for an event', () => pm.expect(res.code).to.eql(201));"],
    }),
    test: js(status(200), json, expectKeys('a page', ['items', 'cursor']),
      ["pm.collectionVariables.set('deliveryId', body.items.length ? body.items[0].id : '00000000-0000-7000-8000-000000000000');"]),
  },
  webhooks_retryDelivery: {
    order: 7, path: { id: '{{webhookId}}', deliveryId: '{{deliveryId}}' }, name: 'Retry a delivery (now, whatever its state; refused while it is being sent)',
    test: js(json, check('retried, in progress, or none yet', 'pm.expect(pm.response.code).to.be.oneOf([200, 404, 409]);')),
  },
  webhooks_delete: {
    order: 8, path: { id: '{{webhookId}}' },
    test: js(status(200), json, check('deleted', 'pm.expect(body.deleted).to.eql(true);'),
      send('GET', `'${S}/webhooks/{{webhookId}}'`, { token: 'apiKey', then: ["pm.test('gone', () => pm.expect(res.code).to.eql(404));"] })),
  },
  // payments
  payments_stripeWebhook: {
    order: 1, auth: null, headers: { 'Stripe-Signature': 't=1700000000,v1=0000' },
    body: { id: 'evt_postman', type: 'checkout.session.completed', data: { object: {} } },
    name: 'Receive a Stripe event (an unsigned one is refused)',
    test: js(json, [
      'pm.test("refused: 400 bad signature, or 503 when Stripe is not configured", () => pm.expect(pm.response.code).to.be.oneOf([400, 503]));',
      'pm.test("error code", () => pm.expect(body.error).to.be.oneOf(["invalid_signature", "timestamp_out_of_tolerance", "payments_not_configured"]));',
    ]),
  },
  // operations
  ops_healthz: { order: 1, auth: null, test: js(status(200), json, check('ok', "pm.expect(body.status).to.eql('ok');")) },
  ops_readyz: { order: 2, auth: null, test: js(status(200), json, check('ready', "pm.expect(body.status).to.eql('ready');")) },
  ops_metrics: {
    order: 3, auth: null,
    test: js(status(200), check('Prometheus text', "pm.expect(pm.response.text()).to.include('storecrm_http_requests_total');")),
  },
};

// Getting started: the storefront walk, from the API key and store id the user pastes.
const GETTING_STARTED = [
  {
    name: '1. A guest signs up and asks for a code',
    description: 'Run this folder, then read the sign-in mail sent to `shopperEmail` and paste its 6-digit code (the mail subject starts with it) into the `code` variable.',
    steps: [
      ['profiles_initialize', {
        name: 'initialize: a guest profile and its session', auth: null,
        test: js(status(200), json, expectKeys('a session', authToken), check('an unverified guest', 'pm.expect(body.is_verified).to.eql(false);'),
          save({ profileToken: 'body.access_token', profileId: 'body.profile_id' })),
      }],
      ['profiles_connect', {
        name: 'connect: the guest gives its email', auth: 'profileToken', body: { email: '{{shopperEmail}}' },
        test: js(status(200), json, expectKeys('a session', authToken),
          check('same profile (a new address attaches to the guest)', "pm.expect(body.profile_id).to.eql(pm.variables.get('profileId'));"),
          save({ profileToken: 'body.access_token' })),
      }],
      ['profiles_requestCode', {
        name: 'requestCode: mail a sign-in code', auth: null, body: { email: '{{shopperEmail}}' },
        test: js(status(202), json, check('sent', 'pm.expect(body.sent).to.eql(true);')),
      }],
    ],
  },
  {
    name: '2. Sign in with the code, then join a newsletter',
    description: 'Needs the `code` variable (from the mail).',
    steps: [
      ['profiles_verify', {
        name: 'verify: the code makes the session verified', auth: 'profileToken', body: { email: '{{shopperEmail}}', code: '{{code}}' },
        test: js(status(200), json, expectKeys('a verified session', authToken), check('verified, same profile', "pm.expect(body.is_verified).to.eql(true); pm.expect(body.profile_id).to.eql(pm.variables.get('profileId'));"),
          save({ profileToken: 'body.access_token', refreshToken: 'body.refresh_token', sessionId: 'body.id' })),
      }],
      ['profiles_getMe', {
        name: 'getMe: the signed-in profile', auth: 'profileToken',
        test: js(status(200), json, expectKeys('a profile', ['id', 'email', 'verified', 'taxonomies', 'auth_tokens']),
          check('verified, with the email', "pm.expect(body.email).to.eql(pm.variables.get('shopperEmail')); pm.expect(body.verified).to.eql(true);")),
      }],
      ['audiences_create', {
        name: 'Create a newsletter (admin, single opt-in)', auth: 'apiKey', pre: uniqueVar('newsletterKey', 'welcome-'),
        body: { key: '{{newsletterKey}}', name: 'Welcome news' },
        test: js(status(201), json, expectKeys('an audience', ['id', 'key', 'status']), save({ newsletterId: 'body.id' })),
      }],
      ['audiences_subscribe', {
        name: 'subscribe: the shopper joins', auth: 'profileToken', path: { id: '{{newsletterId}}' }, body: { profile_id: '{{profileId}}' },
        test: js(status(201), json, check('active at once (no confirmation template)', "pm.expect(body.subscription.status).to.eql('active'); pm.expect(body.subscription.profile_id).to.eql(pm.variables.get('profileId'));")),
      }],
      ['audiences_checkAccess', {
        name: 'checkAccess: the shopper has access', auth: 'profileToken', path: { id: '{{newsletterId}}' },
        test: js(status(200), json, check('has access', 'pm.expect(body.has_access).to.eql(true);')),
      }],
    ],
  },
];

// Every response: the request id header, and errors in the API's one shape.
const COLLECTION_TEST = [
  'pm.test("x-request-id on every response", () => pm.response.to.have.header("x-request-id"));',
  'if (pm.response.code >= 400 && (pm.response.headers.get("content-type") || "").includes("json")) {',
  '  pm.test("errors have the API\'s shape", () => pm.expect(pm.response.json()).to.include.keys("error", "message", "status_code", "request_id"));',
  '}',
];

// ------------------------------------------------------------------ assembly

const METHODS = ['get', 'put', 'post', 'delete', 'patch'];
const operations = {};
for (const [p, item] of Object.entries(doc.paths)) {
  for (const m of METHODS) {
    if (item[m]) operations[item[m].operationId] = { path: p, method: m.toUpperCase(), op: item[m], pathItem: item };
  }
}
const missing = Object.keys(operations).filter((id) => !R[id]);
const extra = Object.keys(R).filter((id) => !operations[id]);
if (missing.length || extra.length) {
  console.error(`postman.mjs: operations without a recipe: ${missing.join(', ') || '-'}; recipes without an operation: ${extra.join(', ') || '-'}`);
  process.exit(1);
}

function converted() {
  return new Promise((resolve, reject) => {
    Converter.convert(
      { type: 'json', data: doc },
      { folderStrategy: 'Tags', requestParametersResolution: 'Schema', includeAuthInfoInExample: false, enableOptionalParameters: true },
      (err, res) => {
        if (err) return reject(err);
        if (!res.result) return reject(new Error(res.reason));
        resolve(res.output[0].data);
      },
    );
  });
}

// The converter's request of each operation, by "METHOD /path/{param}".
function indexConverted(items, out = {}) {
  for (const it of items) {
    if (it.item) indexConverted(it.item, out);
    else if (it.request) {
      const p = '/' + it.request.url.path.map((s) => (s.startsWith(':') ? `{${s.slice(1)}}` : s)).join('/');
      out[`${it.request.method} ${p}`] = it.request;
    }
  }
  return out;
}

const text = (d) => (d == null ? '' : typeof d === 'string' ? d : d.content || '');
const firstSentence = (s) => (s || '').replace(/\s+/g, ' ').split(/(?<=\.)\s/)[0];

function exampleBody(op) {
  const media = op.requestBody && op.requestBody.content && op.requestBody.content['application/json'];
  if (!media) return undefined;
  if (media.example !== undefined) return media.example;
  const ex = media.examples && Object.values(media.examples)[0];
  return ex && ex.value !== undefined ? ex.value : undefined;
}

function buildRequest(id, recipe, conv, folderAuth) {
  const { path: p, method, op } = operations[id];
  const params = [...(operations[id].pathItem.parameters || []), ...(op.parameters || [])];
  const segments = p.split('/').filter(Boolean).map((s) => {
    const m = s.match(/^\{(.+)\}$/);
    if (!m) return s;
    if (m[1] === 'storeId') return '{{storeId}}';
    const v = (recipe.path || {})[m[1]];
    if (!v) throw new Error(`${id}: no value for path parameter ${m[1]}`);
    return v;
  });
  const convQuery = (conv && conv.url && conv.url.query) || [];
  const query = params.filter((q) => q.in === 'query').map((q) => {
    const given = (recipe.query || {})[q.name];
    const desc = text((convQuery.find((c) => c.key === q.name) || {}).description) || q.description || '';
    return { key: q.name, value: given ?? '', ...(given === undefined ? { disabled: true } : {}), ...(desc ? { description: desc.replace(/^\(Required\)\s*/, '') } : {}) };
  });
  const header = [{ key: 'Accept', value: 'application/json' }];
  let body;
  const example = exampleBody(op);
  const payload = recipe.body !== undefined ? recipe.body : example;
  if (recipe.rawBody !== undefined) {
    header.push({ key: 'Content-Type', value: recipe.contentType });
    body = { mode: 'raw', raw: recipe.rawBody };
  } else if (payload !== undefined) {
    header.push({ key: 'Content-Type', value: 'application/json' });
    body = { mode: 'raw', raw: JSON.stringify(payload, null, 2), options: { raw: { language: 'json' } } };
  }
  for (const [k, v] of Object.entries(recipe.headers || {})) header.push({ key: k, value: v });
  const qs = query.filter((q) => !q.disabled).map((q) => `${q.key}=${q.value}`).join('&');
  const raw = `{{baseUrl}}/${segments.join('/')}${qs ? '?' + qs : ''}`;
  const request = {
    method,
    header,
    url: { raw, host: ['{{baseUrl}}'], path: segments, ...(query.length ? { query } : {}) },
    description: [text(conv && conv.description) || op.description || op.summary || '', `\n\nOperation \`${id}\`: \`${method} ${p}\`.`].join(''),
  };
  if (body) request.body = body;
  const auth = recipe.auth === undefined ? undefined : recipe.auth === null ? NOAUTH : bearer(recipe.auth);
  if (auth && JSON.stringify(auth) !== JSON.stringify(folderAuth)) request.auth = auth;
  const event = [];
  if (recipe.pre && recipe.pre.length) event.push({ listen: 'prerequest', script: { type: 'text/javascript', exec: recipe.pre } });
  event.push({ listen: 'test', script: { type: 'text/javascript', exec: recipe.test } });
  const name = recipe.name || `${id.replace('_', '.')}: ${firstSentence(op.summary || op.description)}`;
  return { name, event, request };
}

const conv = await converted();
const byRoute = indexConverted(conv.item);
const convOf = (id) => byRoute[`${operations[id].method} ${operations[id].path}`];

const folders = [];
folders.push({
  name: 'Getting started',
  description: [
    'The storefront journey, start to end. Set `baseUrl`, `storeId` and `apiKey` (collection variables) first.',
    'Folder 1 makes a guest, attaches `shopperEmail` and mails a code; paste the code into `code`; folder 2 signs in and joins a newsletter.',
  ].join('\n\n'),
  auth: NOAUTH,
  item: GETTING_STARTED.map((part) => ({
    name: part.name,
    description: part.description,
    item: part.steps.map(([id, recipe]) => buildRequest(id, { ...R[id], ...recipe, order: 0 }, convOf(id), NOAUTH)),
  })),
});

const convFolders = Object.fromEntries(conv.item.map((f) => [f.name, f]));
const tags = Object.fromEntries((doc.tags || []).map((t) => [t.name, t.description || '']));
const placed = new Set();
for (const [tag, authVar, description] of FOLDERS) {
  const auth = authVar ? bearer(authVar) : NOAUTH;
  const ids = Object.keys(operations).filter((id) => (operations[id].op.tags || [])[0] === tag);
  ids.sort((a, b) => R[a].order - R[b].order);
  ids.forEach((id) => placed.add(id));
  folders.push({
    name: tag,
    description: [description, tags[tag] || text((convFolders[tag] || {}).description)].filter(Boolean).join('\n\n'),
    auth,
    item: ids.map((id) => buildRequest(id, R[id], convOf(id), auth)),
  });
}
const unplaced = Object.keys(operations).filter((id) => !placed.has(id));
if (unplaced.length) {
  console.error(`postman.mjs: operations whose tag has no folder: ${unplaced.join(', ')}`);
  process.exit(1);
}

const collection = {
  info: {
    name: `${doc.info.title} ${doc.info.version}`,
    description: [
      doc.info.description,
      'Generated by `scripts/api/postman.mjs` from the OpenAPI document; do not edit by hand.',
      'Start with **Getting started**. Set the variables `baseUrl`, `storeId`, `apiKey` (and `accountEmail` / `accountPassword` for the accounts folder); requests save the ids and tokens they receive into the other variables. Run the folders in order: each uses what the earlier ones made.',
    ].join('\n\n'),
    schema: 'https://schema.getpostman.com/json/collection/v2.1.0/collection.json',
  },
  auth: NOAUTH,
  event: [{ listen: 'test', script: { type: 'text/javascript', exec: COLLECTION_TEST } }],
  variable: VARIABLES.map(([key, value, description]) => ({ key, value, type: 'string', description })),
  item: folders,
};

fs.mkdirSync(path.dirname(path.resolve(outPath)), { recursive: true });
fs.writeFileSync(outPath, JSON.stringify(collection, null, 2) + '\n');
console.log(`postman.mjs: ${Object.keys(operations).length} operations in ${folders.length} folders -> ${outPath}`);
