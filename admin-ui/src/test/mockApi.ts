// A fake admin API for component tests: `fetch` is replaced by a router of handlers, and every
// call is recorded (method, path, query, JSON body, headers) for assertions.

import { vi } from 'vitest';
import type { LimitSources, LimitsView, PlansView, PlanView, Stats, UsageTotals, UserOverrides, UserView, UsersPage } from '../api/types';

export interface Call {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
  headers: Record<string, string>;
  credentials: RequestCredentials | undefined;
}

type Handler = (call: Call) => { status?: number; body?: unknown } | Promise<{ status?: number; body?: unknown }>;

export function json(status: number, body?: unknown): Response {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json' },
  });
}

export function mockApi(routes: Record<string, Handler>) {
  const calls: Call[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input), 'http://127.0.0.1:3001');
    const method = (init?.method ?? 'GET').toUpperCase();
    const headers = Object.fromEntries(
      Object.entries((init?.headers as Record<string, string> | undefined) ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
    );
    const call: Call = {
      method,
      path: url.pathname,
      query: url.searchParams,
      body: typeof init?.body === 'string' ? JSON.parse(init.body) : undefined,
      headers,
      credentials: init?.credentials,
    };
    calls.push(call);
    const key = `${method} ${url.pathname}`;
    const handler =
      routes[key] ??
      Object.entries(routes).find(([pattern]) => {
        const [m, p] = pattern.split(' ');
        if (m !== method || !p) return false;
        return new RegExp(`^${p.replace(/:[^/]+/g, '[^/]+')}$`).test(url.pathname);
      })?.[1];
    if (!handler) return json(404, { error: { code: 'not_found', message: `no mock for ${key}` } });
    const out = await handler(call);
    return out.status === 204 ? new Response(null, { status: 204 }) : json(out.status ?? 200, out.body);
  });
  vi.stubGlobal('fetch', fetchMock);
  return {
    calls,
    fetchMock,
    /** Calls to a path (optionally one method). */
    to(path: string, method?: string) {
      return calls.filter((c) => c.path === path && (!method || c.method === method));
    },
  };
}

export function totals(partial: Partial<UsageTotals> = {}): UsageTotals {
  return {
    calls: 0,
    input_tokens: 0,
    cached_input_tokens: 0,
    output_tokens: 0,
    reasoning_tokens: 0,
    total_tokens: 0,
    cost_nano_usd: 0,
    estimated_calls: 0,
    unpriced_calls: 0,
    errors: 0,
    latency_ms_sum: 0,
    ...partial,
  };
}

export const noOverrides: UserOverrides = {
  daily_tokens: null,
  monthly_tokens: null,
  daily_cost_nano_usd: null,
  monthly_cost_nano_usd: null,
  requests_per_minute: null,
  max_concurrent: null,
};

export const defaultLimits: LimitsView = {
  daily_tokens: 100_000,
  monthly_tokens: 1_000_000,
  daily_cost_nano_usd: null,
  monthly_cost_nano_usd: null,
  requests_per_minute: 60,
  max_concurrent: null,
};

/** Every limit from `[limits]`. */
export const fromLimits: LimitSources = {
  daily_tokens: 'limits',
  monthly_tokens: 'limits',
  daily_cost_nano_usd: 'limits',
  monthly_cost_nano_usd: 'limits',
  requests_per_minute: 'limits',
  max_concurrent: 'limits',
};

export function user(id: string, partial: Partial<UserView> = {}): UserView {
  return {
    id,
    email: `${id}@example.com`,
    name: null,
    blocked: false,
    blocked_reason: null,
    overrides: noOverrides,
    created_at: Date.now() - 86_400_000,
    last_seen_at: Date.now() - 5 * 60_000,
    today: totals({ calls: 2, total_tokens: 1200, cost_nano_usd: 3_000_000 }),
    month: totals({ calls: 10, total_tokens: 12_000, cost_nano_usd: 30_000_000 }),
    plan: null,
    limits: defaultLimits,
    limit_sources: fromLimits,
    ...partial,
  };
}

export function usersPage(users: UserView[], total = users.length, limit = 25, offset = 0): UsersPage {
  return { users, total, limit, offset, today: '2026-11-28', timezone: 'Europe/Paris' };
}

export function stats(partial: Partial<Stats> = {}): Stats {
  return {
    users_total: 3,
    users_active_today: 2,
    users_active_7d: 3,
    users_blocked: 1,
    today: totals({ calls: 1234, total_tokens: 5_678_901, cost_nano_usd: 12_345_678_900, errors: 2, estimated_calls: 12 }),
    month: totals({ calls: 45_678, total_tokens: 98_765_432, cost_nano_usd: 456_789_000_000 }),
    by_model: [],
    by_provider: [],
    estimated_share_today: 12 / 1234,
    estimated_share_month: 0,
    day: '2026-11-28',
    month_start: '2026-11-01',
    timezone: 'Europe/Paris',
    generated_at: Date.now(),
    ...partial,
  };
}

export const me = { admin: 'ops', expires_at: Date.now() + 3_600_000 };

export const configView = {
  config: {
    limits: {
      daily_tokens: 100_000,
      monthly_tokens: 1_000_000,
      requests_per_minute: 60,
      timezone: 'Europe/Paris',
      default_max_output_tokens: 4096,
      media_part_tokens: 1000,
    },
    providers: [],
    pricing: { 'gpt-4o-mini': { input: 0.15, output: 0.6 } },
  },
  secrets: { JWT_SECRET: true },
  toml: '[limits]\ndaily_tokens = 100000\n',
};

/** `[plans.free]`: 20,000 tokens a day, two model families, a 1,024-token ceiling (refused past it). */
export const freePlan: PlanView = {
  name: 'free',
  default: true,
  limits: { ...defaultLimits, daily_tokens: 20_000 },
  limit_sources: { ...fromLimits, daily_tokens: 'plan' },
  default_max_output_tokens: 4096,
  models: ['gpt-4o-mini*', 'gemini-2.5-flash*'],
  deny_models: [],
  max_output_tokens: 1024,
  clamp_max_output_tokens: false,
};

/** `[plans.pro]`: its own day and month tokens and a cost budget; o1-pro denied; clamped at 8,192. */
export const proPlan: PlanView = {
  name: 'pro',
  default: false,
  limits: { ...defaultLimits, daily_tokens: 500_000, monthly_tokens: 5_000_000, daily_cost_nano_usd: 2_500_000_000 },
  limit_sources: { ...fromLimits, daily_tokens: 'plan', monthly_tokens: 'plan', daily_cost_nano_usd: 'plan' },
  default_max_output_tokens: 2048,
  models: null,
  deny_models: ['o1-pro*'],
  max_output_tokens: 8192,
  clamp_max_output_tokens: true,
};

export function plansView(partial: Partial<PlansView> = {}): PlansView {
  return { plan_claim: 'plan', default_plan: 'free', limits: defaultLimits, plans: [freePlan, proPlan], ...partial };
}
