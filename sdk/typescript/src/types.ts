/**
 * The server's JSON, as generated from `docs/openapi.json` into `generated/openapi.ts`, under the
 * names the SDK uses, and the argument shapes of the SDK's calls.
 */
import type { components, operations, paths } from "./generated/openapi.js";

export type { components, operations, paths };

type Schemas = components["schemas"];

// ---- answers -------------------------------------------------------------------------------

/** A profile session: `id` is the session id (the `tokenId` of `revokeToken`), `profile_id` the profile. */
export type AuthToken = Schemas["AuthToken"];
export type Profile = Schemas["Profile"];
export type AuthTokenInfo = Schemas["AuthTokenInfo"];
export type VerificationCodeInfo = Schemas["VerificationCodeInfo"];
export type PromoUsage = Schemas["PromoUsage"];
export type TaxonomyEntry = Schemas["TaxonomyEntry"];
export type EntryField = Schemas["EntryField"];
export type FieldValue = Schemas["FieldValue"];
export type GeoPoint = Schemas["GeoPoint"];
export type TaxonomyQuery = Schemas["TaxonomyQuery"];
export type FieldQuery = Schemas["FieldQuery"];
export type Status = Schemas["Status"];
export type SortField = Schemas["SortField"];
export type SortDirection = Schemas["SortDirection"];
export type Audience = Schemas["Audience"];
export type AudienceType = Schemas["AudienceType"];
export type Price = Schemas["Price"];
export type PriceInterval = Schemas["PriceInterval"];
export type PriceProvider = Schemas["PriceProvider"];
export type Subscription = Schemas["Subscription"];
/** What a claim (an unverified session that named an existing address) learns of its subscription. */
export type SubscriptionRef = Schemas["SubscriptionRef"];
export type SubscriptionView = Schemas["SubscriptionView"];
export type SubscriptionStatus = Schemas["SubscriptionStatus"];
export type SubscriptionSource = Schemas["SubscriptionSource"];
export type SubscribeResponse = Schemas["SubscribeResponse"];
export type AccessResponse = Schemas["AccessResponse"];
export type AccessDenied = Schemas["AccessDenied"];
export type SubscriberView = Schemas["SubscriberView"];
export type AddSubscriberResponse = Schemas["AddSubscriberResponse"];
export type Deleted = Schemas["Deleted"];
export type LoggedOut = Schemas["LoggedOut"];
export type CodeSent = Schemas["CodeSent"];
export type Order = Schemas["Order"];
export type LinkOrder = Schemas["LinkOrder"];
export type ProfileExport = Schemas["ProfileExport"];
export type Confirmed = Schemas["Confirmed"];
export type Unsubscribed = Schemas["Unsubscribed"];
export type ProfilePage = Schemas["Paged_Profile"];
export type AudiencePage = Schemas["Paged_Audience"];
export type SubscriberPage = Schemas["Paged_SubscriberView"];
export type SessionPage = Schemas["Paged_AuthTokenInfo"];
export type OrderPage = Schemas["Paged_Order"];

// ---- helpers over the generated operations -------------------------------------------------

export type OperationId = keyof operations;
type OkStatus = 200 | 201 | 202;
type Responses<O extends OperationId> = operations[O]["responses"];
/** The JSON body of an operation's 2xx answers. */
export type OkBody<O extends OperationId> = {
  [K in keyof Responses<O> & OkStatus]: Responses<O>[K] extends { content: { "application/json": infer B } } ? B : never;
}[keyof Responses<O> & OkStatus];
/** The JSON request body of an operation. */
export type JsonBody<O extends OperationId> = operations[O] extends {
  requestBody?: { content: { "application/json": infer B } };
}
  ? B
  : never;
/** The query parameters of an operation. */
export type QueryOf<O extends OperationId> = operations[O]["parameters"] extends { query?: infer Q } ? NonNullable<Q> : never;

// ---- arguments -----------------------------------------------------------------------------

/** Exactly one of two spellings of a required argument (`profileId` or `profile_id`). */
export type OneOf<A, B> = (A & { [K in Exclude<keyof B, keyof A>]?: never }) | (B & { [K in Exclude<keyof A, keyof B>]?: never });

