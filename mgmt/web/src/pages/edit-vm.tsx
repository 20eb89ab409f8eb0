// The edit-VM wizard, opened from a VM's page: name, CPU and memory,
// disks (take off, with or without their volume; add new or existing),
// network adapters (take off; add), then a review. Only the name can
// change while the VM runs. The server checks everything again; a failed
// edit changes nothing.

import { useState } from 'preact/hooks';
import { ApiError, call, seg, waitTask } from '../api';
import type { Task, Vm, VmEdit } from '../api';
import { Card, ErrorBox, Facts } from '../components/common';
import { TaskProgress } from '../components/progress';
import { GIB, MAC, NAME, NAME_RULE, VOLUME, cpuMemoryProblem, firstProblem, sectors } from '../components/wizard';
import { bytes, inFormWords } from '../format';
import { go } from '../router';
import { refreshActivity, refreshAll, useStore } from '../store';

const STEPS = ['Name', 'CPU and memory', 'Disks', 'Network', 'Ready to complete'];

/** What happens to an existing disk. */
type Fate = 'keep' | 'remove' | 'delete';

export function EditVmWizard({ vm, onClose }: { vm: Vm; onClose: () => void }) {
  const s = useStore();
  const stopped = vm.state === 'stopped';
  // What a disabled field or button says.
  const frozen = stopped ? undefined : `The VM is ${vm.state}: power it off to change this`;
  const [step, setStep] = useState(0);
  const [name, setName] = useState(vm.name);
  const [vcpus, setVcpus] = useState(String(vm.vcpus));
  const [memory, setMemory] = useState(String(vm.memory_mib));
  const [fates, setFates] = useState<Record<string, Fate>>({});
  const [newDisks, setNewDisks] = useState<{ datastore: string; gib: string; volume: string }[]>([]);
  const [dropNics, setDropNics] = useState<Record<string, boolean>>({});
  const [newNics, setNewNics] = useState<{ port_group: string; mac: string }[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [task, setTask] = useState<Task | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const groups = s.networks?.port_groups ?? [];

  const check = (i: number): string | null => {
    if (i === 0) {
      if (!NAME.test(name)) return NAME_RULE;
      if (name !== vm.name && s.vms.some((v) => v.name === name)) return `A VM named ${name} exists`;
    }
    if (i === 1) return cpuMemoryProblem(vcpus, memory, s.host);
    if (i === 2) {
      const kept = vm.disks.filter((d) => (fates[d.export_id] ?? 'keep') === 'keep').length;
      if (kept + newDisks.length > 8) return 'At most 8 disks';
      if (vm.boot.kind === 'disk' && kept + newDisks.length === 0) return 'The VM boots from its first disk: keep one';
      for (const [n, d] of newDisks.entries()) {
        if (!d.datastore) return `New disk ${n}: pick a datastore`;
        const g = Number(d.gib);
        if (d.volume) {
          if (!VOLUME.test(d.volume)) return `New disk ${n}: the volume must be NAME or FOLDER/NAME`;
        } else if (!(g > 0) || g * GIB < 2 ** 20 || g > 65536) return `New disk ${n}: the size must be from 1 MiB to 64 TiB`;
      }
    }
    if (i === 3) {
      const kept = vm.nics.filter((n) => !dropNics[n.mac]).length;
      if (kept + newNics.length > 8) return 'At most 8 network adapters';
      for (const [n, x] of newNics.entries()) {
        if (!x.port_group) return `New network adapter ${n}: pick a port group`;
        if (x.mac && !MAC.test(x.mac)) return `New network adapter ${n}: the MAC must look like 52:54:00:12:34:56`;
      }
    }
    return null;
  };

  /** Only what changes. */
  const body = (): VmEdit => {
    const b: VmEdit = {};
    if (name !== vm.name) b.name = name;
    if (Number(vcpus) !== vm.vcpus) b.vcpus = Number(vcpus);
    if (Number(memory) !== vm.memory_mib) b.memory_mib = Number(memory);
    const removed = vm.disks.filter((d) => (fates[d.export_id] ?? 'keep') !== 'keep');
    if (removed.length) b.remove_disks = removed.map((d) => ({ datastore: d.datastore, volume: d.volume, delete_volume: fates[d.export_id] === 'delete' }));
    if (newDisks.length) b.add_disks = newDisks.map((d) => (d.volume ? { datastore: d.datastore, volume: d.volume } : { datastore: d.datastore, size_bytes: sectors(d.gib) }));
    const dropped = vm.nics.filter((n) => dropNics[n.mac]);
    if (dropped.length) b.remove_nics = dropped.map((n) => ({ mac: n.mac }));
    if (newNics.length) b.add_nics = newNics.map((n) => ({ port_group: n.port_group, ...(n.mac ? { mac: n.mac } : {}) }));
    return b;
  };

  const next = () => {
    const e = check(step);
    setError(e);
    if (!e) setStep(step + 1);
  };

  const finish = async () => {
    const problem = firstProblem(4, check);
    if (problem) {
      setStep(problem[0]);
      setError(problem[1]);
      return;
    }
    const b = body();
    if (Object.keys(b).length === 0) {
      setError('Nothing changes');
      return;
    }
    setError(null);
    setSubmitting(true);
    try {
      const t = await call<Task>('PATCH', `/vms/${seg(vm.id)}`, { ...b, resource_version: vm.resource_version });
      await refreshActivity();
      await waitTask(t, setTask);
      await refreshAll();
      onClose();
      go({ page: 'vm', vm: name, tab: 'summary' });
    } catch (e) {
      setError(e instanceof ApiError ? inFormWords(e.message) : String(e));
      setTask(null);
    } finally {
      setSubmitting(false);
    }
  };

  const summary = body();
  return (
    <div class="dialog-backdrop">
      <div class="dialog wide" role="dialog" aria-modal="true" aria-label={`Edit ${vm.name}`} data-testid="edit-wizard">
        <h3>
          Edit {vm.name} — step {step + 1} of {STEPS.length}: {STEPS[step]}
        </h3>
        {!stopped && <p class="muted">The VM is {vm.state}: only its name can change. Power it off to change its hardware.</p>}
        {step === 0 && (
          <Card title="Name">
            <label>
              Name
              <input value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} data-testid="edit-name" />
            </label>
          </Card>
        )}
        {step === 1 && (
          <Card title="CPU and memory">
            <label>
              vCPUs
              <input type="number" min="1" max="64" value={vcpus} disabled={!stopped} title={frozen} onInput={(e) => setVcpus((e.target as HTMLInputElement).value)} data-testid="edit-vcpus" />
            </label>
            <label>
              Memory (MiB)
              <input type="number" min="128" value={memory} disabled={!stopped} title={frozen} onInput={(e) => setMemory((e.target as HTMLInputElement).value)} data-testid="edit-memory" />
            </label>
          </Card>
        )}
        {step === 2 && (
          <Card
            title="Disks"
            actions={
              <button class="small" disabled={!stopped} title={frozen} onClick={() => setNewDisks([...newDisks, { datastore: s.datastores[0]?.name ?? '', gib: '1', volume: '' }])} data-testid="edit-add-disk">
                Add disk
              </button>
            }
          >
            {vm.disks.map((d, i) => (
              <div class="row" key={d.export_id} data-testid={`edit-disk-${i}`}>
                <span>
                  Disk {i}: {d.datastore}/{d.volume} ({bytes(d.size_bytes)})
                </span>
                <select value={fates[d.export_id] ?? 'keep'} disabled={!stopped} title={frozen} onChange={(e) => setFates({ ...fates, [d.export_id]: (e.target as HTMLSelectElement).value as Fate })} aria-label={`Disk ${i} fate`}>
                  <option value="keep">keep</option>
                  <option value="remove">take off (the volume stays)</option>
                  <option value="delete">take off and delete the volume</option>
                </select>
              </div>
            ))}
            {newDisks.map((d, i) => (
              <div class="row" key={`new-${i}`} data-testid={`edit-new-disk-${i}`}>
                <span>New disk {i}</span>
                <select value={d.datastore} onChange={(e) => setNewDisks(newDisks.map((x, j) => (j === i ? { ...x, datastore: (e.target as HTMLSelectElement).value } : x)))} aria-label={`New disk ${i} datastore`}>
                  {s.datastores.map((ds) => (
                    <option key={ds.name} value={ds.name}>
                      {ds.name} ({bytes(ds.free_bytes)} free)
                    </option>
                  ))}
                </select>
                <input type="number" min="0.001" step="any" value={d.gib} disabled={!!d.volume} title={d.volume ? 'An existing volume keeps its size' : undefined} onInput={(e) => setNewDisks(newDisks.map((x, j) => (j === i ? { ...x, gib: (e.target as HTMLInputElement).value } : x)))} aria-label={`New disk ${i} size in GiB`} />
                <span>GiB, or an existing volume</span>
                <input placeholder="imports/disk1" value={d.volume} onInput={(e) => setNewDisks(newDisks.map((x, j) => (j === i ? { ...x, volume: (e.target as HTMLInputElement).value.trim() } : x)))} aria-label={`New disk ${i} existing volume`} />
                <button class="small" onClick={() => setNewDisks(newDisks.filter((_, j) => j !== i))}>
                  Remove
                </button>
              </div>
            ))}
          </Card>
        )}
        {step === 3 && (
          <Card
            title="Network adapters"
            actions={
              <button class="small" disabled={!stopped} title={frozen} onClick={() => setNewNics([...newNics, { port_group: groups[0]?.name ?? '', mac: '' }])} data-testid="edit-add-nic">
                Add network adapter
              </button>
            }
          >
            {vm.nics.map((n, i) => (
              <div class="row" key={n.port} data-testid={`edit-nic-${i}`}>
                <span>
                  NIC {i}: {n.port_group} <code>{n.mac}</code>
                </span>
                <label class="check">
                  <input type="checkbox" checked={!!dropNics[n.mac]} disabled={!stopped} title={frozen} onChange={(e) => setDropNics({ ...dropNics, [n.mac]: (e.target as HTMLInputElement).checked })} aria-label={`Take NIC ${i} off`} />
                  take off
                </label>
              </div>
            ))}
            {newNics.map((n, i) => (
              <div class="row" key={`new-${i}`} data-testid={`edit-new-nic-${i}`}>
                <span>New NIC {i}</span>
                <select value={n.port_group} onChange={(e) => setNewNics(newNics.map((x, j) => (j === i ? { ...x, port_group: (e.target as HTMLSelectElement).value } : x)))} aria-label={`New NIC ${i} port group`}>
                  {groups.map((g) => (
                    <option key={g.name} value={g.name}>
                      {g.name} ({g.switch})
                    </option>
                  ))}
                </select>
                <input placeholder="MAC (generated)" value={n.mac} onInput={(e) => setNewNics(newNics.map((x, j) => (j === i ? { ...x, mac: (e.target as HTMLInputElement).value } : x)))} aria-label={`New NIC ${i} MAC`} />
                <button class="small" onClick={() => setNewNics(newNics.filter((_, j) => j !== i))}>
                  Remove
                </button>
              </div>
            ))}
          </Card>
        )}
        {step === 4 && (
          <Card title="Ready to complete">
            <Facts
              rows={[
                ['Name', summary.name ?? `${vm.name} (unchanged)`],
                ['vCPUs', summary.vcpus ?? `${vm.vcpus} (unchanged)`],
                ['Memory', summary.memory_mib ? `${summary.memory_mib} MiB` : `${vm.memory_mib} MiB (unchanged)`],
                ['Disks added', summary.add_disks?.map((d) => ('volume' in d && d.volume ? `${d.datastore}/${d.volume}` : `${bytes(d.size_bytes ?? 0)} on ${d.datastore}`)).join(', ') || 'none'],
                ['Disks taken off', summary.remove_disks?.map((d) => `${d.datastore}/${d.volume}${d.delete_volume ? ' (deleted)' : ''}`).join(', ') || 'none'],
                ['NICs added', summary.add_nics?.map((n) => `${n.port_group}${n.mac ? ` (${n.mac})` : ''}`).join(', ') || 'none'],
                ['NICs taken off', summary.remove_nics?.map((n) => n.mac).join(', ') || 'none'],
              ]}
            />
          </Card>
        )}
        <ErrorBox error={error} />
        {task && <TaskProgress task={task} />}
        <div class="dialog-actions">
          <button onClick={onClose} disabled={submitting}>
            Cancel
          </button>
          <button onClick={() => (setError(null), setStep(step - 1))} disabled={step === 0 || submitting} title={step === 0 ? 'This is the first step' : submitting ? 'Saving…' : undefined}>
            Back
          </button>
          {step < STEPS.length - 1 ? (
            <button class="primary" onClick={next} data-testid="edit-next">
              Next
            </button>
          ) : (
            <button class="primary" onClick={finish} disabled={submitting} data-testid="edit-finish">
              {submitting ? 'Saving…' : 'Finish'}
            </button>
          )}
        </div>
      </div>
    </div>
  );
}
