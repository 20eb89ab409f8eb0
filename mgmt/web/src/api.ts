// The /api/v1 client: same-origin fetches with the session cookie, JSON in
// and out, errors as ApiError with the server's code and message.

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Called when a request answers 401: the session is gone. */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(f: () => void) {
  onUnauthorized = f;
}

/** The header that marks a request the page makes by itself (polling), so
 * that mgmtd does not count it as use of the session (idle timeout). */
const BACKGROUND = 'X-Sfera-Background';

export async function call<T>(
  method: string,
  path: string,
  body?: unknown,
  background = false,
): Promise<T> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: {} };
  if (background) (init.headers as Record<string, string>)[BACKGROUND] = '1';
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)['Content-Type'] = 'application/json';
  }
  let r: Response;
  try {
    r = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, 'network', `Cannot reach sfera-mgmtd: ${String(e)}`);
  }
  const text = await r.text();
  let json: unknown = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
  }
  if (!r.ok) {
    const err = (json as { error?: { code?: string; message?: string } })?.error;
    if (r.status === 401 && path !== '/session') onUnauthorized();
    throw new ApiError(r.status, err?.code ?? 'http', err?.message ?? `HTTP ${r.status}`);
  }
  return json as T;
}

export const get = <T>(path: string) => call<T>('GET', path);

/** A GET the page repeats by itself: it does not keep the session alive. */
export const poll = <T>(path: string) => call<T>('GET', path, undefined, true);

/** A path segment, escaped (volume names hold a '/'). */
export const seg = (s: string) => encodeURIComponent(s);

export interface Page<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
  stale?: boolean;
}

export type Role = 'administrator' | 'read-only';

export interface Session {
  user: string;
  role: Role;
  expires_at?: number | null;
}

/** A user (GET /users). */
export interface User {
  name: string;
  role: Role;
  created_at: number;
}

/** An API token as listed (GET /tokens): never its secret. */
export interface Token {
  id: number;
  name: string;
  user: string;
  created_at: number;
  last_used_at: number | null;
}

/** A new token (POST /tokens): its secret is in this answer only. */
export interface NewToken extends Token {
  token: string;
}

export type Grant = 'all' | 'some' | 'none';

/** A role and what it may do in each area of the API (GET /roles). */
export interface RoleInfo {
  name: Role;
  description: string;
  privileges: { area: string; view: Grant; change: Grant; denied: string[] }[];
}

export interface Host {
  hostname: string;
  cpus: number;
  memory_bytes: number;
  kvm: boolean;
  kvm_kind: string;
  default_driver: string;
  accel: string;
  driver_reason: string;
  sfera_vmm_available?: boolean;
  vms?: { total: number; running: number; paused?: number };
  /** Each VM's driver and why it got it. */
  vm_drivers?: { id: string; name: string; state: VmState; driver: string; driver_reason: string }[];
}

/** A host of the cluster (GET /hosts). */
export interface ClusterHost {
  name: string;
  state: 'connected' | 'not_responding' | 'maintenance';
  this_host: boolean;
  started_at: number;
  /** Since when and by whom it is in maintenance mode. */
  maintenance?: { since: number; by: string };
  facts: { hostname: string; cpus: number; memory_bytes: number; kvm_kind: string };
  usage: { vms: number; vms_running: number; memory_allocated_bytes: number; memory_free_bytes: number; vcpus_allocated: number };
}

/** A network interface of the host (GET /host/nics). */
export interface Nic {
  name: string;
  mac?: string;
  mtu: number | null;
  state: string;
  speed_mbps?: number;
  physical: boolean;
}

export interface Daemon {
  name: string;
  state: string;
  pid: number | null;
  adopted: boolean;
  restarts: number;
  started_at: number | null;
  last_exit: string | null;
}

export interface Datastore {
  name: string;
  path: string;
  capacity_bytes?: number | null;
  free_bytes?: number | null;
  volumes?: number | null;
}

export interface Volume {
  datastore?: string;
  name: string;
  size: number;
  allocated?: number;
  path?: string;
}

export interface Vlan {
  mode: 'none' | 'access' | 'trunk';
  id?: number;
  allowed?: number[];
  native?: number;
}

