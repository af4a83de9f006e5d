import { useEffect, useId, useState } from 'react';
import { usePlans, useUsers } from '../api/hooks';
import type { Order, UserSort, UserView } from '../api/types';
import { Icon } from '../components/Icon';
import { PlanBadge } from '../components/Limits';
import { UserDialogs, type UserDialog } from '../components/UserActions';
import { Badge, EmptyState, ErrorBanner, LoadingBlock, RelativeTime, Spinner, UsageBar } from '../components/ui';
import { formatCompact, formatInt, formatUsd } from '../lib/format';
import { Link, useRouter, useSearchParams, userPath } from '../lib/router';

const SORTS: { value: UserSort; label: string }[] = [
  { value: 'tokens_month', label: 'Tokens this month' },
  { value: 'tokens_today', label: 'Tokens today' },
  { value: 'cost_month', label: 'Cost this month' },
  { value: 'cost_today', label: 'Cost today' },
  { value: 'last_seen', label: 'Last seen' },
  { value: 'created', label: 'First seen' },
  { value: 'id', label: 'User id' },
];
const PAGE_SIZES = [25, 50, 100];

function isSort(v: string | null): v is UserSort {
  return SORTS.some((s) => s.value === v);
}

/** The list's state lives in the address (shareable, survives a reload, back button works). */
function useListState() {
  const params = useSearchParams();
  const { location, navigate } = useRouter();
  const sortParam = params.get('sort');
  const state = {
    search: params.get('q') ?? '',
    plan: params.get('plan') ?? '',
    sort: isSort(sortParam) ? sortParam : ('tokens_month' as UserSort),
    order: (params.get('order') === 'asc' ? 'asc' : 'desc') as Order,
    page: Math.max(1, Number(params.get('page')) || 1),
    size: PAGE_SIZES.includes(Number(params.get('size'))) ? Number(params.get('size')) : 25,
  };
  const update = (patch: Partial<typeof state>) => {
    const next = { ...state, ...patch };
    const q = new URLSearchParams();
    if (next.search) q.set('q', next.search);
    if (next.plan) q.set('plan', next.plan);
    if (next.sort !== 'tokens_month') q.set('sort', next.sort);
    if (next.order !== 'desc') q.set('order', next.order);
    if (next.page > 1) q.set('page', String(next.page));
    if (next.size !== 25) q.set('size', String(next.size));
    const s = q.toString();
    navigate(`${location.pathname}${s ? `?${s}` : ''}`, { replace: true });
  };
  return [state, update] as const;
}

function SortHeader({
  label,
  sort,
  current,
  order,
  onSort,
  className,
}: {
  label: string;
  sort: UserSort;
  current: UserSort;
  order: Order;
  onSort: (s: UserSort, o: Order) => void;
  className?: string;
}) {
  const active = sort === current;
  return (
    <th scope="col" className={className} aria-sort={active ? (order === 'asc' ? 'ascending' : 'descending') : 'none'}>
      <button
        type="button"
        className={`th-sort ${active ? 'active' : ''}`}
        onClick={() => onSort(sort, active ? (order === 'desc' ? 'asc' : 'desc') : sort === 'id' ? 'asc' : 'desc')}
      >
        {label}
        <Icon name={active ? (order === 'asc' ? 'arrowUp' : 'arrowDown') : 'sort'} size={12} />
      </button>
    </th>
  );
}

