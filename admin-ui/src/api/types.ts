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

/** The limits in force: `[limits]`, the user's plan on top, the user's overrides on top of both. */
export interface LimitsView {
  daily_tokens: number;
  monthly_tokens: number;
  daily_cost_nano_usd: number | null;
  monthly_cost_nano_usd: number | null;
  requests_per_minute: number;
  max_concurrent: number | null;
}

/** Where a limit in force comes from: override > plan > `[limits]`. */
export type LimitSource = 'override' | 'plan' | 'limits';

/** For each limit of a `LimitsView`, where its value comes from. */
export interface LimitSources {
  daily_tokens: LimitSource;
  monthly_tokens: LimitSource;
  daily_cost_nano_usd: LimitSource;
  monthly_cost_nano_usd: LimitSource;
  requests_per_minute: LimitSource;
  max_concurrent: LimitSource;
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
  /** The plan the user is on (their latest call's, or `limits.default_plan`); null: no plan. */
  plan: string | null;
  limits: LimitsView;
  limit_sources: LimitSources;
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
  /** The limits in force from the user's next call on. */
  limits: LimitsView;
  limit_sources: LimitSources;
}

/** One `[plans.NAME]` as it applies now (`GET /api/admin/plans`). */
export interface PlanView {
  name: string;
  /** Whether this is `limits.default_plan`. */
  default: boolean;
  /** The plan's limits: its own, `[limits]`'s for those it leaves out. */
  limits: LimitsView;
  /** `plan` or `limits` for each of `limits`. */
  limit_sources: LimitSources;
  /** Output tokens a call's reservation assumes when it sets no cap. */
  default_max_output_tokens: number;
  /** Allowed model patterns (globs); null: every model not denied. */
  models: string[] | null;
  /** Refused model patterns (globs). */
  deny_models: string[];
  /** The most output tokens one call may ask for; null: no ceiling. */
  max_output_tokens: number | null;
  /** A request asking for more is lowered to the ceiling rather than refused. */
  clamp_max_output_tokens: boolean;
}

export interface PlansView {
  /** The JWT claim that names a user's plan (`auth.plan_claim`). */
  plan_claim: string;
  /** The plan of a token without the claim (`limits.default_plan`); null: such a token is on no plan. */
  default_plan: string | null;
  /** `[limits]`: what a user on no plan gets, and what each plan inherits. */
  limits: LimitsView;
  plans: PlanView[];
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
  default_plan?: string;
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
  plans?: Record<string, Record<string, unknown>>;
  webhooks?: { name: string; format?: string; [key: string]: unknown }[];
  [section: string]: unknown;
}

export interface ConfigView {
  config: RawConfig;
  secrets: Record<string, boolean>;
  toml: string;
}
