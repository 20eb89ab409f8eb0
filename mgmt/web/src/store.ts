// What every page shows, polled from the API: the inventory every few
// seconds, tasks and events more often. Pages subscribe with useStore().

import { useEffect, useState } from 'preact/hooks';
import { ApiError, poll } from './api';
import type { ClusterHost, Datastore, Event, Host, Networks, Page, Port, Session, Task, Vm } from './api';

export interface State {
  session: Session | null;
  host: Host | null;
  /** The cluster's hosts. */
  hosts: ClusterHost[];
  datastores: Datastore[];
  networks: Networks | null;
  ports: Port[];
  vms: Vm[];
  tasks: Task[];
  events: Event[];
  /** The last refresh failed with this. */
  error: string | null;
  loaded: boolean;
}

let state: State = {
  session: null,
  host: null,
  hosts: [],
  datastores: [],
  networks: null,
  ports: [],
  vms: [],
  tasks: [],
  events: [],
  error: null,
  loaded: false,
};

const listeners = new Set<() => void>();

function set(patch: Partial<State>) {
  state = { ...state, ...patch };
  listeners.forEach((l) => l());
}

export function getState(): State {
  return state;
}

export function setSession(session: Session | null) {
  set({ session });
}

export function useStore(): State {
  const [, tick] = useState(0);
  useEffect(() => {
    const l = () => tick((n) => n + 1);
    listeners.add(l);
    return () => {
      listeners.delete(l);
    };
  }, []);
  return state;
}

async function settle<T>(p: Promise<T>): Promise<T | null> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) throw e;
    set({ error: e instanceof Error ? e.message : String(e) });
    return null;
  }
}

/** Refreshes the inventory (host, datastores, networks, ports, VMs). */
export async function refreshInventory() {
  const [host, ds, nets, ports, vms, hosts] = await Promise.all([
    settle(poll<Host>('/host')),
    settle(poll<Page<Datastore>>('/datastores')),
    settle(poll<Networks>('/networks')),
    settle(poll<Page<Port>>('/ports')),
    settle(poll<Page<Vm>>('/vms?limit=500')),
    settle(poll<Page<ClusterHost>>('/hosts?limit=500')),
  ]);
  const ok = host && ds && nets && vms;
  set({
    host: host ?? state.host,
    datastores: ds?.items ?? state.datastores,
    networks: nets ?? state.networks,
    ports: ports?.items ?? state.ports,
    vms: vms?.items ?? state.vms,
    hosts: hosts?.items ?? state.hosts,
    loaded: true,
    ...(ok ? { error: null } : {}),
  });
}

/** Refreshes tasks and events. */
export async function refreshActivity() {
  const [tasks, events] = await Promise.all([
    settle(poll<Page<Task>>('/tasks?limit=50')),
    settle(poll<Page<Event>>('/events?limit=100')),
  ]);
  set({ tasks: tasks?.items ?? state.tasks, events: events?.items ?? state.events });
}

export async function refreshAll() {
  await Promise.all([refreshInventory(), refreshActivity()]);
}

let timers: number[] = [];

export function startPolling() {
  stopPolling();
  const guard = (f: () => Promise<void>) => () => {
    f().catch(() => {});
  };
  guard(refreshAll)();
  timers = [setInterval(guard(refreshInventory), 3000), setInterval(guard(refreshActivity), 1500)];
}

export function stopPolling() {
  timers.forEach((t) => clearInterval(t));
  timers = [];
}

/** The name of a task's target (a VM id) when it is known. */
export function targetName(target: string): string {
  return state.vms.find((v) => v.id === target)?.name ?? target;
}

/** Tasks still running on a target. */
export function runningTasks(target?: string): Task[] {
  return state.tasks.filter((t) => (t.state === 'running' || t.state === 'queued') && (!target || t.target === target));
}
