import { useMemo, useState } from 'react';
import { ApiError, csvUrl } from '../api/client';
import { useAudit, useUserUsage } from '../api/hooks';
import type { CallRow, QuotaView, UserUsage, UserView, WindowView } from '../api/types';
import { AuditTable } from '../components/AuditTable';
import { StackedDays, dailyRows, type Metric } from '../components/charts';
import { Icon } from '../components/Icon';
import { LimitsTable, PlanBadge } from '../components/Limits';
import { UserDialogs, type UserDialog } from '../components/UserActions';
import { Badge, Card, EmptyState, ErrorBanner, LoadingBlock, RelativeTime, Segmented, Spinner, UsageBar, useNow } from '../components/ui';
import { dayIn, formatDateTime, formatDuration, formatInt, formatPercent, formatShortTime, formatUsd } from '../lib/format';
import { Link } from '../lib/router';

type Range = 7 | 30 | 90;

function WindowCard({ w, timeZone, title }: { w: WindowView; timeZone: string; title: string }) {
  const used = w.used_tokens + w.reserved_tokens;
  return (
    <div className="quota-window" data-testid={`quota-${w.window}`}>
      <h3>{title}</h3>
      <UsageBar
        used={used}
        limit={w.token_limit}
        label={`${title}: tokens`}
        text={
          <>
            <strong>{formatInt(used)}</strong> <span className="muted">of {formatInt(w.token_limit)} tokens</span>
            {w.reserved_tokens > 0 && <span className="muted small"> ({formatInt(w.reserved_tokens)} reserved in flight)</span>}
          </>
        }
      />
      <UsageBar
        used={w.used_cost_nano_usd}
        limit={w.cost_limit_nano_usd}
        label={`${title}: cost`}
        text={
          <>
            <strong>{formatUsd(w.used_cost_nano_usd)}</strong>{' '}
            <span className="muted">{w.cost_limit_nano_usd !== null ? `of ${formatUsd(w.cost_limit_nano_usd)}` : '(no cost budget)'}</span>
          </>
        }
      />
      <p className="small muted">
        Resets <RelativeTime ts={w.reset_at} timeZone={timeZone} /> ({formatDateTime(w.reset_at, timeZone)} {timeZone})
      </p>
    </div>
  );
}

function Quota({ quota, user, timeZone }: { quota: QuotaView; user: UserView; timeZone: string }) {
  return (
    <Card title="Limits and quota" id="quota">
      <div className="quota">
        <WindowCard w={quota.day} timeZone={timeZone} title="Today" />
        <WindowCard w={quota.month} timeZone={timeZone} title="This month" />
      </div>
      <h3 className="subhead" id="limits-in-force">
        Limits in force
      </h3>
      <p className="small muted">
        Each limit comes from an operator’s override for this user, else {user.plan ? <>their plan (<code>[plans.{user.plan}]</code>)</> : 'their plan'}, else{' '}
        <code>[limits]</code> in gateway.toml.
      </p>
      <LimitsTable
        limits={user.limits}
        sources={user.limit_sources}
        plan={user.plan}
        caption={`Limits in force for ${user.id} and where each comes from`}
        notes={{ max_concurrent: `${formatInt(quota.in_flight)} in flight now` }}
      />
    </Card>
  );
}

function sourceBadge(source: string) {
  if (source === 'reported') return <Badge tone="ok">reported</Badge>;
  if (source === 'estimated')
    return (
      <Badge tone="warn" title="The call ended before the provider reported usage: estimated">
        estimated
      </Badge>
    );
  if (source === 'invalid')
    return (
      <Badge tone="danger" title="The provider reported an impossible usage (over a billion tokens): estimated instead">
        invalid
      </Badge>
    );
  return <Badge>{source}</Badge>;
}

function statusBadge(status: number) {
  const tone = status >= 500 ? 'danger' : status >= 400 ? 'warn' : 'ok';
  return <Badge tone={tone}>{status}</Badge>;
}

