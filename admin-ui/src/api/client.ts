// Same-origin calls to the admin API. The session is an HttpOnly cookie the browser sends by
// itself; state changes are POST/PUT with JSON, and the browser's own `Origin` header passes the
// server's CSRF check. A 401 anywhere (except on sign-in itself) means the session is gone: the
// registered handler sends the operator to the sign-in page.

import type {
  AlertsPage,
  AuditPage,
  ConfigView,
  ControlsChange,
  LimitsRequest,
  Order,
  PlansView,
  Series,
  SessionInfo,
  Stats,
  UserSort,
  UserUsage,
  UsersPage,
} from './types';

/** An error answer of the admin API (`{"error":{"code","message"}}`), or a network failure. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

type UnauthorizedHandler = () => void;
let onUnauthorized: UnauthorizedHandler | null = null;

/** Called on every 401 from an endpoint behind sign-in. Returns the unregister function. */
export function setUnauthorizedHandler(handler: UnauthorizedHandler | null): () => void {
  onUnauthorized = handler;
  return () => {
    if (onUnauthorized === handler) onUnauthorized = null;
  };
}

export interface RequestOptions {
  method?: 'GET' | 'POST' | 'PUT';
  body?: unknown;
  signal?: AbortSignal;
  /** Do not treat a 401 as an expired session (sign-in answers 401 to a wrong password). */
  ignoreUnauthorized?: boolean;
}

async function errorFrom(res: Response): Promise<ApiError> {
  let code = 'http_' + res.status;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body: unknown = await res.json();
    const err = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (err && typeof err.code === 'string') code = err.code;
    if (err && typeof err.message === 'string') message = err.message;
  } catch {
    // Not JSON (a proxy's error page): keep the status line.
  }
  return new ApiError(res.status, code, message);
}

export async function request<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const init: RequestInit = {
    method: opts.method ?? 'GET',
    credentials: 'same-origin',
    headers,
    signal: opts.signal,
  };
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  let res: Response;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Tollgate could not be reached. Is it running?');
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401 && !opts.ignoreUnauthorized) onUnauthorized?.();
    throw err;
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** `?a=1&b=2` of the defined, non-empty values (or ''). */
export function queryString(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

const enc = encodeURIComponent;

export interface UsersParams {
  search?: string;
  /** Only the users on this plan (`[plans.NAME]`). */
  plan?: string;
  sort?: UserSort;
  order?: Order;
  limit?: number;
  offset?: number;
}

export const api = {
  me: (signal?: AbortSignal) => request<SessionInfo>('/api/admin/me', { signal, ignoreUnauthorized: true }),
  login: (username: string, password: string) =>
    request<SessionInfo>('/api/admin/login', {
      method: 'POST',
      body: { username, password },
      ignoreUnauthorized: true,
    }),
  logout: () => request<void>('/api/admin/logout', { method: 'POST', ignoreUnauthorized: true }),
  stats: (signal?: AbortSignal) => request<Stats>('/api/admin/stats', { signal }),
  series: (days: number, by: 'model' | 'provider', user?: string, signal?: AbortSignal) =>
    request<Series>(`/api/admin/usage/series${queryString({ days, by, user })}`, { signal }),
  users: (p: UsersParams, signal?: AbortSignal) =>
    request<UsersPage>(`/api/admin/users${queryString({ ...p })}`, { signal }),
  userUsage: (id: string, days: number, cursor?: number | null, limit?: number, signal?: AbortSignal) =>
    request<UserUsage>(`/api/admin/user/${enc(id)}/usage${queryString({ days, cursor, limit })}`, {
      signal,
    }),
  block: (id: string, reason: string) =>
    request<ControlsChange>(`/api/admin/user/${enc(id)}/block`, {
      method: 'POST',
      body: reason.trim() ? { reason: reason.trim() } : {},
    }),
  unblock: (id: string) =>
    request<ControlsChange>(`/api/admin/user/${enc(id)}/unblock`, { method: 'POST', body: {} }),
  setLimits: (id: string, body: LimitsRequest) =>
    request<ControlsChange>(`/api/admin/user/${enc(id)}/limits`, { method: 'PUT', body }),
  audit: (target?: string, cursor?: number | null, limit?: number, signal?: AbortSignal) =>
    request<AuditPage>(`/api/admin/audit${queryString({ target, cursor, limit })}`, { signal }),
  alerts: (cursor?: number | null, limit?: number, signal?: AbortSignal) =>
    request<AlertsPage>(`/api/admin/alerts${queryString({ cursor, limit })}`, { signal }),
  config: (signal?: AbortSignal) => request<ConfigView>('/api/admin/config', { signal }),
  plans: (signal?: AbortSignal) => request<PlansView>('/api/admin/plans', { signal }),
};

/** The CSV export's address: a plain link downloads it with the session cookie. */
export function csvUrl(from: string, to: string, user?: string): string {
  return `/api/admin/usage.csv${queryString({ from, to, user })}`;
}
