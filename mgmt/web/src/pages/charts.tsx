// The performance charts of each kind of object.

import { useState } from 'preact/hooks';
import { COLORS, Chart, ResolutionPicker } from '../components/chart';
import type { Resolution, SeriesSpec } from '../components/chart';
import { bytes, count, percent, rate } from '../format';
import type { MetricKind } from '../api';

const perSecond = (v: number) => `${count(v)}/s`;
const pct = (v: number) => percent(v);

interface Spec {
  title: string;
  series: SeriesSpec[];
  format: (v: number) => string;
  testid: string;
}

const CHARTS: Record<MetricKind, Spec[]> = {
  host: [
    { title: 'CPU', series: [{ key: 'cpu_percent', label: 'used', color: COLORS.a }], format: pct, testid: 'chart-cpu' },
    { title: 'Memory', series: [{ key: 'memory_used_bytes', label: 'used', color: COLORS.d }], format: bytes, testid: 'chart-memory' },
    {
      title: 'Disk (all datastores)',
      series: [
        { key: 'disk_read_bytes_per_s', label: 'read', color: COLORS.a },
        { key: 'disk_write_bytes_per_s', label: 'write', color: COLORS.b },
      ],
      format: rate,
      testid: 'chart-disk',
    },
    {
      title: 'Network (all ports)',
      series: [
        { key: 'net_rx_bytes_per_s', label: 'to VMs', color: COLORS.c },
        { key: 'net_tx_bytes_per_s', label: 'from VMs', color: COLORS.b },
      ],
      format: rate,
      testid: 'chart-network',
    },
  ],
  vm: [
    { title: 'CPU (QEMU)', series: [{ key: 'cpu_percent', label: 'used', color: COLORS.a }], format: pct, testid: 'chart-cpu' },
    {
      title: 'Disk',
      series: [
        { key: 'disk_read_bytes_per_s', label: 'read', color: COLORS.a },
        { key: 'disk_write_bytes_per_s', label: 'write', color: COLORS.b },
      ],
      format: rate,
      testid: 'chart-disk',
    },
    {
      title: 'Network',
      series: [
        { key: 'net_rx_bytes_per_s', label: 'received', color: COLORS.c },
        { key: 'net_tx_bytes_per_s', label: 'sent', color: COLORS.b },
      ],
      format: rate,
      testid: 'chart-network',
    },
    {
      title: 'Disk operations',
      series: [
        { key: 'disk_read_ops_per_s', label: 'reads', color: COLORS.a },
        { key: 'disk_write_ops_per_s', label: 'writes', color: COLORS.b },
      ],
      format: perSecond,
      testid: 'chart-iops',
    },
  ],
  volume: [
    {
      title: 'Throughput',
      series: [
        { key: 'read_bytes_per_s', label: 'read', color: COLORS.a },
        { key: 'write_bytes_per_s', label: 'write', color: COLORS.b },
      ],
      format: rate,
      testid: 'chart-disk',
    },
    {
      title: 'Operations',
      series: [
        { key: 'read_ops_per_s', label: 'reads', color: COLORS.a },
        { key: 'write_ops_per_s', label: 'writes', color: COLORS.b },
      ],
      format: perSecond,
      testid: 'chart-iops',
    },
  ],
  port: [
    {
      title: 'Throughput',
      series: [
        { key: 'rx_bytes_per_s', label: 'to the VM', color: COLORS.c },
        { key: 'tx_bytes_per_s', label: 'from the VM', color: COLORS.b },
      ],
      format: rate,
      testid: 'chart-network',
    },
    {
      title: 'Packets',
      series: [
        { key: 'rx_packets_per_s', label: 'to the VM', color: COLORS.c },
        { key: 'tx_packets_per_s', label: 'from the VM', color: COLORS.b },
        { key: 'drops_per_s', label: 'dropped', color: '#d62728' },
      ],
      format: perSecond,
      testid: 'chart-packets',
    },
  ],
};

/** Every chart of an object, with the period to show. */
export function Performance({ kind, object }: { kind: MetricKind; object: string }) {
  const [resolution, setResolution] = useState<Resolution>('raw');
  return (
    <section class="performance" aria-label="Performance">
      <div class="toolbar">
        <ResolutionPicker value={resolution} onChange={setResolution} />
      </div>
      <div class="charts">
        {CHARTS[kind].map((c) => (
          <Chart key={c.title} kind={kind} object={object} title={c.title} series={c.series} format={c.format} resolution={resolution} testid={c.testid} />
        ))}
      </div>
    </section>
  );
}