function CallsTable({ calls, timeZone }: { calls: CallRow[]; timeZone: string }) {
  const now = useNow();
  return (
    <div className="table-wrap">
      <table className="table table-calls">
        <caption className="visually-hidden">Recent calls, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Status</th>
            <th scope="col">Model</th>
            <th scope="col" className="num">In</th>
            <th scope="col" className="num">Out</th>
            <th scope="col" className="num">Total</th>
            <th scope="col" className="num">Cost</th>
            <th scope="col" className="num">Latency</th>
            <th scope="col">Usage</th>
            <th scope="col">Outcome</th>
          </tr>
        </thead>
        <tbody>
          {calls.map((c) => (
            <tr key={c.id} data-call={c.id}>
              <td className="nowrap" title={`${formatDateTime(c.ts, timeZone)} ${timeZone} · request ${c.request_id}`}>
                {formatShortTime(c.ts, timeZone, now)}
              </td>
              <td>{statusBadge(c.status)}</td>
              <td className="nowrap">
                <span className="mono">{c.model ?? '—'}</span>
                <span className="muted small">
                  {' '}
                  {c.provider} · {c.endpoint}
                  {c.streamed ? ' · stream' : ''}
                </span>
              </td>
              <td className="num" title={c.cached_input_tokens ? `${formatInt(c.cached_input_tokens)} cached` : undefined}>
                {formatInt(c.input_tokens)}
              </td>
              <td className="num" title={c.reasoning_tokens ? `${formatInt(c.reasoning_tokens)} reasoning` : undefined}>
                {formatInt(c.output_tokens)}
              </td>
              <td className="num">{formatInt(c.total_tokens)}</td>
              <td className="num">{c.cost_nano_usd === null ? <span className="muted" title="No price for this model">—</span> : formatUsd(c.cost_nano_usd)}</td>
              <td className="num nowrap" title={c.ttfb_ms !== null ? `first byte after ${formatDuration(c.ttfb_ms)}` : undefined}>
                {formatDuration(c.latency_ms)}
              </td>
              <td>{sourceBadge(c.usage_source)}</td>
              <td className="small">{c.outcome}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function ModelsTable({ data }: { data: UserUsage }) {
  if (data.models.length === 0) return <EmptyState title={`No calls in the last ${data.days} days`} />;
  return (
    <div className="table-wrap">
      <table className="table">
        <caption className="visually-hidden">Usage by model over the last {data.days} days</caption>
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col" className="num">Calls</th>
            <th scope="col" className="num">Input</th>
            <th scope="col" className="num">Output</th>
            <th scope="col" className="num">Cost</th>
            <th scope="col" className="num">Estimated</th>
            <th scope="col" className="num">Mean latency</th>
          </tr>
        </thead>
        <tbody>
          {data.models.map((m) => (
            <tr key={`${m.provider}/${m.model ?? ''}`}>
              <td>
                <span className="mono nowrap">{m.model ?? '(none)'}</span> <span className="muted small">{m.provider}</span>
              </td>
              <td className="num">{formatInt(m.totals.calls)}</td>
              <td className="num">{formatInt(m.totals.input_tokens)}</td>
              <td className="num">{formatInt(m.totals.output_tokens)}</td>
              <td className="num">{formatUsd(m.totals.cost_nano_usd)}</td>
              <td className="num">{formatPercent(m.totals.calls ? m.totals.estimated_calls / m.totals.calls : 0)}</td>
              <td className="num">{formatDuration(m.totals.calls ? m.totals.latency_ms_sum / m.totals.calls : null)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function UserAudit({ id, timeZone }: { id: string; timeZone: string }) {
  const audit = useAudit(id, 20);
  const entries = audit.data?.pages.flatMap((p) => p.entries) ?? [];
  return (
    <Card title="Audit entries about this user" id="user-audit">
      {audit.isError ? (
        <ErrorBanner error={audit.error} onRetry={() => void audit.refetch()} />
      ) : audit.isPending ? (
        <LoadingBlock rows={3} />
      ) : entries.length === 0 ? (
        <EmptyState title="No admin action about this user yet" />
      ) : (
        <>
          <AuditTable entries={entries} timeZone={timeZone} showTarget={false} />
          {audit.hasNextPage && (
            <div className="card-foot">
              <button type="button" className="btn btn-small" onClick={() => void audit.fetchNextPage()} disabled={audit.isFetchingNextPage}>
                {audit.isFetchingNextPage ? 'Loading…' : 'Older entries'}
              </button>
            </div>
          )}
        </>
      )}
    </Card>
  );
}

export default function UserDetail({ id }: { id: string }) {
  const [range, setRange] = useState<Range>(30);
  const [metric, setMetric] = useState<Metric>('tokens');
  const [dialog, setDialog] = useState<UserDialog>(null);
  const usage = useUserUsage(id, range);
  const first = usage.data?.pages[0];
  const calls = useMemo(() => usage.data?.pages.flatMap((p) => p.calls) ?? [], [usage.data]);
  const timeZone = first?.timezone ?? 'UTC';
  const chart = useMemo(() => (first ? dailyRows(first.daily, metric) : null), [first, metric]);

  if (usage.isError && !first) {
    const notFound = usage.error instanceof ApiError && usage.error.status === 404;
    return (
      <div className="page">
        <Link to="/users" className="back-link">
          <Icon name="back" size={14} /> Users
        </Link>
        <h1 className="break">{id}</h1>
        {notFound ? (
          <EmptyState title="No such user">Tollgate has no record of “{id}”: users appear after their first call.</EmptyState>
        ) : (
          <ErrorBanner error={usage.error} title="Could not load this user" onRetry={() => void usage.refetch()} />
        )}
      </div>
    );
  }
  if (!first) {
    return (
      <div className="page">
        <Link to="/users" className="back-link">
          <Icon name="back" size={14} /> Users
        </Link>
        <h1 className="break">{id}</h1>
        <LoadingBlock label="Loading this user…" rows={6} />
      </div>
    );
  }

  const u = first.user;
  const monthStart = dayIn(first.quota.month.start, timeZone);
  const today = dayIn(Date.now(), timeZone);

  return (
    <div className="page">
      <Link to="/users" className="back-link">
        <Icon name="back" size={14} /> Users
      </Link>
      <div className="page-head">
        <div className="min0">
          <h1 className="break">
            {u.id}{' '}
            <span data-testid="user-plan">
              <PlanBadge plan={u.plan} />
            </span>{' '}
            {u.blocked && <Badge tone="danger">Blocked</Badge>}
          </h1>
          <p className="muted break">
            {[u.name, u.email].filter(Boolean).join(' · ') || 'No name or email in their tokens'} · first seen{' '}
            <RelativeTime ts={u.created_at} timeZone={timeZone} /> · last seen <RelativeTime ts={u.last_seen_at} timeZone={timeZone} />
          </p>
        </div>
        <div className="page-actions">
          {u.blocked ? (
            <button type="button" className="btn" onClick={() => setDialog({ kind: 'unblock', user: u })}>
              <Icon name="check" size={16} /> Unblock
            </button>
          ) : (
            <button type="button" className="btn btn-danger-ghost" onClick={() => setDialog({ kind: 'block', user: u })}>
              <Icon name="ban" size={16} /> Block
            </button>
          )}
          <button type="button" className="btn" onClick={() => setDialog({ kind: 'limits', user: u })}>
            <Icon name="edit" size={16} /> Edit limits
          </button>
          <a className="btn" href={csvUrl(monthStart, today, u.id)} download>
            <Icon name="download" size={16} /> CSV this month
          </a>
        </div>
      </div>

      {u.blocked && (
        <div className="banner banner-error" role="status">
          <Icon name="ban" />
          <div className="banner-text">
            <strong>Blocked: every call of this user is refused with 403.</strong>
            <span>{u.blocked_reason ? `Reason: ${u.blocked_reason}` : 'No reason was given.'}</span>
          </div>
        </div>
      )}
      {usage.isError && <ErrorBanner error={usage.error} title="Could not refresh" onRetry={() => void usage.refetch()} />}

      <Quota quota={first.quota} user={u} timeZone={timeZone} />

      <Card
        title="Usage per day"
        id="user-chart"
        actions={
          <>
            <Segmented
              label="Show"
              value={metric}
              options={[
                { value: 'tokens', label: 'Tokens' },
                { value: 'cost', label: 'Cost' },
                { value: 'calls', label: 'Calls' },
              ]}
              onChange={setMetric}
            />
            <Segmented
              label="Period"
              value={range}
              options={[
                { value: 7 as Range, label: '7 d' },
                { value: 30 as Range, label: '30 d' },
                { value: 90 as Range, label: '90 d' },
              ]}
              onChange={setRange}
            />
          </>
        }
      >
        {first.daily.every((d) => d.totals.calls === 0) ? (
          <EmptyState title={`No calls in the last ${range} days`} />
        ) : (
          <StackedDays data={chart!} metric={metric} label={`${metric} per day of ${u.id} over the last ${range} days`} height={220} />
        )}
      </Card>

      <Card title={`Models, last ${first.days} days`} id="user-models">
        <ModelsTable data={first} />
      </Card>

      <Card title="Recent calls" id="user-calls" actions={usage.isFetching ? <Spinner label="Refreshing…" /> : undefined}>
        {calls.length === 0 ? (
          <EmptyState title="No calls yet" />
        ) : (
          <>
            <CallsTable calls={calls} timeZone={timeZone} />
            {usage.hasNextPage && (
              <div className="card-foot">
                <button type="button" className="btn btn-small" onClick={() => void usage.fetchNextPage()} disabled={usage.isFetchingNextPage}>
                  {usage.isFetchingNextPage ? 'Loading…' : 'Older calls'}
                </button>
              </div>
            )}
          </>
        )}
      </Card>

      <UserAudit id={id} timeZone={timeZone} />

      <UserDialogs dialog={dialog} onClose={() => setDialog(null)} />
    </div>
  );
}
