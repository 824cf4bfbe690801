/**
 * @storecrm/sdk: the TypeScript client of the storecrm REST API.
 *
 * ```ts
 * import { createClient, localStorageStorage } from "@storecrm/sdk";
 * const { crm } = createClient({ baseUrl: "https://crm.example.com", storeId, storage: localStorageStorage("shop.session") });
 * await crm.initialize();
 * const { profile_id } = await crm.connect({ email: "ann@example.com" });
 * await crm.audiences.subscribe({ id: "newsletter", profileId: profile_id, confirmUrl: "https://shop.example/confirm" });
 * ```
 */
export { createClient } from "./client.js";
export type {
  AuthMode,
  Audiences,
  ClientOptions,
  Crm,
  Events,
  ExportDownload,
  FetchLike,
  Imports,
  RawRequest,
  Segments,
  StoreCrmClient,
  Webhooks,
} from "./client.js";
export { StoreCrmError } from "./errors.js";
export type { ErrorBody, FieldError, StoreCrmErrorInit } from "./errors.js";
export { localStorageStorage, memoryStorage } from "./storage.js";
export type { TokenStorage, WebStorageLike } from "./storage.js";
export type * from "./types.js";
export { verifyWebhook, WebhookVerificationError } from "./webhooks.js";
export type { VerifyWebhookOptions, WebhookHeaders, WebhookVerificationErrorCode } from "./webhooks.js";
