import { useMemo, useState } from 'react';
import { useSeries, useStats, useUsers } from '../api/hooks';
import type { Stats } from '../api/types';
import { colorMap, OTHER, StackedDays, seriesRows } from '../components/charts';
import { Badge, Card, EmptyState, ErrorBanner, LoadingBlock, RelativeTime, Segmented, Skeleton } from '../components/ui';
import { displayName, formatInt, formatPercent, formatUsd } from '../lib/format';
import { Link, userPath } from '../lib/router';

type Range = 7 | 30 | 90;
const RANGES: { value: Range; label: string }[] = [
  { value: 7, label: '7 days' },
  { value: 30, label: '30 days' },
  { value: 90, label: '90 days' },
];

/** A card with today's figure large and this month's below it. */
function PeriodStat({
  label,
  today,
  month,
  format,
  id,
  loading,
}: {
  label: string;
  today: number | undefined;
  month: number | undefined;
  format: (n: number) => string;
  id: string;
  loading: boolean;
}) {
  return (
    <div className="stat">
      <div className="stat-label">{label}</div>
      <div className="stat-value">
        {loading || today === undefined ? (
          <Skeleton width="6ch" height="1.6rem" />
        ) : (
          <span data-testid={`${id}-today`} data-exact={today}>
            {format(today)}
          </span>
        )}
        <span className="stat-unit">today</span>
      </div>
      <div className="stat-sub">
        {loading || month === undefined ? (
          <Skeleton width="10ch" />
        ) : (
          <>
            <span data-testid={`${id}-month`} data-exact={month}>
              {format(month)}
            </span>{' '}
            this month
          </>
        )}
      </div>
    </div>
  );
}

function SingleStat({
  label,
  value,
  sub,
  id,
  loading,
  tone,
}: {
  label: string;
  value: number | undefined;
  sub?: React.ReactNode;
  id: string;
  loading: boolean;
  tone?: 'danger';
}) {
  return (
    <div className={`stat ${tone === 'danger' && value ? 'stat-danger' : ''}`}>
      <div className="stat-label">{label}</div>
      <div className="stat-value">
        {loading || value === undefined ? (
          <Skeleton width="4ch" height="1.6rem" />
        ) : (
          <span data-testid={id} data-exact={value}>
            {formatInt(value)}
          </span>
        )}
      </div>
      {sub !== undefined && <div className="stat-sub">{loading ? <Skeleton width="10ch" /> : sub}</div>}
    </div>
  );
}

function StatCards({ stats, loading }: { stats: Stats | undefined; loading: boolean }) {
  const s = stats;
  return (
    <div className="stats-grid" aria-label="Key figures" role="region">
      <SingleStat
        label="Users"
        id="users-total"
        value={s?.users_total}
        loading={loading}
        sub={s ? `${formatInt(s.users_active_7d)} active in 7 days` : undefined}
      />
      <SingleStat label="Active today" id="users-active-today" value={s?.users_active_today} loading={loading} sub="called at least once" />
      <SingleStat
        label="Blocked"
        id="users-blocked"
        value={s?.users_blocked}
        loading={loading}
        tone="danger"
        sub={s && s.users_blocked > 0 ? <Link to="/users">see users</Link> : 'none blocked'}
      />
      <div className="stat">
        <div className="stat-label">Estimated usage</div>
        <div className="stat-value">
          {loading || !s ? (
            <Skeleton width="4ch" height="1.6rem" />
          ) : (
            <span data-testid="estimated-today" data-exact={s.estimated_share_today}>
              {formatPercent(s.estimated_share_today)}
            </span>
          )}
          <span className="stat-unit">of calls today</span>
        </div>
        <div className="stat-sub" title="Calls that ended before the provider reported usage, or whose report was impossible: their tokens are estimated (~4 characters per token).">
          {loading || !s ? (
            <Skeleton width="10ch" />
          ) : (
            <>
              <span data-testid="estimated-month">{formatPercent(s.estimated_share_month)}</span> this month
            </>
          )}
        </div>
      </div>
      <PeriodStat label="Calls" id="calls" today={s?.today.calls} month={s?.month.calls} format={formatInt} loading={loading} />
      <PeriodStat label="Tokens" id="tokens" today={s?.today.total_tokens} month={s?.month.total_tokens} format={formatInt} loading={loading} />
      <PeriodStat label="Cost" id="cost" today={s?.today.cost_nano_usd} month={s?.month.cost_nano_usd} format={formatUsd} loading={loading} />
      <PeriodStat label="Errors" id="errors" today={s?.today.errors} month={s?.month.errors} format={formatInt} loading={loading} />
    </div>
  );
}

