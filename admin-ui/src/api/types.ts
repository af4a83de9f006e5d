// The admin API's JSON shapes (src/admin/api.rs, src/admin/session.rs, src/store/reads.rs).
// Money is nano-USD (1e-9 USD) integers unless a field says USD; times are unix ms; days are
// `YYYY-MM-DD` in the configured `limits.timezone`.

export interface SessionInfo {
  /** The account name, or `jwt:<subject>` for a bearer token. */
  admin: string;
  /** When the session ends (unix ms); null for a bearer token. */
  expires_at: number | null;
}

export interface UsageTotals {
  calls: number;
  input_tokens: number;
  cached_input_tokens: number;
  output_tokens: number;
  reasoning_tokens: number;
  total_tokens: number;
  cost_nano_usd: number;
  estimated_calls: number;
  unpriced_calls: number;
  errors: number;
  latency_ms_sum: number;
}

export interface UserOverrides {
  daily_tokens: number | null;
  monthly_tokens: number | null;
  daily_cost_nano_usd: number | null;
  monthly_cost_nano_usd: number | null;
  requests_per_minute: number | null;
  max_concurrent: number | null;
}

/** The limits in force: defaults with the user's overrides applied. */
export interface LimitsView {
  daily_tokens: number;
  monthly_tokens: number;
  daily_cost_nano_usd: number | null;
  monthly_cost_nano_usd: number | null;
  requests_per_minute: number;
  max_concurrent: number | null;
}

export interface UserView {
  id: string;
  email: string | null;
  name: string | null;
  blocked: boolean;
  blocked_reason: string | null;
  overrides: UserOverrides;
  created_at: number;
  last_seen_at: number | null;
  today: UsageTotals;
  month: UsageTotals;
  limits: LimitsView;
}

export type UserSort =
  | 'id'
  | 'last_seen'
  | 'created'
  | 'tokens_today'
  | 'tokens_month'
  | 'cost_today'
  | 'cost_month';

export type Order = 'asc' | 'desc';

export interface UsersPage {
  users: UserView[];
  total: number;
  limit: number;
  offset: number;
  today: string;
  timezone: string;
}

export interface DayPoint {
  day: string;
  totals: UsageTotals;
}

export interface ModelUsage {
  provider: string;
  model: string | null;
  totals: UsageTotals;
}

export interface ProviderUsage {
  provider: string;
  totals: UsageTotals;
}

export interface CallRow {
  id: number;
  request_id: string;
  ts: number;
  user_id: string;
  provider: string;
  model: string | null;
  endpoint: string;
  streamed: boolean;
  status: number;
  input_tokens: number;
  cached_input_tokens: number;
  output_tokens: number;
  reasoning_tokens: number;
  total_tokens: number;
  cost_nano_usd: number | null;
  /** `invalid`: the provider reported an impossible usage; the tokens are the estimate. */
  usage_source: 'reported' | 'estimated' | 'invalid' | 'none' | string;
  latency_ms: number;
  ttfb_ms: number | null;
  outcome: string;
}

export interface WindowView {
  window: 'day' | 'month' | string;
  start: number;
  reset_at: number;
  used_tokens: number;
  reserved_tokens: number;
  token_limit: number;
  remaining_tokens: number;
  used_cost_nano_usd: number;
  cost_limit_nano_usd: number | null;
  remaining_cost_nano_usd: number | null;
}

export interface QuotaView {
  day: WindowView;
  month: WindowView;
  in_flight: number;
}

export interface UserUsage {
  user: UserView;
  days: number;
  daily: DayPoint[];
  models: ModelUsage[];
  calls: CallRow[];
  next_cursor: number | null;
  quota: QuotaView;
  timezone: string;
}

export interface Stats {
  users_total: number;
  users_active_today: number;
  users_active_7d: number;
  users_blocked: number;
  today: UsageTotals;
  month: UsageTotals;
  by_model: ModelUsage[];
  by_provider: ProviderUsage[];
  estimated_share_today: number;
  estimated_share_month: number;
  day: string;
  month_start: string;
  timezone: string;
  generated_at: number;
}

