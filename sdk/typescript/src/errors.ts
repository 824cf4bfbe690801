import type { components } from "./generated/openapi.js";

/** One field that failed validation (`validation_errors` of a 422). */
export type FieldError = components["schemas"]["FieldError"];
/** The JSON body of every error answer of the server. */
export type ErrorBody = components["schemas"]["ErrorBody"];

export interface StoreCrmErrorInit {
  status: number;
  code: string;
  message: string;
  validationErrors?: FieldError[];
  requestId?: string;
  retryAfter?: number;
  body?: unknown;
}

/**
 * Every answer of the server outside 2xx is thrown as a `StoreCrmError`.
 *
 * - `status`: the HTTP status (401, 404, 422, 429, ...).
 * - `code`: the server's stable `error` code (`validation_failed`, `not_found`, `rate_limited`,
 *   `refresh_token_reused`, ...). When the body is not the server's JSON (a proxy's HTML page),
 *   `http_<status>`.
 * - `validationErrors`: the 422's `validation_errors` (`[]` otherwise).
 * - `requestId`: the `request_id` of the body, else the `x-request-id` header.
 * - `retryAfter`: seconds to wait, from a 429's `retry_after` (or its `Retry-After` header).
 * - `body`: the parsed body as received, for anything else.
 *
 * The SDK itself throws one with `status: 401, code: "no_session"` when a call needs a stored
 * profile session and storage has none when a refresh is due.
 */
export class StoreCrmError extends Error {
  readonly status: number;
  readonly code: string;
  readonly validationErrors: FieldError[];
  readonly requestId: string | undefined;
  readonly retryAfter: number | undefined;
  readonly body: unknown;

  constructor(init: StoreCrmErrorInit) {
    super(init.message);
    this.name = "StoreCrmError";
    this.status = init.status;
    this.code = init.code;
    this.validationErrors = init.validationErrors ?? [];
    this.requestId = init.requestId;
    this.retryAfter = init.retryAfter;
    this.body = init.body;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `Retry-After` is either delta-seconds or an HTTP date. */
function parseRetryAfter(header: string | null): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const at = Date.parse(header);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

function parseFieldErrors(v: unknown): FieldError[] {
  if (!Array.isArray(v)) return [];
  return v.filter(isRecord).map((e) => ({ field: String(e["field"] ?? ""), error: String(e["error"] ?? "") }));
}

/** Build the error of a non-2xx answer from its status, headers and (already read) body text. */
export function errorFromResponse(response: Response, text: string): StoreCrmError {
  let body: unknown = text;
  try {
    body = text === "" ? undefined : JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  const headerRequestId = response.headers.get("x-request-id") ?? undefined;
  const headerRetryAfter = parseRetryAfter(response.headers.get("retry-after"));
  if (isRecord(body) && typeof body["error"] === "string") {
    const retry = body["retry_after"];
    const requestId = body["request_id"];
    const message = body["message"];
    return new StoreCrmError({
      status: response.status,
      code: body["error"],
      message: typeof message === "string" && message !== "" ? message : body["error"],
      validationErrors: parseFieldErrors(body["validation_errors"]),
      requestId: typeof requestId === "string" ? requestId : headerRequestId,
      retryAfter: typeof retry === "number" ? retry : headerRetryAfter,
      body,
    });
  }
  const reason = response.statusText !== "" ? response.statusText : `HTTP ${response.status}`;
  return new StoreCrmError({
    status: response.status,
    code: `http_${response.status}`,
    message: typeof body === "string" && body !== "" && body.length <= 200 ? `${reason}: ${body}` : reason,
    requestId: headerRequestId,
    retryAfter: headerRetryAfter,
    body,
  });
}
