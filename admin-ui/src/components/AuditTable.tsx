import type { AuditRow } from '../api/types';
import { formatDateTime, formatUsd } from '../lib/format';
import { Link, userPath } from '../lib/router';
import { Badge, RelativeTime } from './ui';

const USER_ACTIONS = new Set(['block', 'unblock', 'set_limits']);

const ACTION_LABEL: Record<string, string> = {
  login: 'signed in',
  login_failed: 'failed sign-in',
  logout: 'signed out',
  block: 'blocked',
  unblock: 'unblocked',
  set_limits: 'changed limits',
  config_reload: 'reloaded config',
  config_reload_refused: 'reload refused',
  admin_add: 'added admin',
  admin_remove: 'removed admin',
};

function actionTone(action: string): 'danger' | 'warn' | 'ok' | 'info' | 'neutral' {
  if (action === 'block' || action === 'login_failed' || action === 'config_reload_refused') return 'danger';
  if (action === 'unblock') return 'ok';
  if (action === 'set_limits' || action === 'config_reload') return 'info';
  return 'neutral';
}

function flatten(value: unknown, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix] = value;
  }
  return out;
}

function show(v: unknown, key: string): string {
  // A cleared limit override means "the default"; any other empty value is just empty.
  if (v === null || v === undefined) return key.startsWith('overrides.') ? 'default' : 'none';
  if (typeof v === 'number' && key.endsWith('_nano_usd')) return formatUsd(v);
  return typeof v === 'string' ? `“${v}”` : String(v);
}

/** What changed between `before_json` and `after_json`, as "key: a → b" lines. */
export function auditChanges(row: Pick<AuditRow, 'before_json' | 'after_json'>): string[] {
  if (!row.before_json && !row.after_json) return [];
  let before: unknown;
  let after: unknown;
  try {
    before = row.before_json ? JSON.parse(row.before_json) : {};
    after = row.after_json ? JSON.parse(row.after_json) : {};
  } catch {
    return [];
  }
  const b = flatten(before);
  const a = flatten(after);
  const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])].sort();
  return keys
    .filter((k) => JSON.stringify(b[k] ?? null) !== JSON.stringify(a[k] ?? null))
    .map((k) => `${k.replace(/^overrides\./, '').replace(/_nano_usd$/, '')}: ${show(b[k], k)} → ${show(a[k], k)}`);
}

export function AuditTable({ entries, timeZone, showTarget = true }: { entries: AuditRow[]; timeZone: string; showTarget?: boolean }) {
  return (
    <div className="table-wrap">
      <table className="table table-audit stack-on-phone">
        <caption className="visually-hidden">Audit entries, newest first</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Who</th>
            <th scope="col">Action</th>
            {showTarget && <th scope="col">Target</th>}
            <th scope="col">Details</th>
          </tr>
        </thead>
        <tbody>
          {entries.map((e) => {
            const changes = auditChanges(e);
            return (
              <tr key={e.id} data-audit={e.action}>
                <td className="nowrap" data-label="When">
                  <RelativeTime ts={e.ts} timeZone={timeZone} />
                  <div className="muted small">{formatDateTime(e.ts, timeZone)}</div>
                </td>
                <td className="break" data-label="Who">{e.actor}</td>
                <td data-label="Action">
                  <Badge tone={actionTone(e.action)}>{ACTION_LABEL[e.action] ?? e.action}</Badge>
                </td>
                {showTarget && (
                  <td className="break" data-label="Target">
                    {e.target ? USER_ACTIONS.has(e.action) ? <Link to={userPath(e.target)}>{e.target}</Link> : e.target : <span className="muted">—</span>}
                  </td>
                )}
                <td className="audit-detail" data-label="Details">
                  {e.detail && <div className="break">{e.detail}</div>}
                  {changes.length > 0 && (
                    <ul className="changes">
                      {changes.map((c) => (
                        <li key={c} className="mono small">
                          {c}
                        </li>
                      ))}
                    </ul>
                  )}
                  {!e.detail && changes.length === 0 && <span className="muted">—</span>}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