function UsageCharts() {
  const [range, setRange] = useState<Range>(30);
  const series = useSeries(range, 'model');
  const tokens = useMemo(
    () => (series.data ? seriesRows(series.data.points, series.data.since, series.data.today, 'tokens') : null),
    [series.data],
  );
  const cost = useMemo(
    () => (series.data ? seriesRows(series.data.points, series.data.since, series.data.today, 'cost') : null),
    [series.data],
  );
  // A model keeps its colour in both charts: ordered by tokens, then the models only the cost
  // chart shows.
  const colors = useMemo(() => {
    const keys = [...(tokens?.keys ?? []).filter((k) => k !== OTHER), ...(cost?.keys ?? []).filter((k) => k !== OTHER)];
    return colorMap([...new Set(keys)]);
  }, [tokens, cost]);
  const empty = series.data && series.data.points.length === 0;
  return (
    <Card
      title="Usage per day by model"
      id="charts"
      className="span-2"
      actions={<Segmented label="Period" value={range} options={RANGES} onChange={setRange} />}
    >
      {series.isError ? (
        <ErrorBanner error={series.error} title="Could not load the usage series" onRetry={() => void series.refetch()} />
      ) : !series.data ? (
        <LoadingBlock label="Loading the charts…" />
      ) : empty ? (
        <EmptyState title={`No calls in the last ${range} days`}>Usage appears here once users call through Tollgate.</EmptyState>
      ) : (
        <div className="charts-pair">
          <div>
            <h3 className="chart-title">Tokens</h3>
            <StackedDays data={tokens!} colors={colors} metric="tokens" label={`Tokens per day by model over the last ${range} days`} />
          </div>
          <div>
            <h3 className="chart-title">Cost</h3>
            <StackedDays data={cost!} colors={colors} metric="cost" label={`Cost per day by model over the last ${range} days`} />
          </div>
        </div>
      )}
    </Card>
  );
}

function TopUsers({ timeZone }: { timeZone: string }) {
  const [sort, setSort] = useState<'cost_month' | 'tokens_month' | 'tokens_today'>('cost_month');
  const users = useUsers({ sort, order: 'desc', limit: 8 });
  const options = [
    { value: 'cost_month' as const, label: 'Cost' },
    { value: 'tokens_month' as const, label: 'Tokens' },
    { value: 'tokens_today' as const, label: 'Today' },
  ];
  const rows = users.data?.users.filter((u) => u.month.calls > 0 || sort === 'tokens_today') ?? [];
  return (
    <Card
      title="Top users this month"
      id="top-users"
      actions={<Segmented label="Rank top users by" value={sort} options={options} onChange={setSort} />}
    >
      {users.isError ? (
        <ErrorBanner error={users.error} onRetry={() => void users.refetch()} />
      ) : !users.data ? (
        <LoadingBlock rows={5} />
      ) : rows.length === 0 || rows.every((u) => u.month.calls === 0) ? (
        <EmptyState title="No usage yet">Users show up after their first call.</EmptyState>
      ) : (
        <ol className="toplist">
          {rows.map((u) => (
            <li key={u.id}>
              <Link to={userPath(u.id)} className="toplist-name">
                <span className="truncate">{displayName(u)}</span>
                {u.blocked && <Badge tone="danger">Blocked</Badge>}
              </Link>
              <span className="toplist-figures">
                <span>{formatUsd(u.month.cost_nano_usd)}</span>
                <span className="muted">{formatInt(u.month.total_tokens)} tok</span>
                <span className="muted small">
                  <RelativeTime ts={u.last_seen_at} timeZone={timeZone} />
                </span>
              </span>
            </li>
          ))}
        </ol>
      )}
      <div className="card-foot">
        <Link to="/users">All users →</Link>
      </div>
    </Card>
  );
}

function ByModel({ stats }: { stats: Stats }) {
  if (stats.by_model.length === 0) {
    return (
      <Card title="Models this month" id="models">
        <EmptyState title="No calls this month" />
      </Card>
    );
  }
  return (
    <Card title="Models this month" id="models">
      <div className="table-wrap">
        <table className="table">
          <caption className="visually-hidden">Usage by model this month</caption>
          <thead>
            <tr>
              <th scope="col">Model</th>
              <th scope="col" className="num">Calls</th>
              <th scope="col" className="num">Tokens</th>
              <th scope="col" className="num">Cost</th>
              <th scope="col" className="num">Estimated</th>
            </tr>
          </thead>
          <tbody>
            {stats.by_model.map((m) => (
              <tr key={`${m.provider}/${m.model ?? ''}`}>
                <td>
                  <span className="mono nowrap">{m.model ?? '(none)'}</span> <span className="muted small">{m.provider}</span>
                </td>
                <td className="num">{formatInt(m.totals.calls)}</td>
                <td className="num">{formatInt(m.totals.total_tokens)}</td>
                <td className="num">
                  {formatUsd(m.totals.cost_nano_usd)}
                  {m.totals.unpriced_calls > 0 && (
                    <Badge tone="warn" title="Calls of a model without a price are not in the cost">
                      {formatInt(m.totals.unpriced_calls)} unpriced
                    </Badge>
                  )}
                </td>
                <td className="num">{formatPercent(m.totals.calls ? m.totals.estimated_calls / m.totals.calls : 0)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Card>
  );
}

export default function Overview() {
  const stats = useStats();
  const tz = stats.data?.timezone ?? 'UTC';
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Overview</h1>
          <p className="muted">
            {stats.data ? (
              <>
                Today is <strong>{stats.data.day}</strong> in <strong>{tz}</strong>; this month started {stats.data.month_start}.
              </>
            ) : (
              'Who uses how much, and what it costs.'
            )}
          </p>
        </div>
      </div>
      {stats.isError && <ErrorBanner error={stats.error} title="Could not load the statistics" onRetry={() => void stats.refetch()} />}
      <StatCards stats={stats.data} loading={stats.isPending} />
      <div className="grid-2">
        <UsageCharts />
        <TopUsers timeZone={tz} />
        {stats.data && <ByModel stats={stats.data} />}
      </div>
    </div>
  );
}
