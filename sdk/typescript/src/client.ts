import { StoreCrmError, errorFromResponse } from "./errors.js";
import { memoryStorage, type TokenStorage } from "./storage.js";
import type {
  AccessResponse,
  AddSubscriberResponse,
  Audience,
  AudiencePage,
  AuthToken,
  CodeSent,
  Confirmed,
  ConsentPage,
  ConsentsArgs,
  CreateSegmentArgs,
  CreateAudienceArgs,
  CreateProfileArgs,
  CreateWebhookArgs,
  Deleted,
  DeliveriesArgs,
  Delivery,
  DeliveryPage,
  EmailArgs,
  EventPage,
  ExportedProfile,
  ExportedSubscriber,
  ExportFormat,
  ExportProfilesArgs,
  ExportSubscribersArgs,
  FindAudiencesArgs,
  FindEventsArgs,
  FindProfilesArgs,
  FindWebhooksArgs,
  GetSubscribersArgs,
  IdArgs,
  ImportErrorsArgs,
  ImportFile,
  ImportFormat,
  ImportJob,
  LinkOrderArgs,
  LoggedOut,
  MergeArgs,
  OkBody,
  OperationId,
  Order,
  OrderPage,
  PageArgs,
  Profile,
  ProfileExport,
  ProfilePage,
  RefreshArgs,
  RetryDeliveryArgs,
  RevokeTokenArgs,
  RowErrorPage,
  Segment,
  SegmentCount,
  SegmentPage,
  SegmentProfilesArgs,
  SessionPage,
  StartImportArgs,
  SubscribeArgs,
  SubscribeResponse,
  SubscriberArgs,
  SubscriberPage,
  TokenArgs,
  Unsubscribed,
  UpdateAudienceArgs,
  UpdateProfileArgs,
  UpdateSegmentArgs,
  UpdateWebhookArgs,
  VerifyArgs,
  WaitImportArgs,
  Webhook,
  WebhookPage,
  WebhookWithSecret,
} from "./types.js";

/** The `fetch` the client calls: the global one by default, or a wrapper (logging, tests, retries). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface ClientOptions {
  /** The server's root, e.g. `https://crm.example.com` (the SDK appends `/v1/...`). */
  baseUrl: string;
  /** The store every call is scoped to. */
  storeId: string;
  /** A store API key (`sk_...`) for the admin calls. Never ship it to a browser. */
  apiKey?: string;
  /**
   * An account access token (from `POST /v1/auth/login`) for the admin calls, or a function that
   * answers a current one (called before each admin call). `apiKey` wins when both are given.
   */
  accessToken?: string | (() => string | Promise<string>);
  /** Where the profile session is kept: `memoryStorage()` by default. */
  storage?: TokenStorage;
  /** Defaults to `globalThis.fetch`. */
  fetch?: FetchLike;
}

/** How a call authenticates. */
export type AuthMode =
  /** No `Authorization` header. */
  | "none"
  /** The `apiKey` or account `accessToken`. */
  | "admin"
  /** The stored profile session; a 401 refreshes it once and retries. */
  | "profile"
  /** The admin credential when the client has one, else the stored profile session. */
  | "auto";

export interface RawRequest {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /**
   * A path under `/v1/stores/{storeId}` (`/email-templates`), or an absolute path starting with
   * `/v1/` (`/v1/auth/me`).
   */
  path: string;
  /** Strings and numbers are sent as they are; arrays and objects JSON-encoded. */
  query?: Record<string, unknown>;
  /** Sent as JSON. */
  body?: unknown;
  /** `"admin"` by default. */
  auth?: AuthMode;
}

export interface Audiences {
  /** `POST /audiences` (admin). */
  create(args: CreateAudienceArgs): Promise<Audience>;
  /** `GET /audiences/{id}` by id or key (admin; without an admin credential: active audiences only). */
  get(args: IdArgs): Promise<Audience>;
  /** `GET /audiences` (admin). */
  find(args?: FindAudiencesArgs): Promise<AudiencePage>;
  /** `PUT /audiences/{id}` (admin). */
  update(args: UpdateAudienceArgs): Promise<Audience>;
  /** `POST /audiences/{id}/subscribe` (the profile itself, or admin). */
  subscribe(args: SubscribeArgs): Promise<SubscribeResponse>;
  /** `GET /audiences/{id}/access` (profile session). */
  checkAccess(args: IdArgs): Promise<AccessResponse>;
  /** `GET /audiences/{id}/subscribers` (admin). */
  getSubscribers(args: GetSubscribersArgs): Promise<SubscriberPage>;
  /** `POST /audiences/{id}/subscribers` (admin). */
  addSubscriber(args: SubscriberArgs): Promise<AddSubscriberResponse>;
  /** `DELETE /audiences/{id}/subscribers/{profileId}` (admin). */
  removeSubscriber(args: SubscriberArgs): Promise<Deleted>;
  /** Added: `POST /audiences/confirm {token}` (public), what the `confirmUrl` page calls. */
  confirm(args: TokenArgs): Promise<Confirmed>;
  /** Added: `POST /audiences/unsubscribe {token}` (public). */
  unsubscribe(args: TokenArgs): Promise<Unsubscribed>;
  /**
   * Added: `GET /audiences/{id}/subscribers/export` (admin): the subscribers (all, or of one
   * `status`) streamed from one snapshot, as NDJSON (default) or CSV.
   */
  exportSubscribers(args: ExportSubscribersArgs): ExportDownload<ExportedSubscriber>;
}