export interface EmailArgs {
  email: string;
}
export interface VerifyArgs {
  email: string;
  /** The 6-digit code from the mail. */
  code: string;
}
/** `refreshToken()` refreshes the stored session; pass a refresh token to refresh (and store) another one. */
export interface RefreshArgs {
  refresh_token?: string;
  refreshToken?: string;
}
export interface IdArgs {
  /** A profile id, or for audiences an id or a key. */
  id: string;
}

export type CreateProfileArgs = JsonBody<"profiles_create">;

/** The reference's `createdAt` / `updatedAt` are accepted and sent as `created_at` / `updated_at`. */
export type SortFieldArg = SortField | "createdAt" | "updatedAt";

export interface FindProfilesArgs {
  /** Case-insensitive substring of the email or a text taxonomy value, or an exact profile id. */
  query?: string;
  /** Sent JSON-encoded in one query parameter; a string is sent as it is. */
  taxonomy_query?: TaxonomyQuery[] | string;
  taxonomyQuery?: TaxonomyQuery[] | string;
  status?: Status;
  /** 1–200, default 50. */
  limit?: number;
  /** The `cursor` of the previous page. */
  cursor?: string | null;
  sort_field?: SortFieldArg;
  sortField?: SortFieldArg;
  sort_direction?: SortDirection;
  sortDirection?: SortDirection;
}

export type UpdateProfileArgs = IdArgs & JsonBody<"profiles_update">;
export type MergeArgs = IdArgs & OneOf<{ source_id: string }, { sourceId: string }>;
export type RevokeTokenArgs = IdArgs & OneOf<{ tokenId: string }, { token_id: string }>;
export type LinkOrderArgs = IdArgs & LinkOrder;
export interface PageArgs {
  limit?: number;
  cursor?: string | null;
}

type ConfirmTemplateArg = {
  /** Email template id for double opt-in; `null` (update) makes the audience single opt-in. */
  confirm_template_id?: string | null;
  confirmTemplateId?: string | null;
};

export type CreateAudienceArgs = Omit<JsonBody<"audiences_create">, "type" | "confirm_template_id"> &
  ConfirmTemplateArg & {
    /** `"standard"` (default) or `{ type: "paid", prices: [...] }`. */
    type?: AudienceType | "standard" | null;
  };

export type UpdateAudienceArgs = IdArgs &
  Omit<JsonBody<"audiences_update">, "type" | "confirm_template_id"> &
  ConfirmTemplateArg & {
    type?: AudienceType | "standard" | null;
  };

export interface FindAudiencesArgs {
  /** Sent JSON-encoded (`["a","b"]`); a string is sent as it is. */
  ids?: string[] | string;
  status?: Status;
  /** Substring of the audience keys. */
  query?: string;
  limit?: number;
  cursor?: string | null;
}

export type SubscribeArgs = IdArgs &
  OneOf<{ profileId: string }, { profile_id: string }> & {
    /** Required for paid audiences: one of the audience's prices. */
    priceId?: string | null;
    price_id?: string | null;
    successUrl?: string | null;
    success_url?: string | null;
    cancelUrl?: string | null;
    cancel_url?: string | null;
    /** The storefront page that POSTs the mailed token to `audiences.confirm` (double opt-in). */
    confirmUrl?: string | null;
    confirm_url?: string | null;
  };

export interface GetSubscribersArgs extends IdArgs {
  status?: SubscriptionStatus;
  limit?: number;
  cursor?: string | null;
}

export type SubscriberArgs = IdArgs & OneOf<{ profileId: string }, { profile_id: string }>;

export interface TokenArgs {
  /** The single-use token of a confirmation or unsubscribe link (`?token=...`). */
  token: string;
}

// ---- events and webhooks (CONTRACT §9.1) ---------------------------------------------------

/**
 * What an event says happened, as the server sends it (`profile.created`). Written out here: the
 * generated `EventType` schema spells the values in snake_case (`profile_created`), which is not
 * what the server sends.
 */
export type EventType =
  | "profile.created"
  | "profile.updated"
  | "profile.verified"
  | "profile.merged"
  | "profile.erased"
  | "subscription.created"
  | "subscription.activated"
  | "subscription.cancellation_scheduled"
  | "subscription.cancelled"
  | "subscription.expired"
  | "order.linked";

/** An endpoint's event filter: event types, or `"*"` for every type. */
export type EventFilter = EventType | "*";

