import { useId, useState } from 'react';
import { useConfig } from '../api/hooks';
import type { ConfigView, Price } from '../api/types';
import { Badge, Card, EmptyState, ErrorBanner, LoadingBlock } from '../components/ui';
import { formatDollars, formatInt } from '../lib/format';

function value(v: unknown): string {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return Number.isInteger(v) && Math.abs(v) >= 10_000 ? formatInt(v) : String(v);
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (Array.isArray(v)) return v.map(value).join(', ');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function Section({ title, data, id }: { title: string; data: Record<string, unknown> | undefined; id: string }) {
  if (!data) return null;
  return (
    <Card title={title} id={id}>
      <dl className="kv">
        {Object.entries(data).map(([k, v]) => (
          <div key={k}>
            <dt className="mono">{k}</dt>
            <dd className="break">{value(v)}</dd>
          </div>
        ))}
      </dl>
    </Card>
  );
}

function Prices({ pricing }: { pricing: Record<string, Price> }) {
  const [filter, setFilter] = useState('');
  const filterId = useId();
  const rows = Object.entries(pricing).filter(([m]) => m.toLowerCase().includes(filter.trim().toLowerCase()));
  const count = Object.keys(pricing).length;
  return (
    <Card
      title={`Prices (${count} models)`}
      id="prices"
      className="span-all"
      actions={
        <div className="field field-inline">
          <label htmlFor={filterId} className="visually-hidden">
            Filter models
          </label>
          <input id={filterId} type="search" placeholder="Filter models" value={filter} onChange={(e) => setFilter(e.target.value)} />
        </div>
      }
    >
      <p className="muted small">
        USD per million tokens. A call's model takes the price of the longest matching prefix; a model without a price is recorded with no cost. Long-context prices apply to the whole call when its input exceeds the threshold.
      </p>
      {count === 0 ? (
        <EmptyState title="No prices configured">Calls are recorded without a cost.</EmptyState>
      ) : rows.length === 0 ? (
        <EmptyState title={`No model matches “${filter}”`} icon="search" />
      ) : (
        <div className="table-wrap">
          <table className="table table-prices">
            <caption className="visually-hidden">Price table, USD per million tokens</caption>
            <thead>
              <tr>
                <th scope="col">Model (prefix)</th>
                <th scope="col" className="num">Input</th>
                <th scope="col" className="num">Cached input</th>
                <th scope="col" className="num">Output</th>
                <th scope="col" className="num">Long context above</th>
                <th scope="col" className="num">Long input</th>
                <th scope="col" className="num">Long cached</th>
                <th scope="col" className="num">Long output</th>
              </tr>
            </thead>
            <tbody>
              {rows.map(([model, p]) => (
                <tr key={model}>
                  <td className="mono">{model}</td>
                  <td className="num">{formatDollars(p.input)}</td>
                  <td className="num">{formatDollars(p.cached_input ?? p.input)}</td>
                  <td className="num">{formatDollars(p.output)}</td>
                  <td className="num">{p.long_context_threshold ? `${formatInt(p.long_context_threshold)} tok` : '—'}</td>
                  <td className="num">{p.long_input !== undefined ? formatDollars(p.long_input) : '—'}</td>
                  <td className="num">{p.long_input !== undefined ? formatDollars(p.long_cached_input ?? p.long_input) : '—'}</td>
                  <td className="num">{p.long_output !== undefined ? formatDollars(p.long_output) : '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Card>
  );
}

function Providers({ view }: { view: ConfigView }) {
  const providers = view.config.providers ?? [];
  return (
    <Card title="Providers" id="providers" className="span-all">
      {providers.length === 0 ? (
        <EmptyState title="No providers configured" />
      ) : (
        <div className="table-wrap">
          <table className="table">
            <caption className="visually-hidden">Providers</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Kind</th>
                <th scope="col">Prefix</th>
                <th scope="col">Upstream</th>
                <th scope="col">Key from</th>
              </tr>
            </thead>
            <tbody>
              {providers.map((p) => (
                <tr key={p.name}>
                  <td>{p.name}</td>
                  <td>{p.kind}</td>
                  <td className="mono">{p.prefix}</td>
                  <td className="mono break">{p.upstream}</td>
                  <td>
                    <span className="mono">${p.api_key_env}</span>{' '}
                    {view.secrets[p.api_key_env] ? <Badge tone="ok">set</Badge> : <Badge tone="danger">not set</Badge>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Card>
  );
}

export default function Settings() {
  const config = useConfig();
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Settings</h1>
          <p className="muted">
            The configuration in force (gateway.toml with its defaults filled in). Read-only: change gateway.toml and the gateway reloads it. Secrets are never shown — only whether their environment variable is set.
          </p>
        </div>
      </div>
      {config.isError ? (
        <ErrorBanner error={config.error} title="Could not load the configuration" onRetry={() => void config.refetch()} />
      ) : !config.data ? (
        <LoadingBlock label="Loading the configuration…" rows={8} />
      ) : (
        <div className="grid-2">
          <Section title="Default limits" id="limits" data={config.data.config.limits as unknown as Record<string, unknown>} />
          <Card title="Secrets" id="secrets">
            <dl className="kv">
              {Object.entries(config.data.secrets).map(([k, set]) => (
                <div key={k}>
                  <dt className="mono">${k}</dt>
                  <dd>{set ? <Badge tone="ok">set</Badge> : <Badge tone="danger">not set</Badge>}</dd>
                </div>
              ))}
            </dl>
          </Card>
          <Providers view={config.data} />
          <Prices pricing={config.data.config.pricing ?? {}} />
          <Section title="Proxy server" id="server" data={config.data.config.server} />
          <Section title="Admin" id="admin" data={config.data.config.admin} />
          <Section title="Authentication" id="auth" data={config.data.config.auth} />
          <Section title="Store" id="store" data={config.data.config.store} />
          <Section title="Logging" id="log" data={config.data.config.log} />
          <Card title="As TOML" id="toml" className="span-all">
            <details>
              <summary>Show the effective gateway.toml</summary>
              <pre className="code">{config.data.toml}</pre>
            </details>
          </Card>
        </div>
      )}
    </div>
  );
}