function UserRow({ u, timeZone, onAction }: { u: UserView; timeZone: string; onAction: (d: UserDialog) => void }) {
  const hasOverrides = Object.values(u.overrides).some((v) => v !== null);
  return (
    <tr className={u.blocked ? 'row-blocked' : ''} data-user={u.id}>
      <td data-label="User" className="cell-user">
        <Link to={userPath(u.id)} className="user-link">
          <span className="user-id">{u.id}</span>
          {(u.name || u.email) && <span className="user-sub">{[u.name, u.email].filter(Boolean).join(' · ')}</span>}
        </Link>
        <span className="badges">
          {u.blocked && (
            <Badge tone="danger" title={u.blocked_reason ?? undefined}>
              Blocked
            </Badge>
          )}
          {hasOverrides && <Badge tone="info" title="This user has their own limits">Own limits</Badge>}
        </span>
      </td>
      <td data-label="Plan" className="cell-plan" data-plan={u.plan ?? ''}>
        <PlanBadge plan={u.plan} named={false} />
      </td>
      <td data-label="Today" className="cell-usage">
        <UsageBar
          used={u.today.total_tokens}
          limit={u.limits.daily_tokens}
          label={`Tokens today of ${u.id}`}
          text={
            <span title={`${formatInt(u.today.total_tokens)} of ${formatInt(u.limits.daily_tokens)} tokens`}>
              {formatCompact(u.today.total_tokens)} <span className="muted">/ {formatCompact(u.limits.daily_tokens)}</span>
            </span>
          }
        />
        {u.limits.daily_cost_nano_usd !== null && (
          <UsageBar
            used={u.today.cost_nano_usd}
            limit={u.limits.daily_cost_nano_usd}
            label={`Cost today of ${u.id}`}
            text={
              <span className="small">
                {formatUsd(u.today.cost_nano_usd)} <span className="muted">/ {formatUsd(u.limits.daily_cost_nano_usd)}</span>
              </span>
            }
          />
        )}
      </td>
      <td data-label="This month" className="cell-usage">
        <UsageBar
          used={u.month.total_tokens}
          limit={u.limits.monthly_tokens}
          label={`Tokens this month of ${u.id}`}
          text={
            <span title={`${formatInt(u.month.total_tokens)} of ${formatInt(u.limits.monthly_tokens)} tokens`}>
              {formatCompact(u.month.total_tokens)} <span className="muted">/ {formatCompact(u.limits.monthly_tokens)}</span>
            </span>
          }
        />
        {u.limits.monthly_cost_nano_usd !== null && (
          <UsageBar
            used={u.month.cost_nano_usd}
            limit={u.limits.monthly_cost_nano_usd}
            label={`Cost this month of ${u.id}`}
            text={
              <span className="small">
                {formatUsd(u.month.cost_nano_usd)} <span className="muted">/ {formatUsd(u.limits.monthly_cost_nano_usd)}</span>
              </span>
            }
          />
        )}
      </td>
      <td data-label="Cost today" className="num">
        {formatUsd(u.today.cost_nano_usd)}
      </td>
      <td data-label="Cost this month" className="num" data-testid="cost-month">
        {formatUsd(u.month.cost_nano_usd)}
      </td>
      <td data-label="Last seen">
        <RelativeTime ts={u.last_seen_at} timeZone={timeZone} />
      </td>
      <td data-label="Actions" className="cell-actions">
        <div className="row-actions">
        {u.blocked ? (
          <button type="button" className="btn btn-small" onClick={() => onAction({ kind: 'unblock', user: u })} aria-label={`Unblock ${u.id}`}>
            <Icon name="check" size={14} /> Unblock
          </button>
        ) : (
          <button type="button" className="btn btn-small btn-danger-ghost" onClick={() => onAction({ kind: 'block', user: u })} aria-label={`Block ${u.id}`}>
            <Icon name="ban" size={14} /> Block
          </button>
        )}
        <button type="button" className="btn btn-small" onClick={() => onAction({ kind: 'limits', user: u })} aria-label={`Edit the limits of ${u.id}`}>
          <Icon name="edit" size={14} /> Limits
        </button>
        </div>
      </td>
    </tr>
  );
}

