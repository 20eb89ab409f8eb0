// Forms that change networks and datastores (administrators): new and
// deleted switches, port group policy and deletion, new, grown and
// deleted volumes, an unregistered datastore. The server checks each
// again and refuses (409) to remove what VMs still use; its message is
// shown next to the form.

import { useState } from 'preact/hooks';
import { ApiError, call, seg } from '../api';
import type { Nic, Page, PortGroup, Vlan, Volume } from '../api';
import { ErrorBox, useFetch } from '../components/common';
import { go } from '../router';
import { refreshInventory } from '../store';
import { bytes, inFormWords, parseVlans, vlanRanges } from '../format';

const GIB = 1024 ** 3;

function message(e: unknown): string {
  return e instanceof ApiError ? inFormWords(e.message) : String(e);
}

/** Runs a change; on success refreshes the inventory and calls `after`. */
async function change(setError: (e: string | null) => void, run: () => Promise<unknown>, after?: () => void) {
  setError(null);
  try {
    await run();
    await refreshInventory();
    after?.();
  } catch (e) {
    setError(message(e));
  }
}

const text = (value: string, set: (v: string) => void, props: Record<string, unknown> = {}) => (
  <input value={value} onInput={(e) => set((e.target as HTMLInputElement).value)} {...props} />
);

/** One uplink of a new switch, as the form holds it. */
type UplinkRow = { name: string; type: 'af_packet' | 'tap'; iface: string };

/** A new switch with its uplinks: an af_packet uplink on one of the host's
 * interfaces (listed, physical ones first), or a TAP device it makes. */
export function NewSwitch() {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState('');
  const [rows, setRows] = useState<UplinkRow[]>([]);
  const [error, setError] = useState<string | null>(null);
  const nics = useFetch<Page<Nic>>(open ? '/host/nics?limit=500' : null);
  if (!open)
    return (
      <button class="small" onClick={() => setOpen(true)} data-testid="switch-new">
        New switch…
      </button>
    );
  const host = nics.data?.items ?? [];
  const set = (i: number, change: Partial<UplinkRow>) => setRows(rows.map((r, j) => (j === i ? { ...r, ...change } : r)));
  const add = () => setRows([...rows, { name: `u${rows.length}`, type: 'af_packet', iface: host[0]?.name ?? '' }]);
  const submit = (e: Event) => {
    e.preventDefault();
    const bad = rows.findIndex((r) => !r.name.trim() || !r.iface.trim());
    if (bad >= 0) return setError(`Uplink ${bad + 1}: give it a name and an interface`);
    const body = { name, uplinks: rows.map((r) => ({ name: r.name.trim(), type: r.type, interface: r.iface.trim() })) };
    change(setError, () => call('POST', '/switches', body), () => {
      setOpen(false);
      go({ page: 'switch', sw: name });
    });
  };
  const nicLabel = (n: Nic) =>
    `${n.name} (${n.physical ? 'NIC' : 'virtual'}, ${n.state}${n.speed_mbps ? `, ${n.speed_mbps} Mbit/s` : ''}${n.mac ? `, ${n.mac}` : ''})`;
  return (
    <form class="inline-form" onSubmit={submit} data-testid="switch-form">
      {text(name, setName, { placeholder: 'name', required: true, 'data-testid': 'switch-name' })}
      {rows.map((r, i) => (
        <span class="uplink-row" key={i} data-testid={`uplink-${i}`}>
          {text(r.name, (v) => set(i, { name: v }), { 'aria-label': `Uplink ${i + 1} name`, size: 6 })}
          <select value={r.type} aria-label={`Uplink ${i + 1} type`} onChange={(e) => set(i, { type: (e.target as HTMLSelectElement).value as UplinkRow['type'], iface: '' })}>
            <option value="af_packet">host interface (af_packet)</option>
            <option value="tap">new TAP device</option>
          </select>
          {r.type === 'af_packet' ? (
            <select value={r.iface} aria-label={`Uplink ${i + 1} interface`} onChange={(e) => set(i, { iface: (e.target as HTMLSelectElement).value })}>
              <option value="">choose…</option>
              {host.map((n) => (
                <option value={n.name}>{nicLabel(n)}</option>
              ))}
            </select>
          ) : (
            text(r.iface, (v) => set(i, { iface: v }), { 'aria-label': `Uplink ${i + 1} TAP name`, placeholder: 'sftap0', size: 8 })
          )}
          <button type="button" class="small" onClick={() => setRows(rows.filter((_, j) => j !== i))}>
            Remove
          </button>
        </span>
      ))}
      <button type="button" class="small" onClick={add} data-testid="uplink-add" disabled={!nics.data && !nics.error} title={!nics.data && !nics.error ? "Reading the host's interfaces…" : undefined}>
        Add uplink
      </button>
      <button class="primary small">Create</button>
      <button type="button" class="small" onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorBox error={error ?? nics.error ?? null} />
    </form>
  );
}

