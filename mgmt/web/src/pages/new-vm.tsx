// The create-VM wizard: name and boot source (a template or a kernel of
// your own), CPUs and memory, disks on datastores, NICs on port groups,
// then a review. The server checks everything again and its message is
// shown where the step it concerns can fix it.

import { useEffect, useState } from 'preact/hooks';
import { ApiError, call, get, waitTask } from '../api';
import type { Driver, Page, Task, Template, VmCreate } from '../api';
import { Card, ErrorBox, Facts, PageHeader } from '../components/common';
import { TaskProgress } from '../components/progress';
import { GIB, MAC, NAME, NAME_RULE, VOLUME, cpuMemoryProblem, firstProblem, sectors } from '../components/wizard';
import { bytes, inFormWords } from '../format';
import { go } from '../router';
import { refreshActivity, refreshAll, useStore } from '../store';

const STEPS = ['Name and boot source', 'CPU and memory', 'Disks', 'Network', 'Ready to complete'];

interface Disk {
  datastore: string;
  gib: string;
  /** An existing volume instead of a new disk. */
  volume: string;
}
interface Nic {
  port_group: string;
  mac: string;
}

export function NewVmPage() {
  const s = useStore();
  const [step, setStep] = useState(0);
  const [templates, setTemplates] = useState<Template[]>([]);
  const [name, setName] = useState('');
  const [source, setSource] = useState<'template' | 'custom' | 'disk' | 'iso'>('template');
  const [iso, setIso] = useState('');
  const [template, setTemplate] = useState('tiny-linux');
  const [kernel, setKernel] = useState('');
  const [initrd, setInitrd] = useState('');
  const [cmdline, setCmdline] = useState('console=ttyS0');
  const [vcpus, setVcpus] = useState('1');
  const [driver, setDriver] = useState<'default' | Driver>('default');
  const [memory, setMemory] = useState('512');
  const [disks, setDisks] = useState<Disk[]>([]);
  const [nics, setNics] = useState<Nic[]>([]);
  const [powerOn, setPowerOn] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [task, setTask] = useState<Task | null>(null);
  const [submitting, setSubmitting] = useState(false);

  useEffect(() => {
    get<Page<Template>>('/templates').then((p) => {
      setTemplates(p.items);
      const t = p.items.find((x) => x.name === 'tiny-linux') ?? p.items[0];
      if (t) {
        setTemplate(t.name);
        setVcpus(String(t.vcpus));
        setMemory(String(t.memory_mib));
      } else {
        setSource('custom');
      }
    }, (e) => setError(String(e)));
  }, []);
  // Defaults once the inventory is known: one 4 GiB disk, one NIC.
  useEffect(() => {
    if (disks.length === 0 && s.datastores[0]) setDisks([{ datastore: s.datastores[0].name, gib: '4', volume: '' }]);
    if (nics.length === 0 && s.networks?.port_groups[0]) setNics([{ port_group: s.networks.port_groups[0].name, mac: '' }]);
  }, [s.datastores.length, s.networks?.port_groups.length]);

  if (s.session?.role !== 'administrator') return <p class="muted">Creating VMs is for administrators.</p>;

  /** What is wrong with a step, if anything. */
  const check = (i: number): string | null => {
    if (i === 0) {
      if (!NAME.test(name)) return NAME_RULE;
      if (s.vms.some((v) => v.name === name)) return `A VM named ${name} exists`;
      if (source === 'template' && !templates.find((t) => t.name === template)?.available) return `The template ${template} is not available (make guest-image builds it)`;
      if (source === 'custom' && !kernel.startsWith('/')) return 'The kernel must be an absolute path on the host';
      if (source === 'custom' && initrd && !initrd.startsWith('/')) return 'The initrd must be an absolute path on the host';
      if (source === 'iso' && !iso.startsWith('/')) return 'The ISO must be an absolute path on the host';
    }
    if (i === 1) return cpuMemoryProblem(vcpus, memory, s.host);
    if (i === 2) {
      if (disks.length > 8) return 'At most 8 disks';
      if (source === 'disk' && disks.length === 0) return 'Booting from the first disk needs a disk (an existing volume, say)';
      for (const [n, d] of disks.entries()) {
        const g = Number(d.gib);
        if (!d.datastore) return `Disk ${n}: pick a datastore`;
        if (d.volume) {
          if (!VOLUME.test(d.volume)) return `Disk ${n}: the volume must be NAME or FOLDER/NAME`;
        } else if (!(g > 0) || g * GIB < 2 ** 20 || g > 65536) return `Disk ${n}: the size must be from 1 MiB to 64 TiB`;
      }
    }
    if (i === 3) {
      if (nics.length > 8) return 'At most 8 network adapters';
      for (const [n, x] of nics.entries()) {
        if (!x.port_group) return `Network adapter ${n}: pick a port group`;
        if (x.mac && !MAC.test(x.mac)) return `Network adapter ${n}: the MAC must look like 52:54:00:12:34:56`;
      }
    }
    return null;
  };

  const body = (): VmCreate => ({
    name,
    ...(source === 'template'
      ? { template }
      : source === 'disk'
        ? { boot: { kind: 'disk' as const } }
        : source === 'iso'
          ? { boot: { kind: 'iso' as const, iso } }
          : { boot: { kind: 'kernel' as const, kernel, ...(initrd ? { initrd } : {}), cmdline } }),
    vcpus: Number(vcpus),
    memory_mib: Number(memory),
    // Whole 512-byte sectors.
    disks: disks.map((d) => (d.volume ? { datastore: d.datastore, volume: d.volume } : { datastore: d.datastore, size_bytes: sectors(d.gib) })),
    nics: nics.map((n) => ({ port_group: n.port_group, ...(n.mac ? { mac: n.mac } : {}) })),
    power_on: powerOn,
    driver: driver === 'default' ? null : driver,
  });

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
    setError(null);
    setSubmitting(true);
    try {
      const t = await call<Task>('POST', '/vms', body());
      await refreshActivity();
      await waitTask(t, setTask);
      await refreshAll();
      go({ page: 'vm', vm: name, tab: 'summary' });
    } catch (e) {
      setError(e instanceof ApiError ? inFormWords(e.message) : String(e));
      setTask(null);
    } finally {
      setSubmitting(false);
    }
  };

  const input = (value: string, set: (v: string) => void, props: Record<string, unknown> = {}) => (
    <input value={value} onInput={(e) => set((e.target as HTMLInputElement).value)} {...props} />
  );
  const groups = s.networks?.port_groups ?? [];

  return (
    <div>
      <PageHeader icon="add" title="New virtual machine" subtitle={`Step ${step + 1} of ${STEPS.length}: ${STEPS[step]}`} />
      <div class="wizard">
        <ol class="steps">
          {STEPS.map((t, i) => (
            <li key={t} class={i === step ? 'active' : i < step ? 'done' : ''}>
              <button type="button" disabled={i > step || submitting} title={submitting ? 'Creating the VM…' : i > step ? 'Finish the steps before this one first (Next)' : undefined} onClick={() => setStep(i)}>
                {i + 1}. {t}
              </button>
            </li>
          ))}
        </ol>
        <div class="wizard-body">
          {step === 0 && (
            <Card title="Name and boot source">
              <label>
                Name
                {input(name, setName, { 'data-testid': 'wizard-name', placeholder: 'web1', autofocus: true })}
              </label>
              <fieldset>
                <legend>Boot from</legend>
                <label class="check">
                  <input type="radio" checked={source === 'template'} onChange={() => setSource('template')} disabled={templates.length === 0} />
                  A template
                </label>
                {source === 'template' && (
                  <div class="indent">
                    <select value={template} onChange={(e) => setTemplate((e.target as HTMLSelectElement).value)} data-testid="wizard-template">
                      {templates.map((t) => (
                        <option key={t.name} value={t.name} disabled={!t.available} title={t.available ? undefined : 'Its image is not on this host (make guest-image builds Tiny Linux)'}>
                          {t.name}
                          {t.available ? '' : ' (not built)'}
                        </option>
                      ))}
                    </select>
                    <p class="muted small">{templates.find((t) => t.name === template)?.description}</p>
                  </div>
                )}
                <label class="check">
                  <input type="radio" checked={source === 'custom'} onChange={() => setSource('custom')} data-testid="wizard-custom" />
                  A Linux kernel of my own (direct boot)
                </label>
                <label class="check">
                  <input type="radio" checked={source === 'disk'} onChange={() => setSource('disk')} data-testid="wizard-disk-boot" />
                  The first disk, through firmware (an imported image; QEMU)
                </label>
                <label class="check">
                  <input type="radio" checked={source === 'iso'} onChange={() => setSource('iso')} data-testid="wizard-iso-boot" />
                  An ISO image (an installer) as a CD-ROM, through firmware (QEMU)
                </label>
                {source === 'iso' && (
                  <div class="indent">
                    <label>ISO (in the import directory, /var/lib/sfera/import, or a datastore){input(iso, setIso, { placeholder: '/var/lib/sfera/import/installer.iso', 'data-testid': 'wizard-iso' })}</label>
                  </div>
                )}
                {source === 'custom' && (
                  <div class="indent">
                    <label>Kernel (path on the host){input(kernel, setKernel, { placeholder: '/srv/images/vmlinuz' })}</label>
                    <label>Initrd (optional){input(initrd, setInitrd, { placeholder: '/srv/images/initrd.img' })}</label>
                    <label>Command line{input(cmdline, setCmdline)}</label>
                  </div>
                )}
              </fieldset>
            </Card>
          )}
          {step === 1 && (
            <Card title="CPU and memory">
              <label>vCPUs{input(vcpus, setVcpus, { type: 'number', min: 1, max: 64, 'data-testid': 'wizard-vcpus' })}</label>
              <label>Memory (MiB){input(memory, setMemory, { type: 'number', min: 128, step: 128, 'data-testid': 'wizard-memory' })}</label>
              <label>
                Hypervisor driver
                <select value={driver} onChange={(e) => setDriver((e.target as HTMLSelectElement).value as 'default' | Driver)} data-testid="wizard-driver">
                  <option value="default">The host's choice ({s.host?.default_driver ?? '…'})</option>
                  <option value="qemu">QEMU</option>
                  <option value="sfera-vmm" disabled={s.host ? !s.host.sfera_vmm_available : false} title={s.host && !s.host.sfera_vmm_available ? `Not on this host: ${s.host.driver_reason}` : undefined}>
                    sfera-vmm
                  </option>
                </select>
              </label>
              {s.host && <p class="muted small">The host has {s.host.cpus} CPUs and {bytes(s.host.memory_bytes)}; by default VMs run under {s.host.default_driver}: {s.host.driver_reason}</p>}
            </Card>
          )}
          {step === 2 && (
            <Card title="Disks" actions={<button class="small" onClick={() => setDisks([...disks, { datastore: s.datastores[0]?.name ?? '', gib: '4', volume: '' }])} data-testid="wizard-add-disk">Add disk</button>}>
              {disks.length === 0 && <p class="muted">No disks: the VM boots from its kernel and initrd only.</p>}
              {disks.map((d, i) => (
                <div class="row" key={i} data-testid={`wizard-disk-${i}`}>
                  <span>Disk {i}</span>
                  <select value={d.datastore} onChange={(e) => setDisks(disks.map((x, j) => (j === i ? { ...x, datastore: (e.target as HTMLSelectElement).value } : x)))} aria-label={`Disk ${i} datastore`}>
                    {s.datastores.map((ds) => (
                      <option key={ds.name} value={ds.name}>
                        {ds.name} ({bytes(ds.free_bytes)} free)
                      </option>
                    ))}
                  </select>
                  <input type="number" min="0.001" step="any" value={d.gib} disabled={!!d.volume} title={d.volume ? 'An existing volume keeps its size' : undefined} onInput={(e) => setDisks(disks.map((x, j) => (j === i ? { ...x, gib: (e.target as HTMLInputElement).value } : x)))} aria-label={`Disk ${i} size in GiB`} />
                  <span>GiB, thin, or an existing volume</span>
                  <input placeholder="imports/disk1" value={d.volume} onInput={(e) => setDisks(disks.map((x, j) => (j === i ? { ...x, volume: (e.target as HTMLInputElement).value.trim() } : x)))} aria-label={`Disk ${i} existing volume`} />
                  <button class="small" onClick={() => setDisks(disks.filter((_, j) => j !== i))}>
                    Remove
                  </button>
                </div>
              ))}
            </Card>
          )}
          {step === 3 && (
            <Card title="Network adapters" actions={<button class="small" onClick={() => setNics([...nics, { port_group: groups[0]?.name ?? '', mac: '' }])} data-testid="wizard-add-nic">Add network adapter</button>}>
              {nics.length === 0 && <p class="muted">No network adapters.</p>}
              {nics.map((n, i) => (
                <div class="row" key={i} data-testid={`wizard-nic-${i}`}>
                  <span>NIC {i}</span>
                  <select value={n.port_group} onChange={(e) => setNics(nics.map((x, j) => (j === i ? { ...x, port_group: (e.target as HTMLSelectElement).value } : x)))} aria-label={`NIC ${i} port group`}>
                    {groups.map((g) => (
                      <option key={g.name} value={g.name}>
                        {g.name} ({g.switch})
                      </option>
                    ))}
                  </select>
                  <input placeholder="MAC (generated)" value={n.mac} onInput={(e) => setNics(nics.map((x, j) => (j === i ? { ...x, mac: (e.target as HTMLInputElement).value } : x)))} aria-label={`NIC ${i} MAC`} />
                  <button class="small" onClick={() => setNics(nics.filter((_, j) => j !== i))}>
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
                  ['Name', name],
                  ['Boot', source === 'template' ? `template ${template}` : source === 'disk' ? 'the first disk, through firmware' : source === 'iso' ? `the ISO ${iso}` : `${kernel}${initrd ? ` + ${initrd}` : ''} — ${cmdline}`],
                  ['vCPUs', vcpus],
                  ['Memory', `${memory} MiB`],
                  ['Disks', disks.map((d) => (d.volume ? `${d.datastore}/${d.volume} (existing)` : `${d.gib} GiB on ${d.datastore}`)).join(', ') || 'none'],
                  ['Network', nics.map((n) => `${n.port_group}${n.mac ? ` (${n.mac})` : ''}`).join(', ') || 'none'],
                ]}
              />
              <label class="check">
                <input type="checkbox" checked={powerOn} onChange={(e) => setPowerOn((e.target as HTMLInputElement).checked)} data-testid="wizard-power-on" />
                Power on after creation
              </label>
            </Card>
          )}
          <ErrorBox error={error} />
          {task && <TaskProgress task={task} />}
          <div class="wizard-actions">
            <button onClick={() => go({ page: 'host' })} disabled={submitting}>
              Cancel
            </button>
            <button onClick={() => (setError(null), setStep(step - 1))} disabled={step === 0 || submitting} title={step === 0 ? 'This is the first step' : submitting ? 'Creating the VM…' : undefined}>
              Back
            </button>
            {step < STEPS.length - 1 ? (
              <button class="primary" onClick={next} data-testid="wizard-next">
                Next
              </button>
            ) : (
              <button class="primary" onClick={finish} disabled={submitting} data-testid="wizard-finish">
                {submitting ? 'Creating…' : 'Finish'}
              </button>
            )}
          </div>
        </div>
      </div>
    </div>
  );
}
