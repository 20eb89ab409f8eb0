// A live performance chart (uPlot) of one object's metrics, polled from
// /api/v1/metrics/{kind}/{object} at the sampling interval. The newest
// values are shown above the plot, and on the element as data-* for tests.

import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { poll, seg } from '../api';
import type { MetricKind, MetricSeries } from '../api';

export interface SeriesSpec {
  key: string;
  label: string;
  color: string;
}

export type Resolution = 'raw' | '5m';

interface Props {
  kind: MetricKind;
  object: string;
  title: string;
  series: SeriesSpec[];
  format: (v: number) => string;
  resolution: Resolution;
  testid?: string;
}

function lastValue(col: (number | null)[] | undefined): number | null {
  if (!col) return null;
  for (let i = col.length - 1; i >= 0; i--) if (col[i] != null) return col[i];
  return null;
}

export function Chart({ kind, object, title, series, format, resolution, testid }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const [data, setData] = useState<MetricSeries | null>(null);
  const [error, setError] = useState<string | null>(null);

  // Poll the series.
  useEffect(() => {
    let stop = false;
    let timer: number | undefined;
    const load = async () => {
      let every = resolution === 'raw' ? 5000 : 60000;
      try {
        const d = await poll<MetricSeries>(`/metrics/${kind}/${seg(object)}?resolution=${resolution}`);
        if (stop) return;
        setData(d);
        setError(null);
        if (resolution === 'raw') every = Math.max(2, Math.min(20, d.interval_s)) * 1000;
      } catch (e) {
        if (!stop) setError(e instanceof Error ? e.message : String(e));
      }
      if (!stop) timer = setTimeout(load, every);
    };
    setData(null);
    load();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [kind, object, resolution]);

  // Make the plot once, then feed it.
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: 150,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.15 : 1] } },
      axes: [
        { stroke: '#5b6770', grid: { stroke: '#eef1f3' } },
        { stroke: '#5b6770', grid: { stroke: '#eef1f3' }, size: 78, values: (_u, vals) => vals.map((v) => format(v)) },
      ],
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, fill: `${s.color}1f`, spanGaps: false }))],
    };
    const empty: uPlot.AlignedData = [[], ...series.map(() => [])];
    const u = new uPlot(opts, empty, el);
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height: 150 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [series.map((s) => s.key).join(','), format]);

  useEffect(() => {
    if (!plot.current || !data) return;
    const cols = series.map((s) => data.series[s.key] ?? data.times.map(() => null));
    plot.current.setData([data.times, ...cols] as uPlot.AlignedData);
  }, [data]);

  const cols = data ? series.map((s) => data.series[s.key]) : [];
  const values = cols.flatMap((c) => (c ?? []).filter((v): v is number => v != null));
  const max = values.length ? Math.max(...values) : 0;
  return (
    <section class="chart" data-testid={testid} data-points={data?.times.length ?? 0} data-max={max}>
      <header>
        <h4>{title}</h4>
        <div class="chart-legend">
          {series.map((s, i) => (
            <span key={s.key}>
              <i style={{ background: s.color }} />
              {s.label} <b>{data ? (lastValue(cols[i]) == null ? '—' : format(lastValue(cols[i]) as number)) : '…'}</b>
            </span>
          ))}
        </div>
      </header>
      <div ref={box} class="chart-plot" />
      {error && <p class="error">{error}</p>}
      {data && data.times.length === 0 && <p class="muted chart-empty">No samples yet: the first come within {data.interval_s * 2} s.</p>}
    </section>
  );
}

export function ResolutionPicker({ value, onChange }: { value: Resolution; onChange: (r: Resolution) => void }) {
  return (
    <label class="inline">
      Period{' '}
      <select value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value as Resolution)}>
        <option value="raw">Last hour (real time)</option>
        <option value="5m">Last day (5-minute averages)</option>
      </select>
    </label>
  );
}

export const COLORS = { a: '#1f77b4', b: '#e6550d', c: '#2ca02c', d: '#9467bd' };