export interface SeriesPoint {
  day: string;
  key: string;
  provider: string;
  totals: UsageTotals;
}

export interface Series {
  days: number;
  by: 'model' | 'provider';
  since: string;
  today: string;
  points: SeriesPoint[];
  timezone: string;
}

export interface AuditRow {
  id: number;
  ts: number;
  actor: string;
  action: string;
  target: string | null;
  before_json: string | null;
  after_json: string | null;
  detail: string | null;
}

export interface AuditPage {
  entries: AuditRow[];
  next_cursor: number | null;
}

/** What an `[[alerts]]` rule watches. */
export type AlertKind = 'user_limit' | 'spend' | 'upstream_errors' | 'refusals' | 'store_behind';

/** Where an alert's webhook deliveries stand: `none` when no webhook takes it. */
export type AlertDelivery = 'none' | 'pending' | 'delivered' | 'failed';

/** An alert fired by an `[[alerts]]` rule (src/admin/views.rs `AlertView`). */
export interface AlertRow {
  id: number;
  /** When it fired. */
  ts: number;
  /** The rule's name (its kind unless the rule names itself). */
  rule: string;
  kind: AlertKind | string;
  /** A user id (`user_limit`), `gateway` (`spend`), or the gateway's name (rates, the store). */
  subject: string;
  /** The day (`YYYY-MM-DD`), the month (`YYYY-MM`), or the minute an episode began. */
  period: string;
  /** The threshold passed, e.g. `day tokens 80%`. */
  level: string;
  message: string;
  /** The figures behind it. */
  details: Record<string, unknown>;
  delivery: AlertDelivery | string;
  /** Delivery attempts over every webhook (counted once the deliveries end). */
  attempts: number;
  /** When the last webhook took it. */
  delivered_at: number | null;
}

export interface AlertsPage {
  alerts: AlertRow[];
  next_cursor: number | null;
  /** Alerts fired in the last 24 hours. */
  last_24h: number;
}

export interface UserControls {
  blocked: boolean;
  blocked_reason: string | null;
  overrides: UserOverrides;
}

export interface ControlsChange {
  user: string;
  before: UserControls;
  after: UserControls;
  limits: LimitsView;
}

/** `PUT /api/admin/user/{id}/limits`: absent = unchanged, null = back to the default. */
export interface LimitsRequest {
  daily_tokens?: number | null;
  monthly_tokens?: number | null;
  daily_cost_usd?: number | null;
  monthly_cost_usd?: number | null;
  requests_per_minute?: number | null;
  max_concurrent?: number | null;
}

export interface Price {
  input: number;
  cached_input?: number;
  output: number;
  long_context_threshold?: number;
  long_input?: number;
  long_cached_input?: number;
  long_output?: number;
}

export interface LimitsConfig {
  daily_tokens: number;
  monthly_tokens: number;
  requests_per_minute: number;
  timezone: string;
  daily_cost_usd?: number;
  monthly_cost_usd?: number;
  max_concurrent?: number;
  default_max_output_tokens: number;
  media_part_tokens: number;
}

export interface ProviderConfig {
  name: string;
  kind: string;
  prefix: string;
  upstream: string;
  api_key_env: string;
  [key: string]: unknown;
}

/** An `[[alerts]]` rule as the configuration lists it (keys of other kinds absent). */
export interface AlertRuleConfig {
  name?: string;
  kind: AlertKind | string;
  webhooks?: string[];
  [key: string]: unknown;
}

export interface RawConfig {
  server?: Record<string, unknown>;
  admin?: Record<string, unknown>;
  auth?: Record<string, unknown>;
  limits?: LimitsConfig;
  store?: Record<string, unknown>;
  log?: Record<string, unknown>;
  providers?: ProviderConfig[];
  pricing?: Record<string, Price>;
  alerts?: AlertRuleConfig[];
  webhooks?: { name: string; format?: string; [key: string]: unknown }[];
  [section: string]: unknown;
}

export interface ConfigView {
  config: RawConfig;
  secrets: Record<string, boolean>;
  toml: string;
}
