// Compile-time checks of the public types (tsc fails on a wrong one), plus what the package ships.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";

import * as sdk from "@storecrm/sdk";
import type {
  AuthToken,
  Consent,
  Crm,
  Event,
  EventType,
  ExportDownload,
  ExportedProfile,
  ExportedSubscriber,
  ImportStatus,
  Order,
  Profile,
  RetryDeliveryArgs,
  StoreCrmClient,
  SubscribeArgs,
  Subscription,
  SubscriptionView,
  WebhookWithSecret,
} from "@storecrm/sdk";

import { packageRoot } from "./helpers.js";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const check = <T extends true>(): T => true as T;

// answers are the generated schemas
check<Equal<Awaited<ReturnType<Crm["getMe"]>>, Profile>>();
check<Equal<Awaited<ReturnType<Crm["initialize"]>>, AuthToken>>();
check<Equal<Awaited<ReturnType<Crm["audiences"]["subscribe"]>>["subscription"], SubscriptionView>>();

// both spellings of the reference's camelCase arguments, exactly one of them
const camel: SubscribeArgs = { id: "a", profileId: "p", confirmUrl: "http://localhost/c" };
const snake: SubscribeArgs = { id: "a", profile_id: "p", confirm_url: "http://localhost/c" };
// @ts-expect-error profileId is required
const missing: SubscribeArgs = { id: "a" };
// @ts-expect-error not both spellings at once
const both: SubscribeArgs = { id: "a", profileId: "p", profile_id: "p" };
void [camel, snake, missing, both];

function typeOnly(client: StoreCrmClient): void {
  // @ts-expect-error status is "active" | "archived"
  void client.crm.find({ status: "deleted" });
  // @ts-expect-error email is required
  void client.crm.create({});
  void client.crm.find({ sortField: "createdAt", sort_direction: "desc", taxonomyQuery: [] });
  void client.crm.revokeToken({ id: "p", tokenId: "s" });
  void client.crm.merge({ id: "p", source_id: "q" });
}
void typeOnly;

// events: the types as the server sends them, the object narrowed by the type
check<Equal<Awaited<ReturnType<Crm["webhooks"]["create"]>>, WebhookWithSecret>>();
check<Equal<Awaited<ReturnType<Crm["events"]["find"]>>["items"][number], Event>>();
check<Equal<Event["type"], EventType>>();
function narrow(e: Event): string {
  if (e.data.redacted === true) return e.data.object.profile_id;
  switch (e.type) {
    case "profile.created":
      return check<Equal<typeof e.data.object, Profile>>() && e.data.object.id;
    case "subscription.activated":
      return check<Equal<typeof e.data.object, Subscription>>() && e.data.object.audience_id;
    case "order.linked":
      return check<Equal<typeof e.data.object, Order>>() && e.data.object.order_id;
    case "profile.merged":
      return e.data.object.source_id;
    default:
      return e.id;
  }
}
void narrow;
const retryCamel: RetryDeliveryArgs = { id: "w", deliveryId: "d" };
const retrySnake: RetryDeliveryArgs = { id: "w", delivery_id: "d" };
void [retryCamel, retrySnake];
function webhookTypes(client: StoreCrmClient): void {
  void client.crm.webhooks.create({ url: "https://x.example", events: ["*", "profile.created"] });
  // @ts-expect-error event types are spelled with a dot
  void client.crm.webhooks.create({ url: "https://x.example", events: ["profile_created"] });
  // @ts-expect-error url is required
  void client.crm.webhooks.create({ events: ["*"] });
  void client.crm.events.find({ types: ["profile.created"], limit: 10, cursor: null });
  void client.crm.webhooks.update({ id: "w", description: null, status: "disabled" });
}
void webhookTypes;

// data in and out: exports are lazy downloads whose awaited value is the body stream
check<Equal<ReturnType<Crm["exportProfiles"]>, ExportDownload<ExportedProfile>>>();
check<Equal<Awaited<ReturnType<Crm["exportProfiles"]>>, ReadableStream<Uint8Array>>>();
check<Equal<ReturnType<Crm["audiences"]["exportSubscribers"]>, ExportDownload<ExportedSubscriber>>>();
check<Equal<Awaited<ReturnType<Crm["imports"]["wait"]>>["status"], ImportStatus>>();
check<Equal<Awaited<ReturnType<Crm["getConsents"]>>["items"][number], Consent>>();
check<Equal<Awaited<ReturnType<Crm["segments"]["profiles"]>>["items"][number], Profile>>();
async function dataTypes(client: StoreCrmClient): Promise<void> {
  for await (const row of client.crm.exportProfiles({ segment: "vips" }).lines()) {
    check<Equal<typeof row, ExportedProfile>>();
  }
  // @ts-expect-error format is "ndjson" | "csv"
  void client.crm.exportProfiles({ format: "xlsx" });
  void client.crm.segments.create({ key: "k", taxonomyQuery: [], status: "active" });
  void client.crm.segments.update({ id: "k", query: null, taxonomy_query: "[]" });
  void client.crm.imports.start({ file: new Uint8Array(), format: "csv", dryRun: true, onExisting: "skip", mapping: { columns: { "E-Mail": "email" } } });
  void client.crm.imports.start({ file: new Blob([]), dry_run: false, on_existing: "update", mapping: '{"columns": {}}' });
  // @ts-expect-error on_existing is "update" | "skip"
  void client.crm.imports.start({ file: "email\n", onExisting: "replace" });
  // @ts-expect-error a number is no file
  void client.crm.imports.start({ file: 42 });
}
void dataTypes;

describe("package", () => {
  it("exports the runtime API", () => {
    assert.deepEqual(Object.keys(sdk).sort(), [
      "StoreCrmError",
      "WebhookVerificationError",
      "createClient",
      "localStorageStorage",
      "memoryStorage",
      "verifyWebhook",
    ]);
  });

  it("npm pack ships dist (ESM + .d.ts), the sources and the README, and no tests", () => {
    const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: packageRoot, encoding: "utf8" });
    const [pack] = JSON.parse(out) as { name: string; version: string; files: { path: string }[] }[];
    assert.ok(pack);
    assert.deepEqual([pack.name, pack.version], ["@storecrm/sdk", "0.1.0"]);
    const files = pack.files.map((f) => f.path);
    for (const f of ["dist/index.js", "dist/index.d.ts", "dist/client.js", "dist/generated/openapi.d.ts", "dist/webhooks.js", "dist/webhooks.d.ts", "README.md", "package.json"]) {
      assert.ok(files.includes(f), `${f} is packed`);
    }
    assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("build-test/") || f.startsWith("node_modules/")));
  });
});