/**
 * A streamed export. Nothing is requested until it is used, and it is requested once: `await`
 * it (or call `stream()`) for the body as a `ReadableStream<Uint8Array>`, iterate `lines()` for
 * the parsed NDJSON rows, or take `text()` (a CSV, say) whole. Use one of them, once. An error
 * answered before the body (401, 404, 422) rejects as a `StoreCrmError`; a failure later (the
 * server cut the response off) is the stream's error, as `fetch` reports it.
 */
export interface ExportDownload<Row> extends PromiseLike<ReadableStream<Uint8Array>> {
  /** The response, its status checked (2xx). */
  response(): Promise<Response>;
  /** The body as it arrives. */
  stream(): Promise<ReadableStream<Uint8Array>>;
  /**
   * The NDJSON rows one by one, read as they are consumed: memory stays one chunk and one line,
   * however long the export. Leaving the loop early cancels the download. A CSV export is a
   * `TypeError` here (use `stream()` or `text()`).
   */
  lines(): AsyncIterableIterator<Row>;
  /** The whole body as text. */
  text(): Promise<string>;
}

/** Saved `find` filters, their profiles and counts (docs/data.md). */
export interface Segments {
  /** `POST /segments {key, name?, query?, taxonomy_query?, status?}` (admin). */
  create(args: CreateSegmentArgs): Promise<Segment>;
  /** `GET /segments/{id}` by id or key (admin). */
  get(args: IdArgs): Promise<Segment>;
  /** `GET /segments` (admin), oldest first. */
  find(args?: PageArgs): Promise<SegmentPage>;
  /** `PUT /segments/{id}` (admin): absent fields stay, `null` clears a filter. */
  update(args: UpdateSegmentArgs): Promise<Segment>;
  /** `DELETE /segments/{id}` (admin); its profiles stay. */
  delete(args: IdArgs): Promise<Deleted>;
  /** `GET /segments/{id}/profiles` (admin): the profiles it matches now, paged and sorted like `find`. */
  profiles(args: SegmentProfilesArgs): Promise<ProfilePage>;
  /** `GET /segments/{id}/count` (admin): how many profiles it matches now. */
  count(args: IdArgs): Promise<SegmentCount>;
}

/** Customer lists imported from CSV or NDJSON, as jobs (docs/data.md). */
export interface Imports {
  /**
   * `POST /imports` (admin): uploads the file (at most 512 MiB) and answers the job (`running`),
   * which goes on in the background. A header or mapping that cannot be read is a 422 here.
   */
  start(args: StartImportArgs): Promise<ImportJob>;
  /** `GET /imports/{id}` (admin): status, progress, counts, the first row errors. */
  get(args: IdArgs): Promise<ImportJob>;
  /** `GET /imports/{id}/errors` (admin): every row error (up to 10,000), in row order. */
  errors(args: ImportErrorsArgs): Promise<RowErrorPage>;
  /** Polls `get` until the job is no longer `running`, and answers it (`completed`, `failed` or `interrupted`). */
  wait(args: WaitImportArgs): Promise<ImportJob>;
}

/** The store's event feed (CONTRACT §9.1). */
export interface Events {
  /** `GET /events` (admin): oldest first, keyset-paged, kept 30 days; `types` filters. Every page carries a cursor (poll with it); empty `items` = caught up. */
  find(args?: FindEventsArgs): Promise<EventPage>;
}

/** The store's webhook endpoints and their delivery log (CONTRACT §9.1). Verify deliveries with `verifyWebhook`. */
export interface Webhooks {
  /** `POST /webhooks {url, events, description?}` (admin); the answer carries the signing secret, this once. */
  create(args: CreateWebhookArgs): Promise<WebhookWithSecret>;
  /** `GET /webhooks/{id}` (admin); without the secret. */
  get(args: IdArgs): Promise<Webhook>;
  /** `GET /webhooks` (admin). */
  find(args?: FindWebhooksArgs): Promise<WebhookPage>;
  /** `PUT /webhooks/{id}` (admin): `url`, `events`, `description` (`null` clears), `status`. */
  update(args: UpdateWebhookArgs): Promise<Webhook>;
  /** `DELETE /webhooks/{id}` (admin), with its deliveries and their log. */
  delete(args: IdArgs): Promise<Deleted>;
  /** `POST /webhooks/{id}/rotate-secret` (admin): a new secret, shown this once; the old one signs too for 24 h. */
  rotateSecret(args: IdArgs): Promise<WebhookWithSecret>;
  /** `GET /webhooks/{id}/deliveries` (admin): newest first, each with its attempts. */
  deliveries(args: DeliveriesArgs): Promise<DeliveryPage>;
  /** `POST /webhooks/{id}/deliveries/{deliveryId}/retry` (admin): send it again now. */
  retry(args: RetryDeliveryArgs): Promise<Delivery>;
}

