// A VM: its summary, power actions, serial console and charts.

import { useState } from 'preact/hooks';
import { ApiError, call, seg, waitTask } from '../api';
import type { Task, Vm } from '../api';
import { Card, ErrorBox, Facts, PageHeader } from '../components/common';
import { StateBadge, TaskProgress } from '../components/progress';
import { GraphicalConsole } from '../components/display';
import { SerialConsole } from '../components/terminal';
import { bytes, time } from '../format';
import { go, href } from '../router';
import type { Route } from '../router';
import { refreshActivity, refreshAll, runningTasks, useStore } from '../store';
import { Performance } from './charts';
import { EditVmWizard } from './edit-vm';
import { CONFIRMATIONS, ConfirmDialog, PowerIcon, whyNot } from '../components/power';
import type { PowerAction } from '../components/power';

type Tab = Extract<Route, { page: 'vm' }>['tab'];

function Summary({ vm }: { vm: Vm }) {
  const s = useStore();
  const host = s.host;
  return (
    <div>
      <div class="cards">
        <Card title="Virtual machine">
          <Facts
            rows={[
              ['State', <StateBadge state={vm.state} />],
              ['Host', <span data-testid="vm-host">{vm.host}</span>],
              ['vCPUs', vm.vcpus],
              ['Memory', bytes(vm.memory_mib * 1024 * 1024)],
              ['Driver', <span data-testid="vm-driver">{vm.driver === 'qemu' && host ? `qemu (${host.accel})` : vm.driver}</span>],
              ['Why this driver', vm.driver_reason || '—'],
              [vm.driver === 'qemu' ? 'QEMU pid' : 'sfera-vmm pid', vm.pid ?? '—'],
              ['Created', time(vm.created_at)],
            ]}
          />
        </Card>
        <Card title="Boot">
          <Facts
            rows={
              vm.boot.kind === 'kernel'
                ? [
                    ['Kernel', <code>{vm.boot.kernel}</code>],
                    ['Initrd', <code>{vm.boot.initrd ?? '—'}</code>],
                    ['Command line', <code>{vm.boot.cmdline}</code>],
                  ]
                : vm.boot.kind === 'iso'
                  ? [['From', <>the ISO <code>{vm.boot.iso}</code> as a CD-ROM, through firmware</>]]
                  : [['From', 'the first disk, through firmware']]
            }
          />
        </Card>
      </div>
      <Card title="Disks">
        {vm.disks.length === 0 ? (
          <p class="muted">No disks.</p>
        ) : (
          <table class="grid" data-testid="vm-disks">
            <thead>
              <tr>
                <th>#</th>
                <th>Volume</th>
                <th>Datastore</th>
                <th>Size</th>
                <th>Export</th>
              </tr>
            </thead>
            <tbody>
              {vm.disks.map((d, i) => (
                <tr key={d.export_id}>
                  <td>{i}</td>
                  <td>
                    <a href={href({ page: 'volume', ds: d.datastore, volume: d.volume })}>{d.volume}</a>
                  </td>
                  <td>
                    <a href={href({ page: 'datastore', ds: d.datastore })}>{d.datastore}</a>
                  </td>
                  <td>{bytes(d.size_bytes)}</td>
                  <td>
                    <code>{d.export_id}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
      <Card title="Network adapters">
        {vm.nics.length === 0 ? (
          <p class="muted">No network adapters.</p>
        ) : (
          <table class="grid" data-testid="vm-nics">
            <thead>
              <tr>
                <th>#</th>
                <th>Port group</th>
                <th>MAC</th>
                <th>Port</th>
                <th>Connected</th>
              </tr>
            </thead>
            <tbody>
              {vm.nics.map((n, i) => (
                <tr key={n.port}>
                  <td>{i}</td>
                  <td>
                    <a href={href({ page: 'portgroup', pg: n.port_group })}>{n.port_group}</a>
                  </td>
                  <td>
                    <code>{n.mac}</code>
                  </td>
                  <td>
                    <a href={href({ page: 'port', port: n.port })}>{n.port}</a>
                  </td>
                  <td>{s.ports.find((p) => p.name === n.port)?.connected ? 'yes' : 'no'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
    </div>
  );
}

/** The console tab: the serial console, or the screen for VMs that have one. */
function Consoles({ vm, live }: { vm: Vm; live: boolean }) {
  const [kind, setKind] = useState<'serial' | 'graphical'>('serial');
  // QEMU gives a VM a VGA card; sfera-vmm has no framebuffer.
  const hasScreen = vm.driver === 'qemu';
  return (
    <div>
      <div class="console-switch" role="radiogroup" aria-label="Console">
        <button class={kind === 'serial' ? 'small active' : 'small'} aria-pressed={kind === 'serial'} onClick={() => setKind('serial')} data-testid="console-serial">
          Serial
        </button>
        <button
          class={kind === 'graphical' ? 'small active' : 'small'}
          aria-pressed={kind === 'graphical'}
          disabled={!hasScreen}
          onClick={() => setKind('graphical')}
          data-testid="console-graphical"
        >
          Graphical
        </button>
        {!hasScreen && (
          <span class="muted" data-testid="no-display">
            This VM runs under {vm.driver}, which has no framebuffer: it has a serial console only.
          </span>
        )}
      </div>
      {kind === 'graphical' && hasScreen ? <GraphicalConsole vm={vm.id} running={live} /> : <SerialConsole vm={vm.id} running={live} />}
    </div>
  );
}

function DeleteDialog({ vm, onCancel, onDelete }: { vm: Vm; onCancel: () => void; onDelete: (disks: boolean) => void }) {
  const [disks, setDisks] = useState(true);
  return (
    <div class="dialog-backdrop">
      <div class="dialog" role="dialog" aria-modal="true" aria-label={`Delete ${vm.name}`}>
        <h3>Delete {vm.name}?</h3>
        <p>The VM leaves the inventory; its NICs' ports and its disks' exports are removed. This cannot be undone.</p>
        <label class="check">
          <input type="checkbox" checked={disks} onChange={(e) => setDisks((e.target as HTMLInputElement).checked)} data-testid="delete-disks" />
          Delete its disks too ({vm.disks.map((d) => `${d.datastore}/${d.volume}`).join(', ') || 'none'})
        </label>
        <p class="muted" data-testid="delete-lost">
          {disks ? 'Everything on its disks is lost.' : 'Its disks stay on their datastores as volumes, which a new VM can use.'}
        </p>
        <div class="dialog-actions">
          <button onClick={onCancel}>Cancel</button>
          <button class="danger" onClick={() => onDelete(disks)} data-testid="confirm-delete">
            Delete
          </button>
        </div>
      </div>
    </div>
  );
}

export function VmPage({ name, tab }: { name: string; tab: Tab }) {
  const s = useStore();
  const vm = s.vms.find((v) => v.name === name || v.id === name);
  const [current, setCurrent] = useState<Task | null>(null);
  const [pending, setPending] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [editing, setEditing] = useState(false);
  const [confirm, setConfirm] = useState<PowerAction | null>(null);
  if (!vm) return <p class="muted">{s.loaded ? `No VM ${name}.` : 'Loading…'}</p>;
  const admin = s.session?.role === 'administrator';
  const running = current && (current.state === 'running' || current.state === 'queued') ? current : runningTasks(vm.id)[0];
  const busy = pending || !!running;

  const act = async (method: string, path: string, after?: () => void) => {
    setError(null);
    setPending(true);
    try {
      const task = await call<Task>(method, path);
      await refreshActivity();
      await waitTask(task, setCurrent);
      after?.();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setPending(false);
      setCurrent(null);
      refreshAll();
    }
  };
  const power = (action: PowerAction) => act('POST', `/vms/${seg(vm.id)}/power/${action}`);
  const live = vm.state === 'running' || vm.state === 'paused';
  // One button per action: disabled with the reason as its title, and
  // asking first when the action loses something.
  const powerButton = (action: PowerAction, label: string, title?: string, primary?: boolean) => {
    const why = whyNot(action, vm, busy);
    const testid = action === 'on' ? 'power-on' : action === 'off' ? 'power-off' : action;
    return (
      <button
        class={primary ? 'primary' : undefined}
        disabled={!!why}
        title={why ?? title ?? label}
        onClick={() => (CONFIRMATIONS[action] ? setConfirm(action) : power(action))}
        data-testid={testid}
      >
        <PowerIcon action={action} /> {label}
      </button>
    );
  };
  const asked = confirm ? CONFIRMATIONS[confirm] : undefined;
  const tabs: [Tab, string][] = [
    ['summary', 'Summary'],
    ['console', 'Console'],
    ['performance', 'Performance'],
  ];
  return (
    <div>
      <PageHeader icon={`vm-${vm.state}`} title={vm.name} subtitle={<>Virtual machine · <StateBadge state={vm.state} /></>}>
        {admin && (
          <>
            {powerButton('on', 'Power on', undefined, true)}
            {powerButton('shutdown', 'Shut down guest', 'Ask the guest to shut down (ACPI power button)')}
            {powerButton('reboot', 'Restart guest', 'Ask the guest to shut down, then power it on again')}
            {powerButton('off', 'Power off…', 'Stop at once, like pulling the power cord')}
            {vm.state === 'paused' ? powerButton('resume', 'Resume') : powerButton('pause', 'Pause', 'Stop the vCPUs; memory and devices stay')}
            {powerButton('reset', 'Reset…', 'Restart at once, like the reset button')}
            <button disabled={!!whyNot('edit', vm, busy)} title={whyNot('edit', vm, busy) ?? 'Rename the VM; change its hardware while it is stopped'} onClick={() => setEditing(true)} data-testid="edit">
              ✎ Edit…
            </button>
            <button class="danger" disabled={!!whyNot('delete', vm, busy)} title={whyNot('delete', vm, busy) ?? 'Delete the VM, and its disks if you choose'} onClick={() => setConfirmDelete(true)} data-testid="delete">
              Delete…
            </button>
          </>
        )}
      </PageHeader>
      {running ? <TaskProgress task={running} /> : pending ? <div class="progress-placeholder">Starting…</div> : null}
      <ErrorBox error={error} />
      <nav class="tabs" role="tablist">
        {tabs.map(([t, label]) => (
          <a key={t} role="tab" aria-selected={tab === t} class={tab === t ? 'active' : ''} href={href({ page: 'vm', vm: vm.name, tab: t })} data-testid={`tab-${t}`}>
            {label}
          </a>
        ))}
      </nav>
      {tab === 'summary' && <Summary vm={vm} />}
      {tab === 'console' && (admin ? <Consoles vm={vm} live={live} /> : <p class="muted">The console is for administrators.</p>)}
      {tab === 'performance' && <Performance kind="vm" object={vm.id} />}
      {editing && <EditVmWizard vm={vm} onClose={() => setEditing(false)} />}
      {confirm && asked && (
        <ConfirmDialog
          title={`${asked.title} ${vm.name}?`}
          button={asked.button}
          onCancel={() => setConfirm(null)}
          onConfirm={() => {
            setConfirm(null);
            power(confirm);
          }}
        >
          <p data-testid="confirm-lost">{asked.lost}</p>
        </ConfirmDialog>
      )}
      {confirmDelete && (
        <DeleteDialog
          vm={vm}
          onCancel={() => setConfirmDelete(false)}
          onDelete={(disks) => {
            setConfirmDelete(false);
            act('DELETE', `/vms/${seg(vm.id)}?disks=${disks}`, () => go({ page: 'host' }));
          }}
        />
      )}
    </div>
  );
}
