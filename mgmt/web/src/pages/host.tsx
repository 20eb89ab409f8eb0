// The host: what it is, which hypervisor driver VMs get and why, the
// supervised daemons, and its charts.

import { useState } from 'preact/hooks';
import { ApiError, call, seg } from '../api';
import type { ClusterHost, Daemon, Page } from '../api';
import { Card, ErrorBox, Facts, Meter, PageHeader, useFetch } from '../components/common';
import { StateBadge } from '../components/progress';
import { ago, bytes } from '../format';
import { href } from '../router';
import { refreshInventory, useStore } from '../store';
import { Performance } from './charts';
import { AddDatastore } from './storage';

export function HostPage() {
  const s = useStore();
  const daemons = useFetch<Page<Daemon>>('/daemons', 5000);
  const h = s.host;
  if (!h) return <p class="muted">Loading…</p>;
  return (
    <div>
      <PageHeader icon="host" title={h.hostname} subtitle="Host" />
      <div class="cards">
        <Card title="Hardware">
          <Facts
            rows={[
              ['CPUs', h.cpus],
              ['Memory', bytes(h.memory_bytes)],
              ['KVM', h.kvm ? h.kvm_kind : 'none'],
              ['VMs', `${h.vms?.running ?? 0} running, ${h.vms?.paused ?? 0} paused, of ${h.vms?.total ?? 0}`],
            ]}
          />
        </Card>
        <Card title="Hypervisor driver">
          <Facts
            rows={[
              ['Default driver', <span data-testid="host-driver">{h.default_driver}</span>],
              ['QEMU accelerator', h.accel],
              ['sfera-vmm', h.sfera_vmm_available ? 'available (a VM may ask for it)' : 'not available'],
              ['Why', h.driver_reason],
            ]}
          />
        </Card>
        <Card title="Drivers of the VMs">
          {(h.vm_drivers ?? []).length === 0 ? (
            <p class="muted">No VMs.</p>
          ) : (
            <table class="grid" data-testid="vm-drivers">
              <thead>
                <tr>
                  <th>VM</th>
                  <th>State</th>
                  <th>Driver</th>
                  <th>Why</th>
                </tr>
              </thead>
              <tbody>
                {(h.vm_drivers ?? []).map((v) => (
                  <tr key={v.id}>
                    <td>
                      <a href={href({ page: 'vm', vm: v.name, tab: 'summary' })}>{v.name}</a>
                    </td>
                    <td>
                      <StateBadge state={v.state} />
                    </td>
                    <td>{v.driver}</td>
                    <td class="small">{v.driver_reason}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </Card>
        <Card title="Cluster" wide actions={s.session?.role === 'administrator' && <AddHost />}>
          <table class="grid" data-testid="cluster-hosts">
            <thead>
              <tr>
                <th>Host</th>
                <th>State</th>
                <th>CPUs</th>
                <th>Memory free</th>
                <th>VMs running</th>
                {s.session?.role === 'administrator' && <th>Actions</th>}
              </tr>
            </thead>
            <tbody>
              {s.hosts.map((c) => (
                <tr key={c.name} data-host={c.name} data-host-state={c.state}>
                  <td>
                    {c.name}
                    {c.this_host && <span class="muted"> (this host)</span>}
                  </td>
                  <td>
                    <span class={`badge badge-${c.state}`}>{HOST_STATES[c.state]}</span>
                    {c.maintenance && (
                      <span class="muted small"> by {c.maintenance.by}, {ago(c.maintenance.since)}</span>
                    )}
                  </td>
                  <td>{c.facts.cpus}</td>
                  <td title={`${bytes(c.usage.memory_allocated_bytes)} given to its running VMs`}>
                    {bytes(c.usage.memory_free_bytes)} of {bytes(c.facts.memory_bytes)}
                  </td>
                  <td>
                    {c.usage.vms_running} of {c.usage.vms}
                  </td>
                  {s.session?.role === 'administrator' && (
                    <td>
                      <HostActions host={c} />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </Card>
        <Card title="Services">
          <table class="grid">
            <thead>
              <tr>
                <th>Daemon</th>
                <th>State</th>
                <th>PID</th>
                <th>Since</th>
                <th>Restarts</th>
              </tr>
            </thead>
            <tbody>
              {(daemons.data?.items ?? []).map((d) => (
                <tr key={d.name}>
                  <td>{d.name}</td>
                  <td>
                    <StateBadge state={d.state} />
                    {d.adopted && <span class="muted"> (adopted)</span>}
                  </td>
                  <td>{d.pid ?? '—'}</td>
                  <td>{ago(d.started_at)}</td>
                  <td title={d.last_exit ?? ''}>{d.restarts}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </Card>
        <Card title="Datastores" actions={s.session?.role === 'administrator' && <AddDatastore />}>
          {s.datastores.map((d) => (
            <div key={d.name} class="ds-row">
              <a href={href({ page: 'datastore', ds: d.name })}>{d.name}</a>
              <Meter used={(d.capacity_bytes ?? 0) - (d.free_bytes ?? 0)} total={d.capacity_bytes ?? 0} />
              <span class="muted small">{bytes(d.free_bytes)} free of {bytes(d.capacity_bytes)}</span>
            </div>
          ))}
        </Card>
      </div>
      <h3>Performance</h3>
      <Performance kind="host" object={h.hostname} />
    </div>
  );
}

/** A join token as `POST /cluster/join-tokens` answers it (shown once). */
interface JoinToken {
  token: string;
  expires_at: number;
}

/** How long a new join token may be used. */
const JOIN_TTLS: [number, string][] = [
  [600, '10 minutes'],
  [3600, '1 hour'],
  [86400, '1 day'],
];

/** "Add host": makes a one-time join token on this host and says how the
 * new host uses it (`sfera host join`, before its mgmtd first starts). */
const HOST_STATES: Record<ClusterHost['state'], string> = {
  connected: 'connected',
  not_responding: 'not responding',
  maintenance: 'maintenance mode',
};

/** Maintenance mode and removal of one host of the cluster. */
function HostActions({ host }: { host: ClusterHost }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const act = async (method: string, path: string) => {
    setBusy(true);
    setError(null);
    try {
      await call(method, path);
      await refreshInventory();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  const path = `/hosts/${seg(host.name)}`;
  const inMaintenance = host.maintenance !== undefined;
  return (
    <span class="row-actions" data-testid={`host-actions-${host.name}`}>
      <button
        class="small"
        disabled={busy}
        data-testid={inMaintenance ? 'host-exit-maintenance' : 'host-enter-maintenance'}
        title={
          inMaintenance
            ? 'Let VMs of this host power on and new VMs be made on it again'
            : 'No VM of this host powers on and none is made on it; its VMs must be off first'
        }
        onClick={() => act(inMaintenance ? 'DELETE' : 'PUT', `${path}/maintenance`)}
      >
        {inMaintenance ? 'Exit maintenance' : 'Enter maintenance'}
      </button>{' '}
      <button
        class="small danger"
        disabled={busy || host.this_host}
        data-testid="host-remove"
        title={
          host.this_host
            ? 'This host answers the console: remove it through another host of the cluster'
            : 'Take this host out of the cluster (refused while it has VMs)'
        }
        onClick={() => {
          if (window.confirm(`Remove host ${host.name} from the cluster? It stops and must join again with a new join token.`))
            act('DELETE', path);
        }}
      >
        Remove…
      </button>
      <ErrorBox error={error} />
    </span>
  );
}

function AddHost() {
  const [open, setOpen] = useState(false);
  const [ttl, setTtl] = useState(3600);
  const [made, setMade] = useState<JoinToken | null>(null);
  const [error, setError] = useState<string | null>(null);
  if (!open)
    return (
      <button class="small" data-testid="cluster-add-host" onClick={() => setOpen(true)}>
        Add host…
      </button>
    );
  const close = () => {
    setOpen(false);
    setMade(null);
    setError(null);
  };
  const make = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      setMade(await call<JoinToken>('POST', '/cluster/join-tokens', { ttl_s: ttl }));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  if (made)
    return (
      <div class="inline-form" data-testid="join-token-made">
        <p class="small">
          A join token for one new host, valid until {new Date(made.expires_at * 1000).toLocaleString()} (shown only now):
        </p>
        <code data-testid="join-token">{made.token}</code>
        <p class="small">
          On the new host, before its sfera-mgmtd first starts, put the token in a file only root can read and run:
        </p>
        <code>
          sfera host join https://{location.host} --token-file TOKEN-FILE --address NEW-HOST-IP
        </code>
        <button type="button" class="small" onClick={close}>
          Done
        </button>
      </div>
    );
  return (
    <form class="inline-form" onSubmit={make}>
      <label class="small">
        Valid for{' '}
        <select aria-label="Join token lifetime" value={ttl} onChange={(e) => setTtl(Number((e.target as HTMLSelectElement).value))}>
          {JOIN_TTLS.map(([s, label]) => (
            <option key={s} value={s}>
              {label}
            </option>
          ))}
        </select>
      </label>
      <button class="primary small" data-testid="join-token-make">
        Make join token
      </button>
      <button type="button" class="small" onClick={close}>
        Cancel
      </button>
      <span data-testid="join-token-error">
        <ErrorBox error={error} />
      </span>
    </form>
  );
}