export interface Crm {
  /** `POST /profiles/initialize`: a new guest profile; the session is stored. */
  initialize(): Promise<AuthToken>;
  /** `POST /profiles/connect {email}`, sending the stored session (a guest carries over); the new session is stored. */
  connect(args: EmailArgs): Promise<AuthToken>;
  /** `POST /profiles/auth/code {email}`: mails a sign-in code. */
  requestCode(args: EmailArgs): Promise<CodeSent>;
  /** `POST /profiles/auth/verify {email, code}`, sending the stored session; the verified session is stored. */
  verify(args: VerifyArgs): Promise<AuthToken>;
  /** `POST /profiles/auth/refresh`: rotates the stored session (single-flight) and stores the new pair. */
  refreshToken(args?: RefreshArgs): Promise<AuthToken>;
  /** `GET /profiles/me` (profile session). */
  getMe(): Promise<Profile>;
  /** `POST /profiles/auth/logout` (profile session); the storage is cleared in every case. */
  logout(): Promise<LoggedOut>;
  /** The stored session, or `null`. */
  getSession(): Promise<AuthToken | null>;

  /** `POST /profiles {email, taxonomies?}` (admin); idempotent on email. */
  create(args: CreateProfileArgs): Promise<Profile>;
  /** `GET /profiles/{id}` (admin). */
  get(args: IdArgs): Promise<Profile>;
  /** `GET /profiles` (admin). */
  find(args?: FindProfilesArgs): Promise<ProfilePage>;
  /** `PUT /profiles/{id}` (admin). */
  update(args: UpdateProfileArgs): Promise<Profile>;
  /** `POST /profiles/{id}/merge {source_id}` (admin). */
  merge(args: MergeArgs): Promise<Profile>;
  /** `DELETE /profiles/{id}/sessions/{tokenId}` (admin, or the profile itself). */
  revokeToken(args: RevokeTokenArgs): Promise<Deleted>;
  /** `DELETE /profiles/{id}/sessions` (admin, or the profile itself). */
  revokeAllTokens(args: IdArgs): Promise<Deleted>;

  /** Added: `GET /profiles/{id}/sessions` (admin, or the profile itself). */
  getTokens(args: IdArgs): Promise<SessionPage>;
  /** Added: `POST /profiles/{id}/orders` (admin): link an order of the commerce system. */
  linkOrder(args: LinkOrderArgs): Promise<Order>;
  /** Added: `GET /profiles/{id}/orders` (admin). */
  getOrders(args: IdArgs & PageArgs): Promise<OrderPage>;
  /** Added: `GET /profiles/{id}/export` (admin): GDPR export. */
  export(args: IdArgs): Promise<ProfileExport>;
  /** Added: `DELETE /profiles/{id}` (admin): GDPR erasure. */
  erase(args: IdArgs): Promise<Deleted>;
  /** Added: `GET /profiles/{id}/consents` (admin): the profile's consent ledger, oldest record first. */
  getConsents(args: ConsentsArgs): Promise<ConsentPage>;
  /**
   * Added: `GET /profiles/export` (admin): profiles (`find`'s filters, or a `segment`) streamed
   * from one snapshot, as NDJSON (default) or CSV.
   */
  exportProfiles(args?: ExportProfilesArgs): ExportDownload<ExportedProfile>;

  audiences: Audiences;
  events: Events;
  webhooks: Webhooks;
  segments: Segments;
  imports: Imports;
}

export interface StoreCrmClient {
  crm: Crm;
  /** Any route, with the client's base URL, credentials, session refresh and error mapping. */
  request<T = unknown>(req: RawRequest): Promise<T>;
}

/** camelCase spellings of the reference that are sent under their snake_case names. */
const ALIASES: Record<string, string> = {
  profileId: "profile_id",
  priceId: "price_id",
  successUrl: "success_url",
  cancelUrl: "cancel_url",
  confirmUrl: "confirm_url",
  confirmTemplateId: "confirm_template_id",
  sourceId: "source_id",
  tokenId: "token_id",
  taxonomyQuery: "taxonomy_query",
  sortField: "sort_field",
  sortDirection: "sort_direction",
  refreshToken: "refresh_token",
  deliveryId: "delivery_id",
  dryRun: "dry_run",
  onExisting: "on_existing",
};

const SORT_FIELDS: Record<string, string> = { createdAt: "created_at", updatedAt: "updated_at" };

/**
 * The arguments as the server spells them: aliases renamed (both spellings with different values
 * is a `TypeError`), `undefined` dropped, `null` kept (it clears), the path keys left out. Other
 * keys pass through, so a typo reaches the server and is refused (422 `unknown_field`) instead of
 * being dropped silently.
 */
function normalize(args: object | undefined, pathKeys: readonly string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const spelledAs: Record<string, string> = {};
  if (args === undefined || args === null) return out;
  for (const [key, value] of Object.entries(args)) {
    if (value === undefined || pathKeys.includes(key)) continue;
    const name = ALIASES[key] ?? key;
    if (name in out && out[name] !== value) {
      throw new TypeError(`storecrm: both ${spelledAs[name]} and ${key} were given, with different values`);
    }
    out[name] = value;
    spelledAs[name] = key;
  }
  return out;
}

function required(args: Record<string, unknown>, name: string, call: string): string {
  const v = args[name];
  if (typeof v !== "string" || v === "") {
    throw new TypeError(`storecrm: ${call} needs ${name}`);
  }
  return v;
}