export interface PortGroup {
  name: string;
  switch: string;
  vlan: Vlan;
  security?: Record<string, unknown>;
  shaping?: Record<string, unknown>;
  teaming?: Record<string, unknown>;
}

export interface Switch {
  name: string;
  uplinks?: { name: string; type?: string; interface?: string }[];
  mac_ageing_s?: number;
}

export interface Networks {
  switches: Switch[];
  port_groups: PortGroup[];
  stale: boolean;
}

export interface PortStats {
  connected: boolean;
  rx_packets: number;
  rx_bytes: number;
  tx_packets: number;
  tx_bytes: number;
  drops: Record<string, number>;
}

export interface Port {
  name: string;
  port_group: string;
  mac: string;
  mtu?: number;
  vm: { id: string; name: string } | null;
  connected: boolean;
  stats: PortStats | null;
}

export interface Template {
  name: string;
  description: string;
  vcpus: number;
  memory_mib: number;
  available: boolean;
  kernel: string;
  initrd: string;
}

/** Linux direct boot, or through firmware (QEMU): the first disk's boot loader, or an ISO as a CD-ROM. */
export type Boot = { kind: 'kernel'; kernel: string; initrd?: string; cmdline: string } | { kind: 'disk' } | { kind: 'iso'; iso: string };

export type VmState = 'creating' | 'stopped' | 'running' | 'paused' | 'deleting';
export type Driver = 'sfera-vmm' | 'qemu';

export interface Vm {
  id: string;
  name: string;
  /** The host whose mgmtd runs the VM. */
  host: string;
  /** The revision of its settings in the cluster's store. */
  resource_version: number;
  vcpus: number;
  memory_mib: number;
  boot: Boot;
  driver: string;
  driver_reason: string;
  state: VmState;
  pid: number | null;
  disks: { datastore: string; volume: string; size_bytes: number; export_id: string }[];
  nics: { port_group: string; mac: string; port: string }[];
  created_at: number;
  updated_at: number;
}

export interface VmCreate {
  name: string;
  template?: string;
  vcpus?: number;
  memory_mib?: number;
  boot?: Boot;
  /** A new disk of size_bytes, or an existing volume (an imported image). */
  disks: { datastore: string; size_bytes?: number; volume?: string }[];
  nics: { port_group: string; mac?: string }[];
  driver?: Driver | null;
  power_on: boolean;
}

/** Body of PATCH /vms/{vm}: what is left out stays. */
export interface VmEdit {
  name?: string;
  vcpus?: number;
  memory_mib?: number;
  boot?: Boot;
  driver?: Driver | null;
  add_disks?: { datastore: string; size_bytes?: number; volume?: string }[];
  remove_disks?: { datastore: string; volume: string; delete_volume: boolean }[];
  add_nics?: { port_group: string; mac?: string }[];
  remove_nics?: { mac: string }[];
  /** The VM's resource_version the edit was made from: 409 if it changed since. */
  resource_version?: number;
}

export type TaskState = 'queued' | 'running' | 'success' | 'error';

export interface Task {
  id: number;
  kind: string;
  target: string;
  state: TaskState;
  progress: number;
  message: string;
  result: unknown;
  error: string | null;
  user: string;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

export interface Event {
  id: number;
  time: number;
  severity: 'info' | 'warning' | 'error';
  kind: string;
  target: string;
  message: string;
  user: string | null;
}

export type MetricKind = 'host' | 'vm' | 'volume' | 'port';

export interface MetricSeries {
  kind: MetricKind;
  object: string;
  resolution: 'raw' | '5m';
  interval_s: number;
  times: number[];
  series: Record<string, (number | null)[]>;
}

/** Waits for a task to end; calls `progress` on each poll. */
export async function waitTask(
  task: Task,
  progress?: (t: Task) => void,
  everyMs = 500,
): Promise<Task> {
  let t = task;
  for (;;) {
    progress?.(t);
    if (t.state === 'success') return t;
    if (t.state === 'error') throw new ApiError(500, 'task_failed', t.error ?? 'The task failed');
    await new Promise((r) => setTimeout(r, everyMs));
    t = await get<Task>(`/tasks/${t.id}`);
  }
}
