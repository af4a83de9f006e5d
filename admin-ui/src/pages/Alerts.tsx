// The alerts the `[[alerts]]` rules of gateway.toml fired (GET /api/admin/alerts), newest first,
// with where each one's webhook deliveries stand. Read-only: rules change in gateway.toml.

import { useAlerts, useConfig, useTimeZone } from '../api/hooks';
import type { AlertRow } from '../api/types';
import { Badge, Card, EmptyState, ErrorBanner, LoadingBlock, RelativeTime, Spinner } from '../components/ui';
import { formatDateTime, formatInt } from '../lib/format';
import { Link, userPath } from '../lib/router';

const KIND_LABEL: Record<string, string> = {
  user_limit: 'user limit',
  spend: 'spend',
  upstream_errors: 'upstream errors',
  refusals: 'refusals',
  store_behind: 'store behind',
};

type Tone = 'neutral' | 'danger' | 'warn' | 'ok' | 'info';

const DELIVERY: Record<string, { label: string; tone: Tone; title: string }> = {
  none: { label: 'not sent', tone: 'neutral', title: 'No [[webhooks]] takes this rule’s alerts: recorded here only' },
  pending: { label: 'pending', tone: 'info', title: 'Being delivered; failed attempts are retried with backoff' },
  delivered: { label: 'delivered', tone: 'ok', title: 'Every webhook took it' },
  failed: { label: 'failed', tone: 'danger', title: 'A webhook did not take it, after every retry' },
};

const EXAMPLE = `[[alerts]]
kind = "user_limit"     # a user passes 80% and 100% of a daily limit
percent = [80, 100]
windows = ["day"]

[[alerts]]
kind = "spend"          # the day's spend over every user
window = "day"
usd = 50

[[webhooks]]            # optional: POST each alert, signed
name = "ops"
url = "https://hooks.example.com/tollgate"
secret_env = "TOLLGATE_WEBHOOK_SECRET"`;

function plural(n: number, one: string, many: string): string {
  return `${formatInt(n)} ${n === 1 ? one : many}`;
}

function Delivery({ alert }: { alert: AlertRow }) {
  const d = DELIVERY[alert.delivery] ?? { label: alert.delivery, tone: 'neutral' as const, title: '' };
  return (
    <div>
      <Badge tone={d.tone} title={d.title}>
        {d.label}
      </Badge>
      {alert.attempts > 0 && <div className="muted small">{plural(alert.attempts, 'attempt', 'attempts')}</div>}
    </div>
  );
}

export function AlertsTable({ alerts, timeZone }: { alerts: AlertRow[]; timeZone: string }) {
  return (
    <div className="table-wrap">
      <table className="table table-alerts stack-on-phone">
        <caption className="visually-hidden">Alerts, newest first</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Rule</th>
            <th scope="col">Kind</th>
            <th scope="col">Subject</th>
            <th scope="col">Level</th>
            <th scope="col">Message</th>
            <th scope="col">Delivery</th>
            <th scope="col">Delivered</th>
          </tr>
        </thead>
        <tbody>
          {alerts.map((a) => (
            <tr key={a.id} data-alert={a.id} data-kind={a.kind} data-subject={a.subject} data-delivery={a.delivery}>
              <td className="nowrap" data-label="When">
                <div>
                  <RelativeTime ts={a.ts} timeZone={timeZone} />
                  <div className="muted small">{formatDateTime(a.ts, timeZone)}</div>
                </div>
              </td>
              <td className="break cell-rule" data-label="Rule">
                {a.rule}
              </td>
              <td data-label="Kind">{KIND_LABEL[a.kind] ?? a.kind}</td>
              <td className="break cell-subject" data-label="Subject">
                {a.kind === 'user_limit' ? <Link to={userPath(a.subject)}>{a.subject}</Link> : a.subject}
              </td>
              <td data-label="Level">
                <div>
                  <div className="nowrap">{a.level}</div>
                  <div className="muted small">{a.period}</div>
                </div>
              </td>
              <td className="alert-message break" data-label="Message">
                {a.message}
              </td>
              <td className="nowrap" data-label="Delivery">
                <Delivery alert={a} />
              </td>
              <td className="nowrap" data-label="Delivered">
                {a.delivered_at === null ? (
                  <span className="muted">—</span>
                ) : (
                  <time dateTime={new Date(a.delivered_at).toISOString()} title={`${formatDateTime(a.delivered_at, timeZone)} ${timeZone}`}>
                    {formatDateTime(a.delivered_at, timeZone)}
                  </time>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** No alert yet: which rules are in force, or how to write one. */
function NoAlerts() {
  const config = useConfig();
  // The configuration leaves `alerts` out when there is no rule.
  const rules = config.data ? (config.data.config.alerts ?? []) : undefined;
  if (rules && rules.length > 0) {
    const names = rules.map((r) => r.name ?? r.kind);
    return (
      <EmptyState title="No alert has fired yet">
        <p>
          {plural(rules.length, 'rule is', 'rules are')} in force ({names.join(', ')}). An alert shows here when one fires, and the
          menu counts those of the last 24 hours.
        </p>
      </EmptyState>
    );
  }
  return (
    <EmptyState title={rules ? 'No alert rules are configured' : 'No alerts yet'}>
      <p>
        Alerts come from <code>[[alerts]]</code> rules in gateway.toml: a user passing a share of a daily or monthly limit or budget,
        the day’s or month’s spend, upstream errors or refusals over a few minutes, the store falling behind. Each fires once per
        subject and period; with <code>[[webhooks]]</code> it is also POSTed, signed. The gateway picks up a changed file by itself.
      </p>
      <pre className="code empty-example">{EXAMPLE}</pre>
    </EmptyState>
  );
}

export default function Alerts() {
  const timeZone = useTimeZone();
  const alerts = useAlerts(50);
  useConfig(); // what the empty state tells: asked for together with the alerts
  const rows = alerts.data?.pages.flatMap((p) => p.alerts) ?? [];
  const last24h = alerts.data?.pages[0]?.last_24h;

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Alerts</h1>
          <p className="muted">
            What the <code>[[alerts]]</code> rules of gateway.toml fired, newest first, and whether their webhooks took it. Times in{' '}
            {timeZone}.
          </p>
        </div>
        <p className="muted alerts-24h">
          {alerts.isFetching && !alerts.isPending && <Spinner label="Refreshing…" />}
          {last24h !== undefined && <span data-testid="alerts-24h">{plural(last24h, 'alert', 'alerts')} in the last 24 hours</span>}
        </p>
      </div>
      <Card className="card-flush">
        {alerts.isError ? (
          <ErrorBanner error={alerts.error} title="Could not load the alerts" onRetry={() => void alerts.refetch()} />
        ) : alerts.isPending ? (
          <LoadingBlock label="Loading the alerts…" />
        ) : rows.length === 0 ? (
          <NoAlerts />
        ) : (
          <>
            <AlertsTable alerts={rows} timeZone={timeZone} />
            {alerts.hasNextPage && (
              <div className="card-foot">
                <button type="button" className="btn btn-small" onClick={() => void alerts.fetchNextPage()} disabled={alerts.isFetchingNextPage}>
                  {alerts.isFetchingNextPage ? 'Loading…' : 'Older alerts'}
                </button>
              </div>
            )}
          </>
        )}
      </Card>
    </div>
  );
}
