// How numbers and times read in the console.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return '—';
  let v = Math.abs(n);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = v >= 100 || i === 0 ? 0 : v >= 10 ? 1 : 2;
  return `${n < 0 ? '-' : ''}${v.toFixed(digits)} ${UNITS[i]}`;
}

export const rate = (n: number | null | undefined) => (n == null ? '—' : `${bytes(n)}/s`);

export function count(n: number | null | undefined, unit = ''): string {
  if (n == null || !Number.isFinite(n)) return '—';
  const abs = Math.abs(n);
  const s =
    abs >= 1e9 ? `${(n / 1e9).toFixed(1)} G` : abs >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : abs >= 1e4 ? `${(n / 1e3).toFixed(1)} k` : abs >= 10 || n === 0 ? n.toFixed(0) : n.toFixed(2);
  return unit ? `${s} ${unit}`.replace('  ', ' ') : s;
}

export const percent = (n: number | null | undefined) => (n == null ? '—' : `${n.toFixed(1)} %`);

export function time(t: number | null | undefined): string {
  if (!t) return '—';
  return new Date(t * 1000).toLocaleString();
}

export function clock(t: number | null | undefined): string {
  if (!t) return '—';
  return new Date(t * 1000).toLocaleTimeString();
}

export function ago(t: number | null | undefined): string {
  if (!t) return '—';
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function duration(from: number | null, to: number | null): string {
  if (!from) return '—';
  const s = Math.max(0, (to ?? Math.floor(Date.now() / 1000)) - from);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

export function vlan(v: { mode: string; id?: number; allowed?: number[]; native?: number } | undefined): string {
  if (!v || v.mode === 'none') return 'none';
  if (v.mode === 'access') return `access ${v.id}`;
  return `trunk ${vlanRanges(v.allowed ?? []) || 'all'}${v.native ? ` (native ${v.native})` : ''}`;
}

/** VLAN IDs as ranges: [10, 11, 12, 30] is "10-12,30". */
export function vlanRanges(ids: number[]): string {
  const sorted = [...new Set(ids)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(j > i ? `${sorted[i]}-${sorted[j]}` : `${sorted[i]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The VLAN IDs of a list such as "10-20,30" (what the switch daemon's own
 * CLI takes), or why it is not one. */
export function parseVlans(text: string): number[] | string {
  const ids = new Set<number>();
  const parts = text.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (parts.length === 0) return 'Give the VLAN IDs the trunk carries, such as 10-20,30';
  for (const part of parts) {
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(part);
    if (!m) return `"${part}" is not a VLAN ID or a range such as 10-20`;
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (first < 1 || last > 4094) return `"${part}": VLAN IDs are 1 to 4094`;
    if (last < first) return `"${part}": a range goes from the lower ID to the higher`;
    for (let id = first; id <= last; id++) ids.add(id);
  }
  return [...ids].sort((a, b) => a - b);
}

/** The API's field names in an error, in the words of the forms that fill
 * them in ("disks[0].size_bytes must be …" is "Disk 0's size must be …" on
 * a wizard whose disks are numbered from 0 and sized in GiB). */
export function inFormWords(message: string): string {
  const fields: [RegExp, (...m: string[]) => string][] = [
    [/\b(add_)?disks\[(\d+)\]\.size_bytes\b/g, (_, add, i) => `${add ? 'New disk' : 'Disk'} ${i}'s size`],
    [/\b(add_)?disks\[(\d+)\]\.datastore\b/g, (_, add, i) => `${add ? 'New disk' : 'Disk'} ${i}'s datastore`],
    [/\b(add_)?disks\[(\d+)\]\.volume\b/g, (_, add, i) => `${add ? 'New disk' : 'Disk'} ${i}'s existing volume`],
    [/\b(add_)?disks\[(\d+)\]/g, (_, add, i) => `${add ? 'New disk' : 'Disk'} ${i}`],
    [/\b(add_)?nics\[(\d+)\]\.port_group\b/g, (_, add, i) => `${add ? 'New network adapter' : 'Network adapter'} ${i}'s port group`],
    [/\b(add_)?nics\[(\d+)\]\.mac\b/g, (_, add, i) => `${add ? 'New network adapter' : 'Network adapter'} ${i}'s MAC address`],
    [/\b(add_)?nics\[(\d+)\]/g, (_, add, i) => `${add ? 'New network adapter' : 'Network adapter'} ${i}`],
    [/\bboot\.iso\b/g, () => 'The ISO'],
    [/\bboot\.kernel\b/g, () => 'The kernel'],
    [/\bboot\.initrd\b/g, () => 'The initrd'],
    [/\bboot\.cmdline\b/g, () => 'The kernel command line'],
    [/\bmemory_mib\b/g, () => 'Memory (MiB)'],
    [/\bvcpus\b/g, () => 'vCPUs'],
    [/\bsize_bytes\b/g, () => 'The size'],
  ];
  return fields.reduce((text, [re, words]) => text.replace(re, (...m) => words(...(m as string[]))), message);
}
