// What the create and edit wizards share: the field patterns the API
// takes, the CPU and memory check, disk sizes in whole sectors, and the
// first step with a problem.

import type { Host } from '../api';
import { bytes } from '../format';

export const GIB = 1024 ** 3;
export const NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
export const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
export const VOLUME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}(\/[A-Za-z0-9_-][A-Za-z0-9._-]{0,63})?$/;
export const NAME_RULE = "The name must be 1 to 63 letters, digits or '-', not starting or ending with '-'";

/** What is wrong with vCPUs and memory (MiB) as typed, if anything. */
export function cpuMemoryProblem(vcpus: string, memory: string, host: Host | null | undefined): string | null {
  const c = Number(vcpus);
  const m = Number(memory);
  if (!Number.isInteger(c) || c < 1 || c > 64) return 'vCPUs must be 1 to 64';
  if (!Number.isInteger(m) || m < 128) return 'Memory must be at least 128 MiB';
  if (host && m > host.memory_bytes / 2 ** 20) return `Memory cannot exceed the host's ${bytes(host.memory_bytes)}`;
  return null;
}

/** A size typed in GiB, in whole 512-byte sectors. */
export const sectors = (gib: string) => Math.round((Number(gib) * GIB) / 512) * 512;

/** The first of `steps` steps with a problem, and the problem. */
export function firstProblem(steps: number, check: (i: number) => string | null): [number, string] | null {
  for (let i = 0; i < steps; i++) {
    const e = check(i);
    if (e) return [i, e];
  }
  return null;
}