/** One path segment. `.` and `..` would be resolved away by URL parsing, so they are refused. */
function seg(value: string): string {
  if (value === "" || value === "." || value === "..") throw new TypeError(`storecrm: ${JSON.stringify(value)} is not an id`);
  return encodeURIComponent(value);
}

function queryString(query: Record<string, unknown> | undefined): string {
  if (query === undefined) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null) continue;
    if (typeof value === "string") params.append(key, value);
    else if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
      params.append(key, String(value));
    } else params.append(key, JSON.stringify(value));
  }
  const s = params.toString();
  return s === "" ? "" : `?${s}`;
}

/** `taxonomy_query` as the server takes it: an array JSON-encoded, a string (or `null`) as it is. */
function encodeTaxonomyQuery(args: Record<string, unknown>): Record<string, unknown> {
  const q = args["taxonomy_query"];
  if (q !== undefined && q !== null && typeof q !== "string") args["taxonomy_query"] = JSON.stringify(q);
  return args;
}

/** `createdAt` / `updatedAt` (the reference's) as the server spells them. */
function sortFieldOf(query: Record<string, unknown>): Record<string, unknown> {
  const sort = query["sort_field"];
  if (typeof sort === "string" && sort in SORT_FIELDS) query["sort_field"] = SORT_FIELDS[sort];
  return query;
}

const IMPORT_TYPES: Record<ImportFormat, string> = { csv: "text/csv", ndjson: "application/x-ndjson" };

function isStream(v: unknown): v is ReadableStream<Uint8Array> {
  return typeof ReadableStream !== "undefined" && v instanceof ReadableStream;
}

function isBlob(v: unknown): v is Blob {
  return typeof Blob !== "undefined" && v instanceof Blob;
}

/** The format of an import file that does not name one (see `StartImportArgs.format`). */
function sniffImportFormat(file: ImportFile): ImportFormat {
  if (isBlob(file)) {
    const type = file.type.split(";")[0]?.trim().toLowerCase() ?? "";
    if (type === "text/csv") return "csv";
    if (type === "application/x-ndjson" || type === "application/ndjson" || type === "application/jsonl") return "ndjson";
    const name = (file as { name?: unknown }).name;
    if (typeof name === "string") {
      if (/\.csv$/i.test(name)) return "csv";
      if (/\.(ndjson|jsonl)$/i.test(name)) return "ndjson";
    }
  } else if (typeof file === "string") {
    return /^[\s\uFEFF]*\{/.test(file) ? "ndjson" : "csv";
  } else if (file instanceof Uint8Array || file instanceof ArrayBuffer) {
    const bytes = file instanceof Uint8Array ? file : new Uint8Array(file);
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      // whitespace and a UTF-8 byte order mark
      if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d || b === 0xef || b === 0xbb || b === 0xbf) continue;
      return b === 0x7b ? "ndjson" : "csv";
    }
    return "csv";
  }
  throw new TypeError("storecrm: imports.start needs format (\"csv\" or \"ndjson\") for this file");
}

/**
 * The NDJSON rows of a body, parsed as the caller consumes them: one chunk and one line in
 * memory at a time. Leaving early cancels the body.
 */