/** The `data.object` of each event type. */
export interface EventObjects {
  "profile.created": Profile;
  "profile.updated": Profile;
  "profile.verified": Profile;
  "profile.merged": { target_id: string; source_id: string };
  "profile.erased": { id: string };
  "subscription.created": Subscription;
  "subscription.activated": Subscription;
  "subscription.cancellation_scheduled": Subscription;
  "subscription.cancelled": Subscription;
  "subscription.expired": Subscription;
  "order.linked": Order;
}

/** What an erased profile's earlier events keep: ids only. */
export interface RedactedEventData {
  object: { id: string; profile_id: string };
  redacted: true;
}

/** `data` of an event of type `T`: the object as the API answered it then, or ids only after an erasure. */
export type EventData<T extends EventType = EventType> = { object: EventObjects[T]; redacted?: never } | RedactedEventData;

/** One event of type `T`. */
export interface EventOf<T extends EventType> {
  id: string;
  type: T;
  store_id: string;
  /** Unix seconds. */
  created_at: number;
  data: EventData<T>;
}

/**
 * An event, as the feed lists it and a webhook delivers it: narrow on `type` (and on
 * `data.redacted`) to get the object's type.
 */
export type Event = { [T in EventType]: EventOf<T> }[EventType];

export interface EventPage {
  items: Event[];
  /** `null` on the last page. */
  cursor?: string | null;
}

export type Webhook = Omit<Schemas["Webhook"], "events"> & { events: EventFilter[] };
/** A webhook endpoint with its signing secret (`whsec_...`): answered once, by create and rotateSecret. */
export type WebhookWithSecret = Webhook & { secret: string };
export type WebhookPage = { items: Webhook[]; cursor?: string | null };
export type EndpointStatus = Schemas["EndpointStatus"];
export type DeliveryStatus = Schemas["DeliveryStatus"];
export type DeliveryAttempt = Schemas["DeliveryAttempt"];
export type Delivery = Omit<Schemas["Delivery"], "event_type"> & { event_type: EventType };
export type DeliveryPage = { items: Delivery[]; cursor?: string | null };

export interface FindEventsArgs {
  /** Only these types; an array is sent JSON-encoded, a string (`"profile.created,profile.updated"`) as it is. */
  types?: EventType[] | string;
  /** 1–200, default 50. */
  limit?: number;
  /** The `cursor` of the previous page (with the same `types`). */
  cursor?: string | null;
}

export type CreateWebhookArgs = Omit<JsonBody<"webhooks_create">, "events"> & {
  /** Event types, or `["*"]` for every type. */
  events: EventFilter[];
};

export type UpdateWebhookArgs = IdArgs &
  Omit<JsonBody<"webhooks_update">, "events"> & {
    events?: EventFilter[] | null;
  };

export interface FindWebhooksArgs {
  limit?: number;
  cursor?: string | null;
}

export type DeliveriesArgs = IdArgs & PageArgs;
export type RetryDeliveryArgs = IdArgs & OneOf<{ deliveryId: string }, { delivery_id: string }>;

// ---- data in and out: segments, exports, imports, the consent ledger (docs/data.md) ---------

/** Saved `find` filters; `taxonomy_query` is answered as the server stores it, a JSON-encoded `TaxonomyQuery[]`. */
export type Segment = Schemas["Segment"];
export type SegmentCount = Schemas["SegmentCount"];
export type SegmentPage = Schemas["Paged_Segment"];
/** One record of the consent ledger. */
export type Consent = Schemas["Consent"];
export type ConsentAction = Schemas["ConsentAction"];
export type ConsentPage = Schemas["Paged_Consent"];
export type ExportFormat = Schemas["ExportFormat"];
export type ImportFormat = Schemas["ImportFormat"];
export type OnExisting = Schemas["OnExisting"];
/** One refused row of an import: its line in the file, the column (CSV header or NDJSON field path), a code. */
export type RowError = Schemas["RowError"];
export type RowErrorPage = Schemas["Paged_RowError"];
/**
 * Where an import stands. The document types `status` as a string; these are the values the
 * server writes (`interrupted`: the server running it stopped; run the same file again).
 */
