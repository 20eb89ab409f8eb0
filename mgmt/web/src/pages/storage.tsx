// Datastores and volumes.

import { useState } from 'preact/hooks';
import { ApiError, call, seg, waitTask } from '../api';
import type { Datastore, Page, Task, Volume } from '../api';
import { Card, ErrorBox, Facts, Meter, PageHeader, useFetch } from '../components/common';
import { TaskProgress } from '../components/progress';
import { bytes } from '../format';
import { go, href } from '../router';
import { refreshActivity, refreshInventory, useStore } from '../store';
import { Performance } from './charts';
import { DeleteButton, GrowVolume, NewVolume } from './manage-forms';

export function DatastorePage({ ds }: { ds: string }) {
  const s = useStore();
  const d = s.datastores.find((x) => x.name === ds);
  const volumes = useFetch<Page<Volume>>(`/datastores/${seg(ds)}/volumes?limit=500`, 5000);
  if (!d) return <p class="muted">{s.loaded ? `No datastore ${ds}.` : 'Loading…'}</p>;
  const cap = d.capacity_bytes ?? 0;
  const free = d.free_bytes ?? 0;
  const admin = s.session?.role === 'administrator';
  const owner = (v: Volume) => s.vms.find((vm) => vm.disks.some((x) => x.datastore === ds && x.volume === v.name));
  return (
    <div>
      <PageHeader icon="datastore" title={d.name} subtitle="Datastore">
        {admin && <DeleteButton what={`the registration of datastore ${ds} (its files stay)`} path={`/datastores/${seg(ds)}`} after={() => go({ page: 'host' })} testid="datastore-remove" />}
      </PageHeader>
      <div class="cards">
        <Card title="Capacity">
          <Facts
            rows={[
              ['Path', <code>{d.path}</code>],
              ['Capacity', bytes(cap)],
              ['Free', bytes(free)],
              ['Volumes', d.volumes ?? '—'],
            ]}
          />
          <Meter used={cap - free} total={cap} />
        </Card>
      </div>
      <Card
        title="Volumes"
        actions={
          admin && (
            <>
              <NewVolume ds={ds} free={d.free_bytes ?? null} onDone={volumes.reload} />
              <ImportDisk ds={ds} onDone={volumes.reload} />
            </>
          )
        }
      >
        <ErrorBox error={volumes.error} />
        <table class="grid" data-testid="volumes">
          <thead>
            <tr>
              <th>Volume</th>
              <th>Size</th>
              <th>Allocated</th>
              <th>VM</th>
              {admin && <th />}
            </tr>
          </thead>
          <tbody>
            {(volumes.data?.items ?? []).map((v) => {
              const vm = owner(v);
              return (
                <tr key={v.name}>
                  <td>
                    <a href={href({ page: 'volume', ds, volume: v.name })}>{v.name}</a>
                  </td>
                  <td>{bytes(v.size)}</td>
                  <td>{bytes(v.allocated)}</td>
                  <td>{vm ? <a href={href({ page: 'vm', vm: vm.name, tab: 'summary' })}>{vm.name}</a> : '—'}</td>
                  {admin && (
                    <td>
                      <GrowVolume ds={ds} v={v} onDone={volumes.reload} />
                      {!vm && <DeleteButton what={`volume ${ds}/${v.name}`} path={`/datastores/${seg(ds)}/volumes/${seg(v.name)}`} after={volumes.reload} testid={`volume-delete-${v.name}`} />}
                    </td>
                  )}
                </tr>
              );
            })}
          </tbody>
        </table>
        {volumes.data?.items.length === 0 && <p class="muted">No volumes.</p>}
      </Card>
    </div>
  );
}

export function VolumePage({ ds, volume }: { ds: string; volume: string }) {
  const s = useStore();
  const volumes = useFetch<Page<Volume>>(`/datastores/${seg(ds)}/volumes?limit=500`, 10000);
  const v = volumes.data?.items.find((x) => x.name === volume);
  const vm = s.vms.find((x) => x.disks.some((d) => d.datastore === ds && d.volume === volume));
  return (
    <div>
      <PageHeader icon="volume" title={volume} subtitle={<>Volume on <a href={href({ page: 'datastore', ds })}>{ds}</a></>} />
      <div class="cards">
        <Card title="Volume">
          <Facts
            rows={[
              ['Size', bytes(v?.size)],
              ['Allocated', bytes(v?.allocated)],
              ['File', <code>{v?.path ?? '—'}</code>],
              ['VM', vm ? <a href={href({ page: 'vm', vm: vm.name, tab: 'summary' })}>{vm.name}</a> : '—'],
            ]}
          />
        </Card>
      </div>
      <h3>Performance</h3>
      <Performance kind="volume" object={`${ds}/${volume}`} />
    </div>
  );
}

/** Imports a disk image file of the host (raw, qcow2, vmdk) as a new
 * volume of the datastore (administrators), with the task's progress. */
export function ImportDisk({ ds, onDone }: { ds: string; onDone?: () => void }) {
  const [volume, setVolume] = useState('');
  const [source, setSource] = useState('');
  const [format, setFormat] = useState('qcow2');
  const [task, setTask] = useState<Task | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [open, setOpen] = useState(false);
  if (!open)
    return (
      <button class="small" onClick={() => setOpen(true)} data-testid="import-open">
        Import disk image…
      </button>
    );
  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      const t = await call<Task>('POST', `/datastores/${seg(ds)}/import`, { volume, source, format });
      setTask(t);
      await refreshActivity();
      await waitTask(t, setTask);
      setOpen(false);
      setVolume('');
      setSource('');
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setTask(null);
      onDone?.();
      await refreshInventory();
    }
  };
  return (
    <form class="inline-form" onSubmit={submit} data-testid="import-form">
      <input placeholder="volume (NAME or FOLDER/NAME)" value={volume} onInput={(e) => setVolume((e.target as HTMLInputElement).value)} required data-testid="import-volume" />
      <input placeholder="/path/on/the/host/image.qcow2" value={source} onInput={(e) => setSource((e.target as HTMLInputElement).value)} required data-testid="import-source" />
      <select value={format} onChange={(e) => setFormat((e.target as HTMLSelectElement).value)} data-testid="import-format">
        <option value="raw">raw</option>
        <option value="qcow2">qcow2</option>
        <option value="vmdk">vmdk</option>
      </select>
      <button class="primary small" disabled={!!task} title={task ? 'An import is under way' : undefined} data-testid="import-submit">
        Import
      </button>
      <button type="button" class="small" disabled={!!task} title={task ? 'An import is under way' : undefined} onClick={() => setOpen(false)}>
        Cancel
      </button>
      {task && <TaskProgress task={task} />}
      <ErrorBox error={error} />
    </form>
  );
}

/** Registers a datastore (administrators). */
export function AddDatastore() {
  const [name, setName] = useState('');
  const [path, setPath] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [open, setOpen] = useState(false);
  if (!open)
    return (
      <button class="small" onClick={() => setOpen(true)}>
        Add datastore…
      </button>
    );
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      await call<Datastore>('POST', '/datastores', { name, path });
      setOpen(false);
      await refreshInventory();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  return (
    <form class="inline-form" onSubmit={submit}>
      <input placeholder="name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} required />
      <input placeholder="/absolute/path" value={path} onInput={(e) => setPath((e.target as HTMLInputElement).value)} required />
      <button class="primary small">Add</button>
      <button type="button" class="small" onClick={() => setOpen(false)}>
        Cancel
      </button>
      <ErrorBox error={error} />
    </form>
  );
}