async function* ndjson<T>(body: ReadableStream<Uint8Array>): AsyncGenerator<T, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let rest = "";
  let done = false;
  try {
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) {
        done = true;
        rest += decoder.decode();
        break;
      }
      rest += decoder.decode(chunk.value, { stream: true });
      let from = 0;
      for (let nl = rest.indexOf("\n"); nl >= 0; nl = rest.indexOf("\n", from)) {
        const line = rest.slice(from, nl);
        from = nl + 1;
        if (line.trim() !== "") yield JSON.parse(line) as T;
      }
      rest = rest.slice(from);
    }
    // a last line without its newline
    if (rest.trim() !== "") yield JSON.parse(rest) as T;
  } finally {
    if (!done) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * One refresh at a time per storage object: clients that share a storage share the refresh too.
 * (Tabs sharing `localStorage` are separate realms; there the server's grace window answers the
 * same successor to each of them.)
 */
const inflightRefresh = new WeakMap<TokenStorage, Promise<AuthToken>>();

/** 4xx answers to a refresh mean the session is over; a network error, 408, 429 or 5xx may pass. */
function isDefinitiveRefusal(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

function noSession(): StoreCrmError {
  return new StoreCrmError({ status: 401, code: "no_session", message: "no profile session is stored" });
}

export function createClient(options: ClientOptions): StoreCrmClient {
  if (typeof options.baseUrl !== "string" || options.baseUrl === "") throw new TypeError("storecrm: baseUrl is required");
  if (typeof options.storeId !== "string" || options.storeId === "") throw new TypeError("storecrm: storeId is required");
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const storePath = `/v1/stores/${seg(options.storeId)}`;
  const storage = options.storage ?? memoryStorage();
  const doFetch: FetchLike =
    options.fetch ??
    ((input, init) => {
      if (typeof globalThis.fetch !== "function") throw new TypeError("storecrm: no global fetch; pass options.fetch");
      return globalThis.fetch(input, init);
    });

  const hasAdmin = (): boolean => options.apiKey !== undefined || options.accessToken !== undefined;

  async function adminBearer(): Promise<string | undefined> {
    if (options.apiKey !== undefined) return options.apiKey;
    const t = options.accessToken;
    if (t === undefined) return undefined;
    return typeof t === "function" ? await t() : t;
  }

  async function readSession(): Promise<AuthToken | null> {
    return (await storage.get()) ?? null;
  }

  interface Prepared {
    method: string;
    url: string;
    body: BodyInit | undefined;
    /** `application/json` by default (when there is a body). */
    contentType?: string;
    /** `application/json` by default. */
    accept?: string;
  }

  function prepare(method: string, path: string, query?: Record<string, unknown>, body?: unknown): Prepared {
    const full = path.startsWith("/v1/") ? path : `${storePath}${path}`;
    return {
      method,
      url: `${baseUrl}${full}${queryString(query)}`,
      body: body === undefined ? undefined : JSON.stringify(body),
    };
  }

  function send(p: Prepared, bearer: string | undefined): Promise<Response> {
    const headers: Record<string, string> = { accept: p.accept ?? "application/json" };
    if (p.body !== undefined) headers["content-type"] = p.contentType ?? "application/json";
    if (bearer !== undefined) headers["authorization"] = `Bearer ${bearer}`;
    // `duplex` is what Node's fetch needs to send a stream (RequestInit's DOM typing lacks it).
    const init: RequestInit & { duplex?: "half" } = { method: p.method, headers };
    if (p.body !== undefined) init.body = p.body;
    if (isStream(p.body)) init.duplex = "half";
    return doFetch(p.url, init);
  }

  async function read<T>(res: Response): Promise<T> {
    const text = await res.text();
    if (!res.ok) throw errorFromResponse(res, text);
    return (text === "" ? undefined : JSON.parse(text)) as T;
  }

  /** Reads a non-2xx answer into its error. */
  async function failure(res: Response): Promise<StoreCrmError> {
    return errorFromResponse(res, await res.text());
  }

  async function clearIfStill(refreshToken: string): Promise<void> {
    const current = await readSession();
    if (current === null || current.refresh_token === refreshToken) await storage.clear();
  }

  /** POST /profiles/auth/refresh with this refresh token; stores the new pair, clears on refusal. */
  async function rotate(refreshToken: string): Promise<AuthToken> {
    const res = await send(prepare("POST", "/profiles/auth/refresh", undefined, { refresh_token: refreshToken }), undefined);
    if (!res.ok) {
      const err = await failure(res);
      if (isDefinitiveRefusal(res.status)) await clearIfStill(refreshToken);
      throw err;
    }
    const token = await read<AuthToken>(res);
    await storage.set(token);
    return token;
  }

  /**
   * The single-flight refresh. `stale` is the session a request was refused with: when the storage
   * already holds a newer one (another call or client refreshed meanwhile), that one is answered
   * without a request.
   */
  function refreshSession(stale: AuthToken | null): Promise<AuthToken> {
    const running = inflightRefresh.get(storage);
    if (running !== undefined) return running;
    const job = (async () => {
      const current = await readSession();
      if (current === null) throw noSession();
      if (stale !== null && current.refresh_token !== stale.refresh_token) return current;
      return rotate(current.refresh_token);
    })();
    const tracked = job.finally(() => {
      if (inflightRefresh.get(storage) === tracked) inflightRefresh.delete(storage);
    });
    inflightRefresh.set(storage, tracked);
    return tracked;
  }

  /**
   * A call with the stored profile session. A 401 (other than a wrong magic code) while a session
   * is stored refreshes it once (single-flight) and retries. With `optional`, a session that can
   * no longer be refreshed is dropped and the call is made without one (connect, verify).
   */
  async function profileCall<T>(p: Prepared, optional: boolean): Promise<T> {
    const session = await readSession();
    const res = await send(p, session?.access_token);
    if (res.ok) return read<T>(res);
    const err = await failure(res);
    if (res.status !== 401 || session === null || err.code === "invalid_code") throw err;
    let fresh: AuthToken;
    try {
      fresh = await refreshSession(session);
    } catch (refreshErr) {
      if (optional && refreshErr instanceof StoreCrmError && isDefinitiveRefusal(refreshErr.status)) {
        return read<T>(await send(p, undefined));
      }
      throw refreshErr;
    }
    return read<T>(await send(p, fresh.access_token));
  }

  async function call<T>(auth: AuthMode, p: Prepared): Promise<T> {
    switch (auth) {
      case "none":
        return read<T>(await send(p, undefined));
      case "admin":
        return read<T>(await send(p, await adminBearer()));
      case "profile":
        return profileCall<T>(p, false);
      case "auto":
        return hasAdmin() ? read<T>(await send(p, await adminBearer())) : profileCall<T>(p, false);
    }
  }

  /** A typed call of one operation of the OpenAPI document. */
  function op<O extends OperationId>(
    _operation: O,
    auth: AuthMode,
    method: string,
    path: string,
    extra: { query?: Record<string, unknown>; body?: unknown } = {},
  ): Promise<OkBody<O>> {
    return call<OkBody<O>>(auth, prepare(method, path, extra.query, extra.body));
  }

  /**
   * A call of one operation answered as the SDK's own type `T`, where the generated one is wrong
   * or too loose (the event types are spelled `profile_created` there; an event's `data` is `{}`).
   */
  function opAs<T>(
    _operation: OperationId,
    auth: AuthMode,
    method: string,
    path: string,
    extra: { query?: Record<string, unknown>; body?: unknown } = {},
  ): Promise<T> {
    return call<T>(auth, prepare(method, path, extra.query, extra.body));
  }

  /**
   * A streamed export (admin): requested on first use, once. `prepared` runs then too, so a
   * missing argument rejects like the other calls instead of throwing.
   */
  function download<Row>(_operation: OperationId, prepared: () => { p: Prepared; format: ExportFormat }): ExportDownload<Row> {
    let started: Promise<{ res: Response; format: ExportFormat }> | undefined;
    const start = (): Promise<{ res: Response; format: ExportFormat }> =>
      (started ??= (async () => {
        const { p, format } = prepared();
        const res = await send(p, await adminBearer());
        if (!res.ok) throw await failure(res);
        return { res, format };
      })());
    const body = (res: Response): ReadableStream<Uint8Array> =>
      res.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() });
    const dl: ExportDownload<Row> = {
      response: async () => (await start()).res,
      stream: async () => body((await start()).res),
      text: async () => (await start()).res.text(),
      lines: () =>
        (async function* () {
          const { res, format } = await start();
          if (format !== "ndjson") {
            await res.body?.cancel().catch(() => undefined);
            throw new TypeError("storecrm: lines() reads NDJSON; read a CSV export with stream() or text()");
          }
          yield* ndjson<Row>(body(res));
        })(),
      then: (onfulfilled, onrejected) => dl.stream().then(onfulfilled, onrejected),
    };
    return dl;
  }

  async function storeSession(token: AuthToken): Promise<AuthToken> {
    await storage.set(token);
    return token;
  }

  /** After a profile revoked its own session(s), drop what can no longer be used. */
  async function forgetRevoked(profileId: string, sessionId?: string): Promise<void> {
    if (hasAdmin()) return;
    const current = await readSession();
    if (current === null || current.profile_id !== profileId) return;
    if (sessionId === undefined || current.id === sessionId) await storage.clear();
  }

  const audiences: Audiences = {
    create: async (args) => {
      const body = normalize(args);
      required(body, "key", "audiences.create");
      return op("audiences_create", "admin", "POST", "/audiences", { body });
    },
    get: async (args) => {
      const id = required(normalize(args), "id", "audiences.get");
      return op("audiences_get", hasAdmin() ? "admin" : "none", "GET", `/audiences/${seg(id)}`);
    },
    find: async (args) => op("audiences_find", "admin", "GET", "/audiences", { query: normalize(args) }),
    update: async (args) => {
      const id = required(normalize(args), "id", "audiences.update");
      return op("audiences_update", "admin", "PUT", `/audiences/${seg(id)}`, { body: normalize(args, ["id"]) });
    },
    subscribe: async (args) => {
      const id = required(normalize(args), "id", "audiences.subscribe");
      const body = normalize(args, ["id"]);
      required(body, "profile_id", "audiences.subscribe");
      return op("audiences_subscribe", "auto", "POST", `/audiences/${seg(id)}/subscribe`, { body });
    },
    checkAccess: async (args) => {
      const id = required(normalize(args), "id", "audiences.checkAccess");
      return op("audiences_checkAccess", "profile", "GET", `/audiences/${seg(id)}/access`);
    },
    getSubscribers: async (args) => {
      const id = required(normalize(args), "id", "audiences.getSubscribers");
      return op("audiences_getSubscribers", "admin", "GET", `/audiences/${seg(id)}/subscribers`, {
        query: normalize(args, ["id"]),
      });
    },
    addSubscriber: async (args) => {
      const id = required(normalize(args), "id", "audiences.addSubscriber");
      const body = normalize(args, ["id"]);
      required(body, "profile_id", "audiences.addSubscriber");
      return op("audiences_addSubscriber", "admin", "POST", `/audiences/${seg(id)}/subscribers`, { body });
    },
    removeSubscriber: async (args) => {
      const a = normalize(args);
      const id = required(a, "id", "audiences.removeSubscriber");
      const profileId = required(a, "profile_id", "audiences.removeSubscriber");
      return op("audiences_removeSubscriber", "admin", "DELETE", `/audiences/${seg(id)}/subscribers/${seg(profileId)}`);
    },
    confirm: async (args) => {
      const body = normalize(args);
      required(body, "token", "audiences.confirm");
      return op("audiences_confirm", "none", "POST", "/audiences/confirm", { body });
    },
    unsubscribe: async (args) => {
      const body = normalize(args);
      required(body, "token", "audiences.unsubscribe");
      return op("audiences_unsubscribe", "none", "POST", "/audiences/unsubscribe", { body });
    },
    exportSubscribers: (args) =>
      download<ExportedSubscriber>("audiences_exportSubscribers", () => {
        const id = required(normalize(args), "id", "audiences.exportSubscribers");
        const query = normalize(args, ["id"]);
        return { p: exportRequest(`/audiences/${seg(id)}/subscribers/export`, query), format: formatOf(query) };
      }),
  };

  function formatOf(query: Record<string, unknown>): ExportFormat {
    return query["format"] === "csv" ? "csv" : "ndjson";
  }

  function exportRequest(path: string, query: Record<string, unknown>): Prepared {
    const p = prepare("GET", path, query);
    p.accept = `${formatOf(query) === "csv" ? "text/csv" : "application/x-ndjson"}, application/json;q=0.5`;
    return p;
  }

  const segments: Segments = {
    create: async (args) => {
      const body = encodeTaxonomyQuery(normalize(args));
      required(body, "key", "segments.create");
      return op("segments_create", "admin", "POST", "/segments", { body });
    },
    get: async (args) => {
      const id = required(normalize(args), "id", "segments.get");
      return op("segments_get", "admin", "GET", `/segments/${seg(id)}`);
    },
    find: async (args) => op("segments_find", "admin", "GET", "/segments", { query: normalize(args) }),
    update: async (args) => {
      const id = required(normalize(args), "id", "segments.update");
      return op("segments_update", "admin", "PUT", `/segments/${seg(id)}`, { body: encodeTaxonomyQuery(normalize(args, ["id"])) });
    },
    delete: async (args) => {
      const id = required(normalize(args), "id", "segments.delete");
      return op("segments_delete", "admin", "DELETE", `/segments/${seg(id)}`);
    },
    profiles: async (args) => {
      const id = required(normalize(args), "id", "segments.profiles");
      return op("segments_getProfiles", "admin", "GET", `/segments/${seg(id)}/profiles`, {
        query: sortFieldOf(normalize(args, ["id"])),
      });
    },
    count: async (args) => {
      const id = required(normalize(args), "id", "segments.count");
      return op("segments_count", "admin", "GET", `/segments/${seg(id)}/count`);
    },
  };

  const imports: Imports = {
    start: async (args) => {
      const file: ImportFile | undefined = args?.file;
      if (file === undefined || file === null) throw new TypeError("storecrm: imports.start needs file");
      const query = normalize(args, ["file", "format"]);
      const format = args.format ?? sniffImportFormat(file);
      if (!Object.prototype.hasOwnProperty.call(IMPORT_TYPES, format)) throw new TypeError(`storecrm: ${JSON.stringify(format)} is not an import format`);
      const p = prepare("POST", "/imports", query);
      p.body = file as BodyInit;
      p.contentType = IMPORT_TYPES[format];
      return call<ImportJob>("admin", p);
    },
    get: async (args) => {
      const id = required(normalize(args), "id", "imports.get");
      return opAs<ImportJob>("imports_get", "admin", "GET", `/imports/${seg(id)}`);
    },
    errors: async (args) => {
      const id = required(normalize(args), "id", "imports.errors");
      return op("imports_getErrors", "admin", "GET", `/imports/${seg(id)}/errors`, { query: normalize(args, ["id"]) });
    },
    wait: async (args) => {
      const id = required(normalize(args), "id", "imports.wait");
      const interval = args.intervalMs ?? 1000;
      const deadline = args.timeoutMs === undefined ? Infinity : Date.now() + args.timeoutMs;
      for (;;) {
        args.signal?.throwIfAborted();
        const job = await imports.get({ id });
        if (job.status !== "running") return job;
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new DOMException(`storecrm: import ${id} is still running after ${args.timeoutMs} ms`, "TimeoutError");
        }
        await sleep(Math.min(interval, left), args.signal);
      }
    },
  };

  const events: Events = {
    find: async (args) => opAs<EventPage>("events_find", "admin", "GET", "/events", { query: normalize(args) }),
  };

  const webhooks: Webhooks = {
    create: async (args) => {
      const body = normalize(args);
      required(body, "url", "webhooks.create");
      return opAs<WebhookWithSecret>("webhooks_create", "admin", "POST", "/webhooks", { body });
    },
    get: async (args) => {
      const id = required(normalize(args), "id", "webhooks.get");
      return opAs<Webhook>("webhooks_get", "admin", "GET", `/webhooks/${seg(id)}`);
    },
    find: async (args) => opAs<WebhookPage>("webhooks_find", "admin", "GET", "/webhooks", { query: normalize(args) }),
    update: async (args) => {
      const id = required(normalize(args), "id", "webhooks.update");
      return opAs<Webhook>("webhooks_update", "admin", "PUT", `/webhooks/${seg(id)}`, { body: normalize(args, ["id"]) });
    },
    delete: async (args) => {
      const id = required(normalize(args), "id", "webhooks.delete");
      return op("webhooks_delete", "admin", "DELETE", `/webhooks/${seg(id)}`);
    },
    rotateSecret: async (args) => {
      const id = required(normalize(args), "id", "webhooks.rotateSecret");
      return opAs<WebhookWithSecret>("webhooks_rotateSecret", "admin", "POST", `/webhooks/${seg(id)}/rotate-secret`);
    },
    deliveries: async (args) => {
      const id = required(normalize(args), "id", "webhooks.deliveries");
      return opAs<DeliveryPage>("webhooks_getDeliveries", "admin", "GET", `/webhooks/${seg(id)}/deliveries`, {
        query: normalize(args, ["id"]),
      });
    },
    retry: async (args) => {
      const a = normalize(args);
      const id = required(a, "id", "webhooks.retry");
      const deliveryId = required(a, "delivery_id", "webhooks.retry");
      return opAs<Delivery>("webhooks_retryDelivery", "admin", "POST", `/webhooks/${seg(id)}/deliveries/${seg(deliveryId)}/retry`);
    },
  };

  const crm: Crm = {
    initialize: async () =>
      storeSession(await op("profiles_initialize", "none", "POST", "/profiles/initialize")),
    connect: async (args) => {
      const body = normalize(args);
      required(body, "email", "connect");
      return storeSession(await profileCall<AuthToken>(prepare("POST", "/profiles/connect", undefined, body), true));
    },
    requestCode: async (args) => {
      const body = normalize(args);
      required(body, "email", "requestCode");
      return op("profiles_requestCode", "none", "POST", "/profiles/auth/code", { body });
    },
    verify: async (args) => {
      const body = normalize(args);
      required(body, "email", "verify");
      required(body, "code", "verify");
      return storeSession(await profileCall<AuthToken>(prepare("POST", "/profiles/auth/verify", undefined, body), true));
    },
    refreshToken: async (args) => {
      const given = normalize(args)["refresh_token"];
      if (typeof given === "string" && given !== "") return rotate(given);
      return refreshSession(null);
    },
    getMe: async () => op("profiles_getMe", "profile", "GET", "/profiles/me"),
    logout: async () => {
      const session = await readSession();
      if (session === null) return { logged_out: true };
      try {
        return await op("profiles_logout", "profile", "POST", "/profiles/auth/logout");
      } catch (err) {
        // 401: the session was already over, which is what logging out wants.
        if (err instanceof StoreCrmError && err.status === 401) return { logged_out: true };
        throw err;
      } finally {
        await storage.clear();
      }
    },
    getSession: readSession,

    create: async (args) => {
      const body = normalize(args);
      required(body, "email", "create");
      return op("profiles_create", "admin", "POST", "/profiles", { body });
    },
    get: async (args) => {
      const id = required(normalize(args), "id", "get");
      return op("profiles_get", "admin", "GET", `/profiles/${seg(id)}`);
    },
    find: async (args) => op("profiles_find", "admin", "GET", "/profiles", { query: sortFieldOf(normalize(args)) }),
    update: async (args) => {
      const id = required(normalize(args), "id", "update");
      return op("profiles_update", "admin", "PUT", `/profiles/${seg(id)}`, { body: normalize(args, ["id"]) });
    },
    merge: async (args) => {
      const id = required(normalize(args), "id", "merge");
      const body = normalize(args, ["id"]);
      required(body, "source_id", "merge");
      return op("profiles_merge", "admin", "POST", `/profiles/${seg(id)}/merge`, { body });
    },
    revokeToken: async (args) => {
      const a = normalize(args);
      const id = required(a, "id", "revokeToken");
      const tokenId = required(a, "token_id", "revokeToken");
      const out = await op("profiles_revokeToken", "auto", "DELETE", `/profiles/${seg(id)}/sessions/${seg(tokenId)}`);
      await forgetRevoked(id, tokenId);
      return out;
    },
    revokeAllTokens: async (args) => {
      const id = required(normalize(args), "id", "revokeAllTokens");
      const out = await op("profiles_revokeAllTokens", "auto", "DELETE", `/profiles/${seg(id)}/sessions`);
      await forgetRevoked(id);
      return out;
    },

    getTokens: async (args) => {
      const id = required(normalize(args), "id", "getTokens");
      return op("profiles_getTokens", "auto", "GET", `/profiles/${seg(id)}/sessions`);
    },
    linkOrder: async (args) => {
      const id = required(normalize(args), "id", "linkOrder");
      const body = normalize(args, ["id"]);
      required(body, "order_id", "linkOrder");
      return op("profiles_linkOrder", "admin", "POST", `/profiles/${seg(id)}/orders`, { body });
    },
    getOrders: async (args) => {
      const id = required(normalize(args), "id", "getOrders");
      return op("profiles_getOrders", "admin", "GET", `/profiles/${seg(id)}/orders`, { query: normalize(args, ["id"]) });
    },
    export: async (args) => {
      const id = required(normalize(args), "id", "export");
      return op("profiles_export", "admin", "GET", `/profiles/${seg(id)}/export`);
    },
    erase: async (args) => {
      const id = required(normalize(args), "id", "erase");
      return op("profiles_erase", "admin", "DELETE", `/profiles/${seg(id)}`);
    },
    getConsents: async (args) => {
      const id = required(normalize(args), "id", "getConsents");
      return op("profiles_getConsents", "admin", "GET", `/profiles/${seg(id)}/consents`, { query: normalize(args, ["id"]) });
    },
    exportProfiles: (args) =>
      download<ExportedProfile>("profiles_exportMany", () => {
        const query = normalize(args);
        return { p: exportRequest("/profiles/export", query), format: formatOf(query) };
      }),

    audiences,
    events,
    webhooks,
    segments,
    imports,
  };

  return {
    crm,
    request: async <T = unknown>(req: RawRequest): Promise<T> =>
      call<T>(req.auth ?? "admin", prepare(req.method, req.path, req.query, req.body)),
  };
}
