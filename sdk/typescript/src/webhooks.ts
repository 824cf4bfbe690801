/**
 * Verifying the server's webhook deliveries (Standard Webhooks, CONTRACT §9.1) with Web Crypto:
 * no dependency, runs on Node 20+, Deno, Bun, edge runtimes and in browsers.
 *
 * ```ts
 * import { verifyWebhook, WebhookVerificationError } from "@storecrm/sdk/webhooks";
 * const event = await verifyWebhook({ secret: process.env.WEBHOOK_SECRET, headers: req.headers, body: rawBody });
 * ```
 */
import type { Event } from "./types.js";

/** A `Headers` object (Fetch API), or a plain record such as Node's `req.headers`; names are case-insensitive. */
export type WebhookHeaders =
  | { get(name: string): string | null }
  | Record<string, string | readonly string[] | undefined>;

export interface VerifyWebhookOptions {
  /** The endpoint's signing secret, `whsec_...`. */
  secret?: string;
  /**
   * Several secrets, any of which may have signed (during a rotation, say). Given with `secret`,
   * all of them are tried.
   */
  secrets?: readonly string[];
  /** The request's headers: `webhook-id`, `webhook-timestamp`, `webhook-signature`. */
  headers: WebhookHeaders;
  /**
   * The **raw** body as received, before any JSON parsing: a string (UTF-8), or its bytes
   * (`Uint8Array`, Node's `Buffer`, `ArrayBuffer`). A re-serialized object would not match.
   */
  body: string | Uint8Array | ArrayBuffer;
  /** How far `webhook-timestamp` may be from `now`, in seconds (default 300; `Infinity` turns the check off). */
  toleranceSeconds?: number;
  /** The current time: a `Date`, or Unix **seconds**. Defaults to the clock. */
  now?: Date | number;
}

/** Why a delivery was refused. */
export type WebhookVerificationErrorCode =
  /** `webhook-id`, `webhook-timestamp` or `webhook-signature` is absent or empty. */
  | "missing_headers"
  /** `webhook-timestamp` is not a Unix time in seconds. */
  | "invalid_timestamp"
  /** No `v1,` signature in the header matches the body under any of the secrets. */
  | "invalid_signature"
  /** Signed correctly, but `webhook-timestamp` is more than the tolerance in the past (a replay, or a clock off). */
  | "timestamp_too_old"
  /** Signed correctly, but `webhook-timestamp` is more than the tolerance in the future. */
  | "timestamp_too_new"
  /** Signed correctly, but the body is not JSON. */
  | "invalid_payload";

/** A delivery that must not be trusted: answer it with a 4xx (400 or 401) and do not act on it. */
export class WebhookVerificationError extends Error {
  override readonly name = "WebhookVerificationError";
  readonly code: WebhookVerificationErrorCode;
  /** The `webhook-id` header, when there was one (for logging). */
  readonly webhookId: string | undefined;

  constructor(code: WebhookVerificationErrorCode, message: string, webhookId?: string) {
    super(message);
    this.code = code;
    this.webhookId = webhookId;
  }
}

const encoder = new TextEncoder();

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (headers === null || typeof headers !== "object") throw new TypeError("storecrm: verifyWebhook needs headers");
  let value: string | readonly string[] | null | undefined;
  if (typeof headers.get === "function") {
    value = (headers as { get(name: string): string | null }).get(name);
  } else {
    const record = headers as Record<string, string | readonly string[] | undefined>;
    value = record[name];
    if (value === undefined) {
      for (const key of Object.keys(record)) {
        if (key.toLowerCase() === name) {
          value = record[key];
          break;
        }
      }
    }
  }
  if (value === null || value === undefined) return undefined;
  // A header sent on several lines: the signatures of all of them count.
  const text = typeof value === "string" ? value : value.join(" ");
  const trimmed = text.trim();
  return trimmed === "" ? undefined : trimmed;
}