export type ImportStatus = "running" | "completed" | "failed" | "interrupted";
/** An import job: counts so far, progress, the first row errors. */
export type ImportJob = Omit<Schemas["ImportJob"], "status"> & { status: ImportStatus };

/**
 * One line of an NDJSON profile export: the API's profile without its sessions, codes and
 * collections. Written out here: the document types an export's body as a string.
 */
export interface ExportedProfile {
  id: string;
  email: string | null;
  status: Status;
  verified: boolean;
  taxonomies: TaxonomyEntry[];
  /** Unix seconds. */
  created_at: number;
  updated_at: number;
}

/** One line of an NDJSON subscriber export (the CSV has the same columns, in this order). */
export interface ExportedSubscriber {
  profile_id: string;
  email: string | null;
  subscription_id: string;
  status: SubscriptionStatus;
  source: SubscriptionSource;
  price_id: string | null;
  start_date: number | null;
  end_date: number | null;
  confirmed_at: number | null;
  cancelled_at: number | null;
  created_at: number;
  updated_at: number;
}

/** `find`'s `taxonomy_query`: an array is sent JSON-encoded, a string as it is; `null` clears (update). */
type TaxonomyQueryArg = {
  taxonomy_query?: TaxonomyQuery[] | string | null;
  taxonomyQuery?: TaxonomyQuery[] | string | null;
};

export type CreateSegmentArgs = Omit<JsonBody<"segments_create">, "taxonomy_query"> & TaxonomyQueryArg;
/** Absent fields stay; `null` clears a filter. */
export type UpdateSegmentArgs = IdArgs & Omit<JsonBody<"segments_update">, "taxonomy_query"> & TaxonomyQueryArg;

export interface SegmentProfilesArgs extends IdArgs {
  /** 1–200, default 50. */
  limit?: number;
  cursor?: string | null;
  sort_field?: SortFieldArg;
  sortField?: SortFieldArg;
  sort_direction?: SortDirection;
  sortDirection?: SortDirection;
}

export type ConsentsArgs = IdArgs & PageArgs;

export interface ExportProfilesArgs {
  /** `ndjson` (default) or `csv`. */
  format?: ExportFormat;
  query?: string;
  /** Sent JSON-encoded; a string is sent as it is. */
  taxonomy_query?: TaxonomyQuery[] | string;
  taxonomyQuery?: TaxonomyQuery[] | string;
  status?: Status;
  /** A segment's id or key: its filters (not together with the others: 422 `conflicts_with_filters`). */
  segment?: string;
}

export interface ExportSubscribersArgs extends IdArgs {
  /** `ndjson` (default) or `csv`. */
  format?: ExportFormat;
  status?: SubscriptionStatus;
}

/** A file to import: its text, its bytes, a `Blob` / `File`, or a stream of its bytes. */
export type ImportFile = string | Blob | Uint8Array | ArrayBuffer | ReadableStream<Uint8Array>;

/** Names headers that are not already named as the columns of `docs/data.md` (CSV only). */
export interface ImportMapping {
  /** `{"E-Mail": "email", "Tags": "traits.tags", "Newsletter": "audience:news", "Signed up": "consent_at", "Notes": "ignore"}` */
  columns: Record<string, string>;
}

export interface StartImportArgs {
  file: ImportFile;
  /**
   * `csv` or `ndjson`. When absent: a `Blob`'s type (`text/csv`, `application/x-ndjson`), else a
   * `File`'s extension (`.csv`, `.ndjson`, `.jsonl`), else for text and bytes the first
   * character (`{` is NDJSON, anything else CSV). A stream without it is a `TypeError`.
   */
  format?: ImportFormat;
  /** Validate and count only; nothing is written. */
  dryRun?: boolean;
  dry_run?: boolean;
  /** `update` (default) or `skip` a row whose email is a profile already. */
  onExisting?: OnExisting;
  on_existing?: OnExisting;
  /** CSV only; a string is sent as it is. */
  mapping?: ImportMapping | string;
}

export type ImportErrorsArgs = IdArgs & PageArgs;

export interface WaitImportArgs extends IdArgs {
  /** Between two polls; 1000 by default. */
  intervalMs?: number;
  /** Gives up with a `TimeoutError` `DOMException` after this long; no limit by default. */
  timeoutMs?: number;
  /** Stops waiting (rejects with the signal's reason). */
  signal?: AbortSignal;
}
