// The per-user limits and where each one comes from: an operator's override, the user's plan
// (`[plans.NAME]`) or `[limits]` — override > plan > [limits]. Used by a user's page and the
// plans page.

import type { ReactNode } from 'react';
import type { LimitSource, LimitSources, LimitsView, PlansView } from '../api/types';
import { formatInt, formatUsd } from '../lib/format';
import { Badge } from './ui';

export type LimitKey = keyof LimitsView;

export interface LimitRow {
  key: LimitKey;
  label: string;
  /** The value as people read it ("no budget" for a cost limit that is not set). */
  format: (v: number | null) => string;
}

const tokens = (v: number | null) => (v === null ? '—' : formatInt(v));
const budget = (v: number | null) => (v === null ? 'no budget' : formatUsd(v));

export const LIMIT_ROWS: LimitRow[] = [
  { key: 'daily_tokens', label: 'Tokens per day', format: tokens },
  { key: 'monthly_tokens', label: 'Tokens per month', format: tokens },
  { key: 'daily_cost_nano_usd', label: 'Cost per day', format: budget },
  { key: 'monthly_cost_nano_usd', label: 'Cost per month', format: budget },
  { key: 'requests_per_minute', label: 'Requests per minute', format: tokens },
  { key: 'max_concurrent', label: 'Calls at once', format: (v) => (v === null ? 'no cap' : formatInt(v)) },
];

/** Where a limit comes from, in words: "override", "plan pro", "[limits]". */
export function sourceText(source: LimitSource, plan: string | null): string {
  if (source === 'override') return 'override';
  if (source === 'plan') return plan ? `plan ${plan}` : 'plan';
  return '[limits]';
}

export function LimitSourceBadge({ source, plan }: { source: LimitSource; plan: string | null }) {
  if (source === 'override')
    return (
      <Badge tone="info" title="Set for this user by an operator: wins over their plan and [limits]">
        override
      </Badge>
    );
  if (source === 'plan')
    return (
      <Badge tone="plan" title={plan ? `From [plans.${plan}] in gateway.toml` : 'From the plan in gateway.toml'}>
        {sourceText(source, plan)}
      </Badge>
    );
  return <Badge title="The default: [limits] in gateway.toml">[limits]</Badge>;
}

/** Each limit's value in force and its source, one row per limit. */
export function LimitsTable({
  limits,
  sources,
  plan,
  caption,
  notes,
}: {
  limits: LimitsView;
  sources: LimitSources;
  /** The plan a `plan` source names. */
  plan: string | null;
  caption: string;
  /** Words under a value (the calls in flight under "Calls at once"). */
  notes?: Partial<Record<LimitKey, ReactNode>>;
}) {
  return (
    <div className="table-wrap">
      <table className="table table-limits">
        <caption className="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            <th scope="col">Limit</th>
            <th scope="col" className="num">
              In force
            </th>
            <th scope="col">From</th>
          </tr>
        </thead>
        <tbody>
          {LIMIT_ROWS.map((r) => (
            <tr key={r.key} data-limit={r.key} data-source={sources[r.key]}>
              <th scope="row">{r.label}</th>
              <td className="num">
                <span className="limit-value nowrap">{r.format(limits[r.key])}</span>
                {notes?.[r.key] && <div className="muted small">{notes[r.key]}</div>}
              </td>
              <td>
                <LimitSourceBadge source={sources[r.key]} plan={plan} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** What a user's limits are without their own overrides: their plan's (with [limits] for what the
 * plan leaves out), or [limits] on no plan. */
export interface LimitsBaseline {
  limits: LimitsView;
  sources: LimitSources;
  plan: string | null;
}

const ALL_LIMITS: LimitSources = {
  daily_tokens: 'limits',
  monthly_tokens: 'limits',
  daily_cost_nano_usd: 'limits',
  monthly_cost_nano_usd: 'limits',
  requests_per_minute: 'limits',
  max_concurrent: 'limits',
};

/** The baseline of a user on `plan` (null: no plan), from the plans in force. A plan no longer
 * configured has none (undefined). */
export function baselineFor(plans: PlansView | undefined, plan: string | null): LimitsBaseline | undefined {
  if (!plans) return undefined;
  if (plan === null) return { limits: plans.limits, sources: ALL_LIMITS, plan: null };
  const p = plans.plans.find((x) => x.name === plan);
  return p ? { limits: p.limits, sources: p.limit_sources, plan: p.name } : undefined;
}

/** A user's plan, as a badge: "plan pro" (or "pro" where the column says it), or "no plan". */
export function PlanBadge({ plan, named = true }: { plan: string | null; named?: boolean }) {
  return plan ? (
    <Badge tone="plan" title="The plan of their latest call: their token's plan claim, or the default plan">
      {named ? `plan ${plan}` : plan}
    </Badge>
  ) : (
    <Badge title="Their latest call was on no plan: [limits] and their overrides apply">no plan</Badge>
  );
}
