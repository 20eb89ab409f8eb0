// Switches, port groups and ports.

import { useState } from 'preact/hooks';
import { ApiError, call, seg } from '../api';
import type { Port, PortGroup, Vlan } from '../api';
import { Card, ErrorBox, Facts, PageHeader } from '../components/common';
import { bytes, count, vlan } from '../format';
import { go, href } from '../router';
import { refreshInventory, useStore } from '../store';
import { Performance } from './charts';
import { DeleteButton, EditPortGroup, NewSwitch } from './manage-forms';

function PortTable({ ports }: { ports: Port[] }) {
  if (ports.length === 0) return <p class="muted">No ports.</p>;
  return (
    <table class="grid" data-testid="ports">
      <thead>
        <tr>
          <th>Port</th>
          <th>VM</th>
          <th>MAC</th>
          <th>Connected</th>
          <th>Received</th>
          <th>Sent</th>
        </tr>
      </thead>
      <tbody>
        {ports.map((p) => (
          <tr key={p.name}>
            <td>
              <a href={href({ page: 'port', port: p.name })}>{p.name}</a>
            </td>
            <td>{p.vm ? <a href={href({ page: 'vm', vm: p.vm.name, tab: 'summary' })}>{p.vm.name}</a> : '—'}</td>
            <td>
              <code>{p.mac}</code>
            </td>
            <td>{p.connected ? 'yes' : 'no'}</td>
            <td>{bytes(p.stats?.rx_bytes)}</td>
            <td>{bytes(p.stats?.tx_bytes)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function SwitchPage({ sw }: { sw: string }) {
  const s = useStore();
  const sw0 = s.networks?.switches.find((x) => x.name === sw);
  if (!sw0) return <p class="muted">{s.loaded ? `No switch ${sw}.` : 'Loading…'}</p>;
  const groups = s.networks?.port_groups.filter((g) => g.switch === sw) ?? [];
  const admin = s.session?.role === 'administrator';
  return (
    <div>
      <PageHeader icon="switch" title={sw0.name} subtitle="Virtual switch">
        {admin && (
          <>
            <NewSwitch />
            <DeleteButton what={`switch ${sw}`} path={`/switches/${seg(sw)}`} after={() => go({ page: 'host' })} testid="switch-delete" />
          </>
        )}
      </PageHeader>
      <div class="cards">
        <Card title="Uplinks">
          {(sw0.uplinks ?? []).length === 0 ? (
            <p class="muted">No uplinks: VMs on this switch reach each other only.</p>
          ) : (
            <Facts rows={(sw0.uplinks ?? []).map((u) => [u.name, `${u.type ?? ''} ${u.interface ?? ''}`])} />
          )}
        </Card>
        <Card title="Port groups" actions={s.session?.role === 'administrator' && <AddPortGroup sw={sw} />}>
          <table class="grid">
            <thead>
              <tr>
                <th>Port group</th>
                <th>VLAN</th>
                <th>Ports</th>
              </tr>
            </thead>
            <tbody>
              {groups.map((g) => (
                <tr key={g.name}>
                  <td>
                    <a href={href({ page: 'portgroup', pg: g.name })}>{g.name}</a>
                  </td>
                  <td>{vlan(g.vlan)}</td>
                  <td>{s.ports.filter((p) => p.port_group === g.name).length}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </Card>
      </div>
    </div>
  );
}

function policy(v: Record<string, unknown> | undefined): string {
  if (!v) return '—';
  return Object.entries(v)
    .map(([k, x]) => `${k.replace(/_/g, ' ')}: ${typeof x === 'object' ? JSON.stringify(x) : String(x)}`)
    .join(', ');
}

export function PortGroupPage({ pg }: { pg: string }) {
  const s = useStore();
  const g = s.networks?.port_groups.find((x) => x.name === pg);
  if (!g) return <p class="muted">{s.loaded ? `No port group ${pg}.` : 'Loading…'}</p>;
  return (
    <div>
      <PageHeader icon="portgroup" title={g.name} subtitle={<>Port group on <a href={href({ page: 'switch', sw: g.switch })}>{g.switch}</a></>}>
        {s.session?.role === 'administrator' && <DeleteButton what={`port group ${g.name}`} path={`/port-groups/${seg(g.name)}`} after={() => go({ page: 'switch', sw: g.switch })} testid="pg-delete" />}
      </PageHeader>
      <div class="cards">
        <Card title="Policy" actions={s.session?.role === 'administrator' && <EditPortGroup key={JSON.stringify(g)} g={g} />}>
          <Facts
            rows={[
              ['VLAN', vlan(g.vlan)],
              ['Security', policy(g.security)],
              ['Traffic shaping', policy(g.shaping)],
              ['Teaming', policy(g.teaming)],
            ]}
          />
        </Card>
      </div>
      <Card title="Ports">
        <PortTable ports={s.ports.filter((p) => p.port_group === pg)} />
      </Card>
    </div>
  );
}

export function PortPage({ port }: { port: string }) {
  const s = useStore();
  const p = s.ports.find((x) => x.name === port);
  const drops = p?.stats ? Object.values(p.stats.drops).reduce((a, b) => a + b, 0) : null;
  return (
    <div>
      <PageHeader icon="port" title={port} subtitle={p ? <>Port in <a href={href({ page: 'portgroup', pg: p.port_group })}>{p.port_group}</a></> : 'Port'} />
      <div class="cards">
        <Card title="Port">
          <Facts
            rows={[
              ['VM', p?.vm ? <a href={href({ page: 'vm', vm: p.vm.name, tab: 'summary' })}>{p.vm.name}</a> : '—'],
              ['MAC', <code>{p?.mac ?? '—'}</code>],
              ['MTU', p?.mtu ?? '—'],
              ['Connected', p ? (p.connected ? 'yes' : 'no') : '—'],
            ]}
          />
        </Card>
        <Card title="Counters">
          <Facts
            rows={[
              ['To the VM', `${bytes(p?.stats?.rx_bytes)} in ${count(p?.stats?.rx_packets)} frames`],
              ['From the VM', `${bytes(p?.stats?.tx_bytes)} in ${count(p?.stats?.tx_packets)} frames`],
              ['Dropped', count(drops)],
            ]}
          />
        </Card>
      </div>
      <h3>Performance</h3>
      <Performance kind="port" object={port} />
    </div>
  );
}

/** Creates a port group on a switch (administrators). */
function AddPortGroup({ sw }: { sw: string }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState('');
  const [vlanId, setVlanId] = useState('');
  const [error, setError] = useState<string | null>(null);
  if (!open)
    return (
      <button class="small" onClick={() => setOpen(true)}>
        New port group…
      </button>
    );
  const submit = async (e: Event) => {
    e.preventDefault();
    const id = vlanId.trim() ? Number(vlanId) : null;
    if (id != null && !(Number.isInteger(id) && id >= 1 && id <= 4094)) {
      setError('The VLAN ID must be 1 to 4094, or empty for none');
      return;
    }
    const v: Vlan = id == null ? { mode: 'none' } : { mode: 'access', id };
    try {
      await call<PortGroup>('POST', '/port-groups', { name, switch: sw, vlan: v });
      setOpen(false);
      await refreshInventory();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  return (
    <form class="inline-form" onSubmit={submit}>
      <input placeholder="name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} required />
      <input placeholder="VLAN ID (optional)" value={vlanId} onInput={(e) => setVlanId((e.target as HTMLInputElement).value)} />
      <button class="primary small">Create</button>
      <button type="button" class="small" onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorBox error={error} />
    </form>
  );
}
