// Compile-time checks of the public types (tsc fails on a wrong one), plus what the package ships.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";

import * as sdk from "@storecrm/sdk";
import type { AuthToken, Crm, Profile, StoreCrmClient, SubscribeArgs, SubscriptionView } from "@storecrm/sdk";

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

describe("package", () => {
  it("exports the runtime API", () => {
    assert.deepEqual(Object.keys(sdk).sort(), ["StoreCrmError", "createClient", "localStorageStorage", "memoryStorage"]);
  });

  it("npm pack ships dist (ESM + .d.ts), the sources and the README, and no tests", () => {
    const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: packageRoot, encoding: "utf8" });
    const [pack] = JSON.parse(out) as { name: string; version: string; files: { path: string }[] }[];
    assert.ok(pack);
    assert.deepEqual([pack.name, pack.version], ["@storecrm/sdk", "0.1.0"]);
    const files = pack.files.map((f) => f.path);
    for (const f of ["dist/index.js", "dist/index.d.ts", "dist/client.js", "dist/generated/openapi.d.ts", "README.md", "package.json"]) {
      assert.ok(files.includes(f), `${f} is packed`);
    }
    assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("build-test/") || f.startsWith("node_modules/")));
  });
});