/** The key bytes of a `whsec_` secret (base64 after the prefix). */
function secretKey(secret: string): Uint8Array<ArrayBuffer> {
  if (typeof secret !== "string" || secret === "") throw new TypeError("storecrm: a webhook secret is empty");
  const b64 = secret.startsWith("whsec_") ? secret.slice("whsec_".length) : secret;
  let binary: string;
  try {
    binary = atob(b64);
  } catch {
    throw new TypeError("storecrm: a webhook secret is not a whsec_ secret (base64 after whsec_)");
  }
  if (binary.length === 0) throw new TypeError("storecrm: a webhook secret is empty");
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function bodyBytes(body: VerifyWebhookOptions["body"]): Uint8Array<ArrayBuffer> {
  if (typeof body === "string") return encoder.encode(body);
  // Not `instanceof`: bytes made in another realm (a vm context, a worker) count too.
  if (Object.prototype.toString.call(body) === "[object ArrayBuffer]") return new Uint8Array((body as ArrayBuffer).slice(0));
  if (ArrayBuffer.isView(body)) {
    const copy = new Uint8Array(body.byteLength);
    copy.set(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
    return copy;
  }
  throw new TypeError(
    "storecrm: verifyWebhook needs the raw body (a string or bytes) as it was received, not a parsed object " +
      "(with Express: express.raw({ type: 'application/json' }); with fetch: await request.text())",
  );
}

function base64(bytes: ArrayBuffer): string {
  let binary = "";
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** Equal strings, in time that depends on their length only. */
function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (s === undefined) throw new TypeError("storecrm: verifyWebhook needs Web Crypto (globalThis.crypto.subtle): Node 20+, or a secure context in browsers");
  return s;
}

/** `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`. */
async function sign(key: Uint8Array<ArrayBuffer>, prefix: Uint8Array<ArrayBuffer>, body: Uint8Array<ArrayBuffer>): Promise<string> {
  const content = new Uint8Array(prefix.length + body.length);
  content.set(prefix, 0);
  content.set(body, prefix.length);
  const cryptoKey = await subtle().importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return base64(await subtle().sign("HMAC", cryptoKey, content));
}

/**
 * Checks a webhook delivery as Standard Webhooks specifies and answers its event: the HMAC-SHA256
 * signature of `"{webhook-id}.{webhook-timestamp}.{body}"` under the secret must be one of the
 * `v1,` signatures of `webhook-signature` (compared in constant time; any of several secrets may
 * have signed), and `webhook-timestamp` must be within `toleranceSeconds` of now. Throws a
 * `WebhookVerificationError` when the delivery must not be trusted, a `TypeError` when the call
 * itself is wrong (no secret, a parsed body).
 *
 * Deliveries are at least once: dedupe on `webhook-id` (the event's id).
 */
export async function verifyWebhook<T = Event>(options: VerifyWebhookOptions): Promise<T> {
  if (options === null || typeof options !== "object") throw new TypeError("storecrm: verifyWebhook needs { secret, headers, body }");
  const secrets = [...(options.secret !== undefined ? [options.secret] : []), ...(options.secrets ?? [])];
  if (secrets.length === 0) throw new TypeError("storecrm: verifyWebhook needs secret or secrets");
  const keys = secrets.map(secretKey);
  const body = bodyBytes(options.body);
  const tolerance = options.toleranceSeconds ?? 300;
  if (typeof tolerance !== "number" || Number.isNaN(tolerance) || tolerance < 0) {
    throw new TypeError("storecrm: toleranceSeconds must be a number of seconds, 0 or more");
  }

  const id = header(options.headers, "webhook-id");
  const timestamp = header(options.headers, "webhook-timestamp");
  const signatures = header(options.headers, "webhook-signature");
  if (id === undefined || timestamp === undefined || signatures === undefined) {
    const missing = [
      id === undefined ? "webhook-id" : undefined,
      timestamp === undefined ? "webhook-timestamp" : undefined,
      signatures === undefined ? "webhook-signature" : undefined,
    ].filter((h) => h !== undefined);
    throw new WebhookVerificationError("missing_headers", `the delivery has no ${missing.join(", ")} header`, id);
  }
  if (!/^\d{1,15}$/.test(timestamp)) {
    throw new WebhookVerificationError("invalid_timestamp", "webhook-timestamp is not a Unix time in seconds", id);
  }

  const prefix = encoder.encode(`${id}.${timestamp}.`);
  // Space-separated; a header sent on several lines comes joined with ", " (Headers, Node), and a
  // base64 signature never ends in a comma.
  const given = signatures
    .split(/\s+/)
    .map((s) => s.replace(/,+$/, ""))
    .filter((s) => s.startsWith("v1,"));
  let matched = false;
  for (const key of keys) {
    const expected = `v1,${await sign(key, prefix, body)}`;
    // Every candidate is compared, so the time taken does not tell which one matched.
    for (const candidate of given) if (constantTimeEqual(candidate, expected)) matched = true;
  }
  if (!matched) {
    throw new WebhookVerificationError(
      "invalid_signature",
      given.length === 0 ? "webhook-signature carries no v1 signature" : "no signature matches the body under the secret",
      id,
    );
  }

  const now = options.now === undefined ? Date.now() / 1000 : options.now instanceof Date ? options.now.getTime() / 1000 : options.now;
  const age = Math.floor(now) - Number(timestamp);
  if (age > tolerance) {
    throw new WebhookVerificationError("timestamp_too_old", `webhook-timestamp is ${age} s old (more than ${tolerance} s)`, id);
  }
  if (-age > tolerance) {
    throw new WebhookVerificationError("timestamp_too_new", `webhook-timestamp is ${-age} s in the future (more than ${tolerance} s)`, id);
  }

  try {
    return JSON.parse(new TextDecoder().decode(body)) as T;
  } catch {
    throw new WebhookVerificationError("invalid_payload", "the body is not JSON", id);
  }
}