export function DeleteButton({ what, path, after, testid }: { what: string; path: string; after: () => void; testid: string }) {
  const [error, setError] = useState<string | null>(null);
  return (
    <>
      <button
        class="danger small"
        data-testid={testid}
        onClick={() => {
          if (window.confirm(`Delete ${what}?`)) change(setError, () => call('DELETE', path), after);
        }}
      >
        Delete…
      </button>
      <ErrorBox error={error} />
    </>
  );
}

const numbers = (list: string) =>
  list
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

/** A shaping rule typed as AVERAGE_BPS:PEAK_BPS:BURST_BYTES, or empty for none. */
function rule(spec: string): Record<string, number> | null | string {
  if (!spec.trim()) return null;
  const p = spec.split(':').map(Number);
  if (p.length !== 3 || p.some((x) => !Number.isInteger(x) || x < 1)) return 'Shaping must be AVERAGE_BPS:PEAK_BPS:BURST_BYTES (whole numbers), or empty';
  return { average_bps: p[0], peak_bps: p[1], burst_bytes: p[2] };
}

function ruleText(r: unknown): string {
  const x = r as { average_bps?: number; peak_bps?: number; burst_bytes?: number } | undefined;
  return x?.average_bps ? `${x.average_bps}:${x.peak_bps}:${x.burst_bytes}` : '';
}

/** A port group's policy: VLAN, security, shaping, teaming. */
export function EditPortGroup({ g }: { g: PortGroup }) {
  const sec = (g.security ?? {}) as Record<string, boolean>;
  const shp = (g.shaping ?? {}) as Record<string, unknown>;
  const team = (g.teaming ?? {}) as { policy?: string; active?: string[]; standby?: string[] };
  const [open, setOpen] = useState(false);
  const [mode, setMode] = useState<Vlan['mode']>(g.vlan?.mode ?? 'none');
  const [vlanId, setVlanId] = useState(String(g.vlan?.id ?? ''));
  const [allowed, setAllowed] = useState(vlanRanges(g.vlan?.allowed ?? []));
  const [security, setSecurity] = useState({ promiscuous: !!sec.promiscuous, mac_changes: !!sec.mac_changes, forged_transmits: !!sec.forged_transmits });
  const [ingress, setIngress] = useState(ruleText(shp.ingress));
  const [egress, setEgress] = useState(ruleText(shp.egress));
  const [policy, setPolicy] = useState(team.policy ?? 'originating_port');
  const [active, setActive] = useState((team.active ?? []).join(','));
  const [standby, setStandby] = useState((team.standby ?? []).join(','));
  const [error, setError] = useState<string | null>(null);
  if (!open)
    return (
      <button class="small" onClick={() => setOpen(true)} data-testid="pg-edit">
        Edit policy…
      </button>
    );
  const submit = (e: Event) => {
    e.preventDefault();
    let vlan: Vlan;
    if (mode === 'access') {
      const id = Number(vlanId);
      if (!Number.isInteger(id) || id < 1 || id > 4094) return setError('The VLAN ID must be 1 to 4094');
      vlan = { mode, id };
    } else if (mode === 'trunk') {
      const ids = parseVlans(allowed);
      if (typeof ids === 'string') return setError(ids);
      vlan = { mode, allowed: ids };
    } else vlan = { mode: 'none' };
    const i = rule(ingress);
    const o = rule(egress);
    if (typeof i === 'string') return setError(i);
    if (typeof o === 'string') return setError(o);
    const body = {
      vlan,
      security,
      shaping: { ingress: i, egress: o },
      teaming: { policy, active: numbers(active), standby: numbers(standby) },
    };
    change(setError, () => call('PATCH', `/port-groups/${seg(g.name)}`, body), () => setOpen(false));
  };
  const flag = (k: keyof typeof security, label: string) => (
    <label class="check">
      <input type="checkbox" checked={security[k]} onChange={(e) => setSecurity({ ...security, [k]: (e.target as HTMLInputElement).checked })} data-testid={`pg-${k}`} />
      {label}
    </label>
  );
  return (
    <form class="stack-form" onSubmit={submit} data-testid="pg-form">
      <label>
        VLAN
        <select value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value as Vlan['mode'])} data-testid="pg-vlan-mode">
          <option value="none">none</option>
          <option value="access">access</option>
          <option value="trunk">trunk</option>
        </select>
      </label>
      {mode === 'access' && <label>VLAN ID {text(vlanId, setVlanId, { 'data-testid': 'pg-vlan-id' })}</label>}
      {mode === 'trunk' && <label>Allowed VLANs {text(allowed, setAllowed, { placeholder: '10-20,30', 'data-testid': 'pg-vlan-allowed' })}</label>}
      <fieldset>
        <legend>Security</legend>
        {flag('promiscuous', 'Promiscuous mode')}
        {flag('mac_changes', 'MAC address changes')}
        {flag('forged_transmits', 'Forged transmits')}
      </fieldset>
      <label>Ingress shaping (from VMs) {text(ingress, setIngress, { placeholder: 'average_bps:peak_bps:burst_bytes' })}</label>
      <label>Egress shaping (to VMs) {text(egress, setEgress, { placeholder: 'average_bps:peak_bps:burst_bytes' })}</label>
      <label>
        Load balancing
        <select value={policy} onChange={(e) => setPolicy((e.target as HTMLSelectElement).value)}>
          <option value="originating_port">by originating port</option>
          <option value="source_mac">by source MAC hash</option>
          <option value="ip_hash">by IP hash</option>
          <option value="failover_order">explicit failover order</option>
        </select>
      </label>
      <label>Active uplinks, in order {text(active, setActive, { placeholder: 'all' })}</label>
      <label>Standby uplinks {text(standby, setStandby)}</label>
      <div class="dialog-actions">
        <button type="button" class="small" onClick={() => setOpen(false)}>
          Cancel
        </button>
        <button class="primary small" data-testid="pg-save">
          Save
        </button>
      </div>
      <ErrorBox error={error} />
    </form>
  );
}

