// Data in and out against the real server (docs/data.md): segments, streamed exports (NDJSON rows
// through lines(), CSV as text), imports as jobs (dry run, row errors, wait, error pages, the file
// as text, bytes, Blob or stream), and the consent ledger.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  StoreCrmError,
  type Crm,
  type ExportedProfile,
  type ExportedSubscriber,
  type StoreCrmClient,
  type TaxonomyEntry,
  type TaxonomyQuery,
} from "@storecrm/sdk";

import { backends, countingFetch, createConfirmTemplate, startServer, uniqueEmail, type Server } from "./helpers.js";

function rejectsWith(status: number, code?: string): (err: unknown) => boolean {
  return (err) => err instanceof StoreCrmError && err.status === status && (code === undefined || err.code === code);
}

async function collect<T>(rows: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const row of rows) out.push(row);
  return out;
}

function streamOf(text: string, chunk = 7): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + chunk));
      at += chunk;
    },
  });
}

for (const { backend, skip } of backends()) {
  describe(`${backend}: data in and out`, { skip }, () => {
    let server: Server;
    let client: StoreCrmClient;
    let admin: Crm;
    let taxonomyId: string;
    let n = 0;
    const key = (tag: string): string => `${tag}-${n++}`;

    before(async () => {
      server = await startServer(backend);
      client = server.client({ admin: true });
      admin = client.crm;
      const taxonomy = await client.request<{ id: string }>({
        method: "POST",
        path: "/taxonomies",
        body: {
          key: "traits",
          schema: [
            { key: "tier", type: "text", options: ["gold", "silver"] },
            { key: "vip", type: "boolean" },
          ],
        },
      });
      taxonomyId = taxonomy.id;
    });
    after(async () => {
      await server?.stop();
    });

    const traits = (tier: string): TaxonomyEntry[] => [{ taxonomy_id: taxonomyId, fields: [{ key: "tier", type: "text", value: [tier] }] }];
    const tierIs = (tier: string): TaxonomyQuery[] => [{ taxonomy_id: taxonomyId, query: [{ key: "tier", type: "text", value: [tier] }] }];

    it("segments: create, get by id and key, find, count, profiles, update, delete", async () => {
      const tag = key("seg");
      const gold = [
        await admin.create({ email: `${tag}-1@example.com`, taxonomies: traits("gold") }),
        await admin.create({ email: `${tag}-2@example.com`, taxonomies: traits("gold") }),
        await admin.create({ email: `${tag}-3@example.com`, taxonomies: traits("gold") }),
      ];
      await admin.create({ email: `${tag}-4@example.com`, taxonomies: traits("silver") });

      const created = await admin.segments.create({ key: tag, name: "Gold", query: tag, taxonomyQuery: tierIs("gold") });
      assert.equal(created.key, tag);
      assert.equal(created.name, "Gold");
      assert.equal(created.query, tag);
      assert.deepEqual(JSON.parse(created.taxonomy_query ?? "null"), tierIs("gold"), "answered JSON-encoded, as stored");
      assert.equal(created.status ?? null, null);

      assert.equal((await admin.segments.get({ id: created.id })).key, tag);
      assert.equal((await admin.segments.get({ id: tag })).id, created.id);
      const other = await admin.segments.create({ key: key("other") });
      const page = await admin.segments.find({ limit: 1 });
      assert.equal(page.items.length, 1);
      assert.ok(page.cursor);
      const rest = await admin.segments.find({ limit: 200, cursor: page.cursor });
      assert.deepEqual(
        [...page.items, ...rest.items].map((s) => s.id).filter((id) => id === created.id || id === other.id),
        [created.id, other.id],
        "oldest first",
      );

      assert.deepEqual(await admin.segments.count({ id: tag }), { segment_id: created.id, count: 3 });
      const first = await admin.segments.profiles({ id: tag, limit: 2, sortField: "email", sortDirection: "desc" });
      assert.deepEqual(
        first.items.map((p) => p.email),
        [gold[2]?.email, gold[1]?.email],
      );
      assert.ok(first.cursor);
      const second = await admin.segments.profiles({ id: created.id, limit: 2, sort_field: "email", sort_direction: "desc", cursor: first.cursor });
      assert.deepEqual(
        second.items.map((p) => p.email),
        [gold[0]?.email],
      );
      const oldest = await admin.segments.profiles({ id: tag, sortField: "createdAt" });
      assert.deepEqual(
        oldest.items.map((p) => p.id),
        gold.map((p) => p.id),
      );

      // null clears a filter; absent fields stay
      const widened = await admin.segments.update({ id: tag, taxonomy_query: null, status: "active" });
      assert.equal(widened.taxonomy_query ?? null, null);
      assert.equal(widened.query, tag);
      assert.equal(widened.name, "Gold");
      assert.equal((await admin.segments.count({ id: created.id })).count, 4);
      await admin.update({ id: gold[0]!.id, status: "archived" });
      assert.equal((await admin.segments.count({ id: created.id })).count, 3);

      await assert.rejects(admin.segments.create({ key: tag }), rejectsWith(409, "key_taken"));
      await assert.rejects(admin.segments.update({ id: other.id, key: tag }), rejectsWith(409, "key_taken"));
      await assert.rejects(
        admin.segments.create({ key: key("bad"), taxonomy_query: [{ taxonomy_id: "00000000-0000-7000-8000-000000000000", query: [] }] }),
        rejectsWith(422),
      );
      // @ts-expect-error key is required
      await assert.rejects(admin.segments.create({ name: "no key" }), TypeError);

      assert.deepEqual(await admin.segments.delete({ id: tag }), { deleted: true });
      await assert.rejects(admin.segments.get({ id: created.id }), rejectsWith(404, "not_found"));
      await assert.rejects(admin.segments.count({ id: tag }), rejectsWith(404));
      assert.equal((await admin.get({ id: gold[1]!.id })).id, gold[1]!.id, "its profiles stay");
    });

    it("exportProfiles: NDJSON rows through lines(), CSV as text, the stream when awaited; a segment's filters", async () => {
      const tag = key("exp");
      const made = [
        await admin.create({ email: `${tag}-a@example.com`, taxonomies: traits("gold") }),
        await admin.create({ email: `${tag}-b@example.com`, taxonomies: traits("silver") }),
        await admin.create({ email: `${tag}-c@example.com`, taxonomies: traits("gold") }),
      ];

      const rows: ExportedProfile[] = [];
      for await (const profile of admin.exportProfiles({ query: tag }).lines()) rows.push(profile);
      assert.deepEqual(
        rows.map((r) => r.id),
        made.map((p) => p.id),
        "oldest first",
      );
      assert.deepEqual(Object.keys(rows[0]!).sort(), ["created_at", "email", "id", "status", "taxonomies", "updated_at", "verified"]);
      assert.equal(rows[0]!.email, made[0]!.email);
      assert.equal(rows[0]!.verified, false);
      assert.deepEqual(rows[0]!.taxonomies[0]?.fields, [{ key: "tier", type: "text", value: ["gold"] }]);

      const gold = await collect(admin.exportProfiles({ query: tag, taxonomyQuery: tierIs("gold") }).lines());
      assert.deepEqual(
        gold.map((r) => r.email),
        [made[0]!.email, made[2]!.email],
      );

      const segment = await admin.segments.create({ key: tag, query: tag, taxonomy_query: tierIs("silver") });
      const bySegment = await collect(admin.exportProfiles({ segment: segment.key }).lines());
      assert.deepEqual(
        bySegment.map((r) => r.id),
        [made[1]!.id],
      );

      const csv = await admin.exportProfiles({ format: "csv", query: tag }).text();
      const lines = csv.trimEnd().split(/\r?\n/);
      assert.equal(lines[0], "id,email,status,verified,created_at,updated_at,traits.tier,traits.vip");
      assert.equal(lines.length, 4);
      assert.ok(lines[1]!.startsWith(`${made[0]!.id},${made[0]!.email},active,false,`));
      assert.ok(lines[1]!.endsWith(",gold,"));

      // awaited: the body as a ReadableStream<Uint8Array>
      const stream = await admin.exportProfiles({ query: tag, format: "ndjson" });
      assert.ok(stream instanceof ReadableStream);
      const text = await new Response(stream).text();
      assert.equal(text.split("\n").filter((l) => l !== "").length, 3);
      const res = await admin.exportProfiles({ format: "csv", query: tag }).response();
      assert.match(res.headers.get("content-type") ?? "", /^text\/csv/);
      assert.match(res.headers.get("content-disposition") ?? "", /attachment; filename="profiles-\d+\.csv"/);
      await res.body?.cancel();

      // errors before the body are the SDK's errors
      await assert.rejects(admin.exportProfiles({ segment: segment.id, query: tag }).lines().next(), rejectsWith(422, "validation_failed"));
      await assert.rejects(admin.exportProfiles({ segment: "no-such-segment" }).text(), rejectsWith(404));
      await assert.rejects(
        Promise.resolve(admin.exportProfiles({ taxonomy_query: "not json" })),
        (err: unknown) => err instanceof StoreCrmError && err.status === 422 && err.validationErrors.some((e) => e.field === "taxonomy_query"),
      );
      // @ts-expect-error not an export format
      await assert.rejects(admin.exportProfiles({ format: "xml" }).text(), rejectsWith(422));
      await assert.rejects(admin.exportProfiles({ format: "csv" }).lines().next(), TypeError);
    });

    it("lines() is requested once, on first use, and leaving the loop early cancels the download", async () => {
      const tag = key("lazy");
      for (let i = 0; i < 5; i++) await admin.create({ email: `${tag}-${i}@example.com` });
      const counting = countingFetch();
      const crm = server.client({ admin: true, fetch: counting.fetch }).crm;
      const download = crm.exportProfiles({ query: tag });
      assert.equal(counting.count("GET /profiles/export"), 0, "nothing before it is used");
      let seen = 0;
      for await (const row of download.lines()) {
        assert.match(row.email ?? "", new RegExp(`^${tag}-`));
        if (++seen === 2) break;
      }
      assert.equal(seen, 2);
      assert.equal(counting.count("GET /profiles/export"), 1);
      // the same download answers the same (now consumed) response: no second request
      await download.response();
      assert.equal(counting.count("GET /profiles/export"), 1);
      // the server is fine after the cancel
      assert.equal((await collect(crm.exportProfiles({ query: tag }).lines())).length, 5);
    });

    it("audiences.exportSubscribers: NDJSON rows, CSV, a status filter; 404 for an unknown audience", async () => {
      // double opt-in: a subscribe stays pending until confirmed
      const template = await createConfirmTemplate(client, key("tpl"));
      const audience = await admin.audiences.create({ key: key("subs"), confirmTemplateId: template.id });
      const a = await admin.create({ email: uniqueEmail("sub-a") });
      const b = await admin.create({ email: uniqueEmail("sub-b") });
      await admin.audiences.addSubscriber({ id: audience.id, profileId: a.id });
      await admin.audiences.subscribe({ id: audience.key, profileId: b.id, confirmUrl: "http://localhost:3000/confirm" });

      const rows: ExportedSubscriber[] = await collect(admin.audiences.exportSubscribers({ id: audience.key }).lines());
      assert.deepEqual(
        rows.map((r) => [r.profile_id, r.email, r.status]).sort(),
        [
          [a.id, a.email, "active"],
          [b.id, b.email, "pending"],
        ].sort(),
      );
      assert.deepEqual(Object.keys(rows[0]!), [
        "profile_id",
        "email",
        "subscription_id",
        "status",
        "source",
        "price_id",
        "start_date",
        "end_date",
        "confirmed_at",
        "cancelled_at",
        "created_at",
        "updated_at",
      ]);
      const active = await collect(admin.audiences.exportSubscribers({ id: audience.id, status: "active" }).lines());
      assert.deepEqual(
        active.map((r) => r.profile_id),
        [a.id],
      );
      const csv = await admin.audiences.exportSubscribers({ id: audience.id, format: "csv", status: "active" }).text();
      const lines = csv.trimEnd().split(/\r?\n/);
      assert.equal(lines[0], "profile_id,email,subscription_id,status,source,price_id,start_date,end_date,confirmed_at,cancelled_at,created_at,updated_at");
      assert.equal(lines.length, 2);
      assert.ok(lines[1]!.startsWith(`${a.id},${a.email},${active[0]!.subscription_id},active,admin,`));

      await assert.rejects(admin.audiences.exportSubscribers({ id: "no-such-audience" }).text(), rejectsWith(404, "not_found"));
      // @ts-expect-error id is required
      await assert.rejects(admin.audiences.exportSubscribers({}).text(), TypeError);
    });

    it("imports: a dry run writes nothing; the import writes the good rows and reports the bad one; wait, errors paged", async () => {
      const news = await admin.audiences.create({ key: key("news") });
      const tag = key("imp");
      const file = [
        "E-Mail,traits.tier,traits.vip,audience:" + news.key + ",consent_at,consent_source,Notes",
        `${tag}-a@example.com,gold,true,yes,2024-02-29,signup form,hello`,
        `not-an-email,gold,,,,,`,
        `${tag}-b@example.com,bronze,maybe,,,,`,
        `${tag}-c@example.com,silver,false,,,,`,
        "",
      ].join("\n");
      const mapping = { columns: { "E-Mail": "email", Notes: "ignore" } };

      const dry = await admin.imports.start({ file, format: "csv", dryRun: true, mapping });
      assert.equal(dry.dry_run, true);
      assert.ok(["running", "completed"].includes(dry.status));
      const dryDone = await admin.imports.wait({ id: dry.id, intervalMs: 25, timeoutMs: 30_000 });
      assert.equal(dryDone.status, "completed");
      assert.deepEqual(
        [dryDone.rows, dryDone.created, dryDone.updated, dryDone.skipped, dryDone.failed, dryDone.subscribed],
        [4, 2, 0, 0, 2, 1],
      );
      assert.equal(dryDone.progress_percent, 100);
      assert.equal((await admin.find({ query: tag })).items.length, 0, "a dry run writes nothing");

      const job = await admin.imports.start({ file, mapping, on_existing: "update" });
      assert.equal(job.format, "csv", "text not starting with { is CSV");
      const done = await admin.imports.wait({ id: job.id, intervalMs: 25 });
      assert.equal(done.status, "completed");
      assert.equal(done.dry_run, false);
      assert.deepEqual([done.rows, done.created, done.failed, done.subscribed], [4, 2, 2, 1]);
      assert.ok(done.errors.some((e) => e.row === 3 && e.error === "invalid_email"));
      assert.ok(done.errors.some((e) => e.row === 4 && e.column === "traits.vip" && e.error === "invalid_boolean"));
      assert.deepEqual(await admin.imports.get({ id: job.id }), done);

      const found = await admin.find({ query: tag, sortField: "email" });
      assert.deepEqual(
        found.items.map((p) => p.email),
        [`${tag}-a@example.com`, `${tag}-c@example.com`],
      );
      assert.equal(found.items[0]?.verified, false, "a file is no proof");

      // every row error, paged
      const first = await admin.imports.errors({ id: job.id, limit: 1 });
      assert.equal(first.items.length, 1);
      assert.ok(first.cursor);
      const rest = await admin.imports.errors({ id: job.id, limit: 200, cursor: first.cursor });
      assert.equal(rest.cursor ?? null, null);
      assert.deepEqual([...first.items, ...rest.items], done.errors);

      // the subscription carries the file's consent evidence
      const ledger = await admin.getConsents({ id: found.items[0]!.id });
      assert.deepEqual(
        ledger.items.map((c) => [c.action, c.audience_id, c.at, c.source, c.status_after]),
        [["import", news.id, 1_709_164_800, "signup form", "active"]],
      );

      // again with skip: nothing changes
      const skipped = await admin.imports.wait({ id: (await admin.imports.start({ file, mapping, onExisting: "skip" })).id, intervalMs: 25 });
      assert.deepEqual([skipped.created, skipped.updated, skipped.skipped, skipped.subscribed], [0, 0, 2, 0]);
    });

    it("imports: the file as bytes, Blob, File and stream; NDJSON; header errors are a 422; the format is needed for a stream", async () => {
      const tag = key("files");
      const done = async (p: Promise<{ id: string }>): Promise<{ format: string; created: number; failed: number }> =>
        admin.imports.wait({ id: (await p).id, intervalMs: 25 });
      const csv = (s: string): string => `email,traits.tier\n${tag}-${s}@example.com,gold\n`;

      const bytes = await done(admin.imports.start({ file: new TextEncoder().encode(csv("bytes")) }));
      assert.deepEqual([bytes.format, bytes.created], ["csv", 1]);
      const blob = await done(admin.imports.start({ file: new Blob([csv("blob")], { type: "text/csv" }) }));
      assert.deepEqual([blob.format, blob.created], ["csv", 1]);
      const named = await done(admin.imports.start({ file: new File([`{"email":"${tag}-file@example.com"}\n`], "list.ndjson") }));
      assert.deepEqual([named.format, named.created], ["ndjson", 1]);
      const streamed = await done(admin.imports.start({ file: streamOf(csv("stream")), format: "csv" }));
      assert.deepEqual([streamed.format, streamed.created], ["csv", 1]);
      const ndjson = [
        JSON.stringify({ email: `${tag}-n1@example.com`, taxonomies: traits("silver") }),
        "not json",
        JSON.stringify({ email: `${tag}-n2@example.com`, status: "archived" }),
        "",
      ].join("\n");
      const lines = await done(admin.imports.start({ file: ndjson }));
      assert.deepEqual([lines.format, lines.created, lines.failed], ["ndjson", 2, 1]);
      assert.equal((await admin.find({ query: tag, limit: 200 })).items.length, 6);

      await assert.rejects(
        admin.imports.start({ file: "mail,traits.tier\nx@example.com,gold\n" }),
        (err: unknown) =>
          err instanceof StoreCrmError && err.status === 422 && err.validationErrors.some((e) => e.field === "columns" && e.error === "email_column_required"),
      );
      await assert.rejects(
        admin.imports.start({ file: "email\n", mapping: { columns: { Missing: "email" } } }),
        (err: unknown) => err instanceof StoreCrmError && err.status === 422 && err.validationErrors.some((e) => e.field === "mapping.columns.Missing"),
      );
      await assert.rejects(admin.imports.start({ file: ndjson, mapping: { columns: { a: "email" } } }), rejectsWith(422));
      await assert.rejects(admin.imports.start({ file: "" , format: "csv" }), rejectsWith(422));
      await assert.rejects(admin.imports.start({ file: streamOf(csv("no-format")) }), TypeError);
      await assert.rejects(admin.imports.start({ file: new Blob(["email\n"]) }), TypeError);
      // @ts-expect-error file is required
      await assert.rejects(admin.imports.start({ format: "csv" }), TypeError);
      await assert.rejects(admin.imports.get({ id: "00000000-0000-7000-8000-000000000000" }), rejectsWith(404));
      await assert.rejects(admin.imports.errors({ id: "00000000-0000-7000-8000-000000000000" }), rejectsWith(404));
    });

    it("imports.wait polls until the job is no longer running, gives up after timeoutMs with a TimeoutError, stops on its signal", async () => {
      const job = await admin.imports.start({ file: `email\n${key("wait")}@example.com\n`, dryRun: true });
      await admin.imports.wait({ id: job.id, intervalMs: 25 });
      // a server whose job reads "running" for the first polls, then forever
      let polls = 0;
      let runningFor = 3;
      const stuck = server.client({
        admin: true,
        fetch: async (input, init) => {
          const res = await fetch(input, init);
          if (!new URL(input).pathname.endsWith(`/imports/${job.id}`)) return res;
          polls++;
          if (polls > runningFor) return res;
          const body = { ...((await res.json()) as object), status: "running" };
          return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
        },
      }).crm;
      const done = await stuck.imports.wait({ id: job.id, intervalMs: 10 });
      assert.equal(done.status, "completed");
      assert.equal(polls, 4);

      polls = 0;
      runningFor = Infinity;
      const started = Date.now();
      await assert.rejects(
        stuck.imports.wait({ id: job.id, intervalMs: 20, timeoutMs: 150 }),
        (err: unknown) => err instanceof DOMException && err.name === "TimeoutError",
      );
      assert.ok(Date.now() - started >= 150);
      assert.ok(polls >= 3, `${polls} polls`);

      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error("stop")), 50);
      await assert.rejects(stuck.imports.wait({ id: job.id, intervalMs: 10_000, signal: controller.signal }), /stop/);
    });

    it("getConsents: the ledger after a subscribe, an admin add and an unsubscribe, oldest first and paged", async () => {
      const audience = await admin.audiences.create({ key: key("ledger") });
      const club = await admin.audiences.create({ key: key("club") });
      const shopper = server.client();
      await shopper.crm.initialize();
      const session = await shopper.crm.connect({ email: uniqueEmail("ledger") });
      const profileId = session.profile_id;
      const { subscription } = await shopper.crm.audiences.subscribe({ id: audience.key, profileId });
      assert.equal(subscription.status, "active");
      await admin.audiences.addSubscriber({ id: club.id, profileId });
      await admin.audiences.removeSubscriber({ id: club.id, profileId });

      const all = await admin.getConsents({ id: profileId });
      assert.deepEqual(
        all.items.map((c) => [c.action, c.audience_id, c.status_after]),
        [
          ["subscribe", audience.id, "active"],
          ["admin_add", club.id, "active"],
          ["admin_remove", club.id, "cancelled"],
        ],
      );
      const first = all.items[0]!;
      assert.equal(first.profile_id, profileId);
      assert.equal(first.subscription_id, subscription.id);
      assert.match(first.ip ?? "", /^127\.0\.0\.0\/24$/, "shortened to its /24");
      assert.ok(first.at > 0);

      const page1 = await admin.getConsents({ id: profileId, limit: 2 });
      assert.equal(page1.items.length, 2);
      assert.ok(page1.cursor);
      const page2 = await admin.getConsents({ id: profileId, limit: 2, cursor: page1.cursor });
      assert.deepEqual([...page1.items, ...page2.items], all.items);
      assert.equal(page2.cursor ?? null, null);

      // the GDPR export carries them too
      assert.deepEqual((await admin.export({ id: profileId })).consents, all.items);
      await assert.rejects(admin.getConsents({ id: "00000000-0000-7000-8000-000000000000" }), rejectsWith(404));
      await assert.rejects(shopper.crm.getConsents({ id: profileId }), rejectsWith(401));
    });
  });
}
