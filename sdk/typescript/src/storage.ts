import type { AuthToken } from "./types.js";

type MaybePromise<T> = T | Promise<T>;

/**
 * Where the client keeps the profile session (`AuthToken`). `get` answers `null` (or `undefined`)
 * when there is none. Each method may be synchronous or return a promise, so IndexedDB, a cookie
 * jar or a server-side session store fit as well as `localStorage`.
 */
export interface TokenStorage {
  get(): MaybePromise<AuthToken | null | undefined>;
  set(token: AuthToken): MaybePromise<void>;
  clear(): MaybePromise<void>;
}

/** The default: the session lives as long as the client object (one process, one tab). */
export function memoryStorage(initial?: AuthToken | null): TokenStorage {
  let token: AuthToken | null = initial ?? null;
  return {
    get: () => token,
    set: (t) => {
      token = t;
    },
    clear: () => {
      token = null;
    },
  };
}

/** The part of the Web Storage API that `localStorageStorage` uses. */
export interface WebStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * Keeps the session in the browser's `localStorage` under `key` (JSON), so it survives reloads
 * and is shared by the tabs of one origin. Pass `sessionStorage` (or any object with
 * `getItem`/`setItem`/`removeItem`) as `store` to use another one. An unreadable entry counts as
 * no session.
 */
export function localStorageStorage(key = "storecrm.session", store?: WebStorageLike): TokenStorage {
  const backing = (): WebStorageLike => {
    if (store !== undefined) return store;
    const ls = (globalThis as { localStorage?: WebStorageLike }).localStorage;
    if (ls === undefined) {
      throw new TypeError("localStorageStorage: there is no localStorage here; pass a storage object");
    }
    return ls;
  };
  return {
    get: () => {
      const raw = backing().getItem(key);
      if (raw === null) return null;
      try {
        const parsed: unknown = JSON.parse(raw);
        if (typeof parsed === "object" && parsed !== null && "access_token" in parsed && "refresh_token" in parsed) {
          return parsed as AuthToken;
        }
      } catch {
        // fall through: not ours
      }
      return null;
    },
    set: (token) => backing().setItem(key, JSON.stringify(token)),
    clear: () => backing().removeItem(key),
  };
}