/** A new thin volume on a datastore; one larger than the datastore's free
 * space (`free`, when known) is made only once the user says so. */
export function NewVolume({ ds, free, onDone }: { ds: string; free: number | null; onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState('');
  const [gib, setGib] = useState('1');
  const [overcommit, setOvercommit] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (!open)
    return (
      <button class="small" onClick={() => setOpen(true)} data-testid="volume-new">
        New volume…
      </button>
    );
  const beyondFree = (size: number) => free !== null && size > free;
  const submit = (e: Event) => {
    e.preventDefault();
    const size = Math.round((Number(gib) * GIB) / 512) * 512;
    if (!(size >= 2 ** 20)) return setError('The size must be at least 1 MiB');
    if (beyondFree(size) && !overcommit) return setError('Tick "Larger than the free space" to make it anyway');
    change(setError, () => call<Volume>('POST', `/datastores/${seg(ds)}/volumes`, { name, size_bytes: size }), () => {
      setOpen(false);
      onDone();
    });
  };
  return (
    <form class="inline-form" onSubmit={submit}>
      {text(name, setName, { placeholder: 'NAME or FOLDER/NAME', required: true, 'data-testid': 'volume-name' })}
      <input type="number" min="0.001" step="any" value={gib} onInput={(e) => setGib((e.target as HTMLInputElement).value)} aria-label="Size in GiB" />
      <span>GiB</span>
      {beyondFree(Number(gib) * GIB) && (
        <p class="warning small" data-testid="volume-overcommit">
          {gib} GiB is more than the datastore's free space ({bytes(free ?? 0)}): the volume is thin, but once the datastore fills, writes to it fail and
          its VM is paused.{' '}
          <label class="check">
            <input type="checkbox" checked={overcommit} onChange={(e) => setOvercommit((e.target as HTMLInputElement).checked)} />
            Larger than the free space
          </label>
        </p>
      )}
      <button class="primary small">Create</button>
      <button type="button" class="small" onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorBox error={error} />
    </form>
  );
}

/** Grows a volume; a VM's disk only while the VM is stopped. */
export function GrowVolume({ ds, v, onDone }: { ds: string; v: Volume; onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const [gib, setGib] = useState(String(Math.ceil((v.size * 2) / GIB)));
  const [error, setError] = useState<string | null>(null);
  if (!open)
    return (
      <button class="small" onClick={() => setOpen(true)}>
        Grow…
      </button>
    );
  const submit = (e: Event) => {
    e.preventDefault();
    const size = Math.round((Number(gib) * GIB) / 512) * 512;
    if (!(size > v.size)) return setError('Volumes only grow: give a larger size');
    change(setError, () => call('PATCH', `/datastores/${seg(ds)}/volumes/${seg(v.name)}`, { size_bytes: size }), () => {
      setOpen(false);
      onDone();
    });
  };
  return (
    <form class="inline-form" onSubmit={submit}>
      <input type="number" min="0.001" step="any" value={gib} onInput={(e) => setGib((e.target as HTMLInputElement).value)} aria-label="New size in GiB" />
      <span>GiB</span>
      <button class="primary small">Grow</button>
      <button type="button" class="small" onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorBox error={error} />
    </form>
  );
}
