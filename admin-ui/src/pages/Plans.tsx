// The plans in force (GET /api/admin/plans): the JWT claim that names a user's plan, the default
// plan, `[limits]`, and per `[plans.NAME]` its limits (its own, or inherited from `[limits]`),
// the models it allows and denies, and its output ceiling. Read-only: plans change in
// gateway.toml.

import { usePlans } from '../api/hooks';
import type { PlanView, PlansView } from '../api/types';
import { baselineFor, LimitsTable } from '../components/Limits';
import { Badge, Card, EmptyState, ErrorBanner, LoadingBlock, Spinner } from '../components/ui';
import { formatInt } from '../lib/format';
import { Link } from '../lib/router';

const EXAMPLE = `[auth]
plan_claim = "plan"             # the JWT claim that names the plan (the default)

[limits]
daily_tokens = 100000           # what a plan leaves out comes from here
default_plan = "free"           # a token without the claim is on "free"

[plans.free]
daily_tokens = 20000
models = ["gpt-4o-mini*", "gemini-2.5-flash*"]
max_output_tokens = 1024

[plans.pro]
daily_tokens = 1000000
deny_models = ["o1-pro*"]`;

function Patterns({ patterns, empty }: { patterns: string[]; empty: string }) {
  if (patterns.length === 0) return <span className="muted">{empty}</span>;
  return (
    <ul className="patterns">
      {patterns.map((p) => (
        <li key={p}>
          <code>{p}</code>
        </li>
      ))}
    </ul>
  );
}

function PlanCard({ plan }: { plan: PlanView }) {
  const own = Object.values(plan.limit_sources).filter((s) => s === 'plan').length;
  return (
    <Card
      id={`plan-${plan.name}`}
      className="plan-card"
      title={
        <>
          <span className="mono">{plan.name}</span> {plan.default && <Badge tone="plan" title="limits.default_plan: tokens without the claim are on this plan">default</Badge>}
        </>
      }
      actions={
        <Link to={`/users?plan=${encodeURIComponent(plan.name)}`} className="btn btn-small">
          Users on {plan.name}
        </Link>
      }
    >
      <h3 className="subhead">Limits</h3>
      <p className="small muted">
        {own === 0 ? 'Sets no limit of its own: ' : `Sets ${own} of the ${Object.keys(plan.limit_sources).length} limits; `}the others are{' '}
        <code>[limits]</code>’s. A user’s override wins over both.
      </p>
      <LimitsTable limits={plan.limits} sources={plan.limit_sources} plan={plan.name} caption={`Limits of plan ${plan.name} and where each comes from`} />

      <h3 className="subhead">Models</h3>
      <dl className="kv" data-testid={`plan-models-${plan.name}`}>
        <div>
          <dt>Allowed</dt>
          <dd>{plan.models === null ? <span className="muted">every model not denied</span> : <Patterns patterns={plan.models} empty="none" />}</dd>
        </div>
        <div>
          <dt>Denied</dt>
          <dd>
            <Patterns patterns={plan.deny_models} empty="none" />
          </dd>
        </div>
      </dl>

      <h3 className="subhead">Output</h3>
      <dl className="kv" data-testid={`plan-output-${plan.name}`}>
        <div>
          <dt>Ceiling per call</dt>
          <dd>{plan.max_output_tokens === null ? <span className="muted">no ceiling</span> : `${formatInt(plan.max_output_tokens)} tokens`}</dd>
        </div>
        {plan.max_output_tokens !== null && (
          <div>
            <dt>Asking for more</dt>
            <dd>
              {plan.clamp_max_output_tokens ? (
                <Badge tone="info" title="clamp_max_output_tokens = true">lowered to the ceiling</Badge>
              ) : (
                <Badge tone="warn" title="clamp_max_output_tokens = false">refused (403)</Badge>
              )}
            </dd>
          </div>
        )}
        <div>
          <dt>Reserved for a call without a cap</dt>
          <dd>{formatInt(plan.default_max_output_tokens)} tokens</dd>
        </div>
      </dl>
    </Card>
  );
}

function Choice({ data }: { data: PlansView }) {
  const noPlan = baselineFor(data, null)!;
  return (
    <div className="plans-grid">
      <Card title="How a call’s plan is chosen" id="plan-choice">
        <dl className="kv">
          <div>
            <dt>JWT claim</dt>
            <dd>
              <code data-testid="plan-claim">{data.plan_claim}</code>
            </dd>
          </div>
          <div>
            <dt>Default plan</dt>
            <dd data-testid="default-plan">
              {data.default_plan ?? <span className="muted">none: a token without the claim is on no plan</span>}
            </dd>
          </div>
        </dl>
        <p className="small muted">
          A call is on the plan its token’s <code>{data.plan_claim}</code> claim names, else on{' '}
          {data.default_plan ? (
            <>
              the default plan (<code>limits.default_plan</code>)
            </>
          ) : (
            <>no plan</>
          )}
          . A user is shown on the plan of their latest call. Limits: an operator’s override for a user, else the plan’s, else{' '}
          <code>[limits]</code>.
        </p>
      </Card>
      <Card title="[limits]: no plan, and what plans inherit" id="plan-none">
        <LimitsTable limits={noPlan.limits} sources={noPlan.sources} plan={null} caption="The limits of [limits]" />
      </Card>
    </div>
  );
}

export default function Plans() {
  const plans = usePlans();
  const data = plans.data;
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Plans</h1>
          <p className="muted">
            Tiers of users from <code>[plans.NAME]</code> in gateway.toml: their limits, the models they may call and the output they may
            ask for. Read-only: change gateway.toml and the gateway reloads it.
          </p>
        </div>
        {plans.isFetching && !plans.isPending && <Spinner label="Refreshing…" />}
      </div>
      {plans.isError && !data ? (
        <ErrorBanner error={plans.error} title="Could not load the plans" onRetry={() => void plans.refetch()} />
      ) : !data ? (
        <LoadingBlock label="Loading the plans…" rows={6} />
      ) : (
        <>
          {plans.isError && <ErrorBanner error={plans.error} title="Could not refresh" onRetry={() => void plans.refetch()} />}
          <Choice data={data} />
          {data.plans.length === 0 ? (
            <Card>
              <EmptyState title="No plans are configured">
                <p>
                  Every user gets <code>[limits]</code> and their own overrides. A plan gives the users whose token names it (a JWT claim)
                  their own limits, allowed and denied models and an output ceiling:
                </p>
                <pre className="code empty-example">{EXAMPLE}</pre>
              </EmptyState>
            </Card>
          ) : (
            <div className="plans-grid">
              {data.plans.map((p) => (
                <PlanCard key={p.name} plan={p} />
              ))}
            </div>
          )}
        </>
      )}
    </div>
  );
}
