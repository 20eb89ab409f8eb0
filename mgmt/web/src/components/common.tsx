// Small pieces every page uses.

import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, poll } from '../api';

/** Key–value rows. */
export function Facts({ rows }: { rows: [string, ComponentChildren][] }) {
  return (
    <dl class="facts">
      {rows.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

export function Card({
  title,
  children,
  actions,
  wide,
}: {
  title: string;
  children: ComponentChildren;
  actions?: ComponentChildren;
  /** Spans the whole row of cards (a table with many columns). */
  wide?: boolean;
}) {
  return (
    <section class={wide ? 'card card-wide' : 'card'}>
      <header>
        <h3>{title}</h3>
        {actions && <div class="card-actions">{actions}</div>}
      </header>
      {children}
    </section>
  );
}

export function ErrorBox({ error }: { error: string | null | undefined }) {
  if (!error) return null;
  return (
    <div class="error-box" role="alert">
      {error}
    </div>
  );
}

/** GETs `path` now and every `everyMs` (if given). */
export function useFetch<T>(path: string | null, everyMs?: number): { data: T | null; error: string | null; reload: () => void } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    if (!path) return;
    let stop = false;
    let timer: number | undefined;
    const load = async () => {
      try {
        // Repeats are the page's own doing, not the user's.
        const d = await (everyMs ? poll : get)<T>(path);
        if (!stop) {
          setData(d);
          setError(null);
        }
      } catch (e) {
        if (!stop) setError(e instanceof Error ? e.message : String(e));
      }
      if (!stop && everyMs) timer = setTimeout(load, everyMs);
    };
    load();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [path, everyMs, n]);
  return { data, error, reload: () => setN((x) => x + 1) };
}

export function Meter({ used, total }: { used: number; total: number }) {
  const pct = total > 0 ? Math.round((100 * used) / total) : 0;
  return (
    <div class="meter" title={`${pct} %`}>
      <div style={{ width: `${pct}%` }} class={pct > 90 ? 'hot' : ''} />
    </div>
  );
}

export function PageHeader({ icon, title, subtitle, children }: { icon: string; title: string; subtitle?: ComponentChildren; children?: ComponentChildren }) {
  return (
    <header class="page-header">
      <span class={`icon big icon-${icon}`} aria-hidden="true" />
      <div>
        <h2>{title}</h2>
        {subtitle && <div class="muted">{subtitle}</div>}
      </div>
      <div class="page-actions">{children}</div>
    </header>
  );
}