export default function Users() {
  const [state, update] = useListState();
  const [searchText, setSearchText] = useState(state.search);
  const [dialog, setDialog] = useState<UserDialog>(null);
  const plans = usePlans();
  const searchId = useId();
  const planId = useId();
  const sortId = useId();
  const sizeId = useId();

  // Search as you type, once typing pauses.
  useEffect(() => {
    if (searchText === state.search) return;
    const t = setTimeout(() => update({ search: searchText.trim(), page: 1 }), 300);
    return () => clearTimeout(t);
  }, [searchText]);

  const users = useUsers({
    search: state.search || undefined,
    plan: state.plan || undefined,
    sort: state.sort,
    order: state.order,
    limit: state.size,
    offset: (state.page - 1) * state.size,
  });
  const data = users.data;
  const timeZone = data?.timezone ?? 'UTC';
  const total = data?.total ?? 0;
  const pages = Math.max(1, Math.ceil(total / state.size));
  const first = total === 0 ? 0 : (state.page - 1) * state.size + 1;
  const last = Math.min(total, state.page * state.size);
  const onSort = (sort: UserSort, order: Order) => update({ sort, order, page: 1 });
  // The plans to filter by: those configured, and the one asked for even if it is gone.
  const planNames = plans.data?.plans.map((p) => p.name) ?? [];
  if (state.plan && !planNames.includes(state.plan)) planNames.push(state.plan);
  const planLabel = state.plan ? `plan “${state.plan}”` : '';

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Users</h1>
          <p className="muted">
            Usage today ({data?.today ?? '…'}) and this month against each user's limits. Times in {timeZone}.
          </p>
        </div>
      </div>

      <div className="toolbar" role="search">
        <div className="field field-inline grow">
          <label htmlFor={searchId}>Search</label>
          <div className="input-icon">
            <Icon name="search" size={16} />
            <input
              id={searchId}
              type="search"
              placeholder="Id, email or name"
              value={searchText}
              onChange={(e) => setSearchText(e.target.value)}
              onKeyDown={(e) => {
                if (e.key === 'Enter') update({ search: searchText.trim(), page: 1 });
              }}
            />
          </div>
        </div>
        {planNames.length > 0 && (
          <div className="field field-inline">
            <label htmlFor={planId}>Plan</label>
            <select id={planId} value={state.plan} onChange={(e) => update({ plan: e.target.value, page: 1 })}>
              <option value="">All plans</option>
              {planNames.map((name) => (
                <option key={name} value={name}>
                  {name}
                </option>
              ))}
            </select>
          </div>
        )}
        <div className="field field-inline">
          <label htmlFor={sortId}>Sort by</label>
          <select id={sortId} value={state.sort} onChange={(e) => onSort(e.target.value as UserSort, state.order)}>
            {SORTS.map((s) => (
              <option key={s.value} value={s.value}>
                {s.label}
              </option>
            ))}
          </select>
        </div>
        <button
          type="button"
          className="btn"
          onClick={() => update({ order: state.order === 'desc' ? 'asc' : 'desc', page: 1 })}
          aria-label={`Order: ${state.order === 'desc' ? 'descending' : 'ascending'}. Switch.`}
        >
          <Icon name={state.order === 'desc' ? 'arrowDown' : 'arrowUp'} size={14} /> {state.order === 'desc' ? 'Descending' : 'Ascending'}
        </button>
        {users.isFetching && !users.isPending && <Spinner label="Refreshing users…" />}
      </div>

      {users.isError && <ErrorBanner error={users.error} title="Could not load the users" onRetry={() => void users.refetch()} />}

      {users.isPending ? (
        <div className="card">
          <LoadingBlock label="Loading users…" rows={6} />
        </div>
      ) : data && data.users.length === 0 ? (
        <div className="card">
          {state.search ? (
            <EmptyState title={`No user ${state.plan ? `on ${planLabel} ` : ''}matches “${state.search}”`} icon="search">
              <button type="button" className="btn btn-small" onClick={() => { setSearchText(''); update({ search: '', page: 1 }); }}>
                Clear the search
              </button>
            </EmptyState>
          ) : state.plan && state.page === 1 ? (
            <EmptyState title={`No user on ${planLabel}`} icon="search">
              <p>A user is on the plan of their latest call.</p>
              <button type="button" className="btn btn-small" onClick={() => update({ plan: '', page: 1 })}>
                Show all plans
              </button>
            </EmptyState>
          ) : state.page > 1 ? (
            <EmptyState title="This page is empty">
              <button type="button" className="btn btn-small" onClick={() => update({ page: 1 })}>
                Go to the first page
              </button>
            </EmptyState>
          ) : (
            <EmptyState title="No users yet">A user appears here after their first call through Tollgate.</EmptyState>
          )}
        </div>
      ) : data ? (
        <div className="card card-flush">
          <div className="table-wrap">
            <table className="table table-users stack-on-phone" aria-busy={users.isFetching}>
              <caption className="visually-hidden">
                Users{state.plan ? ` on ${planLabel}` : ''}, sorted by {SORTS.find((s) => s.value === state.sort)?.label.toLowerCase()} {state.order === 'asc' ? 'ascending' : 'descending'}
              </caption>
              <thead>
                <tr>
                  <SortHeader label="User" sort="id" current={state.sort} order={state.order} onSort={onSort} />
                  <th scope="col">Plan</th>
                  <SortHeader label="Tokens today" sort="tokens_today" current={state.sort} order={state.order} onSort={onSort} />
                  <SortHeader label="Tokens this month" sort="tokens_month" current={state.sort} order={state.order} onSort={onSort} />
                  <SortHeader label="Cost today" sort="cost_today" current={state.sort} order={state.order} onSort={onSort} className="num" />
                  <SortHeader label="Cost this month" sort="cost_month" current={state.sort} order={state.order} onSort={onSort} className="num" />
                  <SortHeader label="Last seen" sort="last_seen" current={state.sort} order={state.order} onSort={onSort} />
                  <th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {data.users.map((u) => (
                  <UserRow key={u.id} u={u} timeZone={timeZone} onAction={setDialog} />
                ))}
              </tbody>
            </table>
          </div>
          <nav className="pager" aria-label="Pages of users">
            <span className="pager-info" aria-live="polite">
              {formatInt(first)}–{formatInt(last)} of {formatInt(total)}
            </span>
            <div className="field field-inline">
              <label htmlFor={sizeId}>Per page</label>
              <select id={sizeId} value={state.size} onChange={(e) => update({ size: Number(e.target.value), page: 1 })}>
                {PAGE_SIZES.map((n) => (
                  <option key={n} value={n}>
                    {n}
                  </option>
                ))}
              </select>
            </div>
            <div className="pager-buttons">
              <button type="button" className="btn btn-small" disabled={state.page <= 1} onClick={() => update({ page: state.page - 1 })}>
                <Icon name="chevronLeft" size={14} /> Previous
              </button>
              <span className="pager-page">
                Page {state.page} of {pages}
              </span>
              <button type="button" className="btn btn-small" disabled={state.page >= pages} onClick={() => update({ page: state.page + 1 })}>
                Next <Icon name="chevronRight" size={14} />
              </button>
            </div>
          </nav>
        </div>
      ) : null}

      <UserDialogs dialog={dialog} onClose={() => setDialog(null)} />
    </div>
  );
}
