// Progress of long operations: a bar with what the task is doing.

import type { Task } from '../api';

export function ProgressBar({ value, label, testid }: { value: number | null; label?: string; testid?: string }) {
  const indeterminate = value == null;
  return (
    <div class="progress" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={value ?? undefined} aria-label={label} data-testid={testid}>
      <div class={`progress-fill${indeterminate ? ' indeterminate' : ''}`} style={indeterminate ? undefined : { width: `${Math.max(2, Math.min(100, value))}%` }} />
      {label && <span class="progress-label">{label}</span>}
    </div>
  );
}

export const taskTitle = (kind: string) =>
  ({
    'vm.create': 'Create VM',
    'vm.delete': 'Delete VM',
    'vm.edit': 'Edit VM',
    'vm.power_on': 'Power on',
    'vm.power_off': 'Power off',
    'vm.reset': 'Reset',
    'vm.pause': 'Pause',
    'vm.resume': 'Resume',
    'vm.shutdown': 'Shut down guest',
    'vm.reboot': 'Restart guest',
    'volume.import': 'Import disk image',
  })[kind] ?? kind;

/** A running task's bar: "Create VM: disk web/disk0 on local (45 %)". */
export function TaskProgress({ task }: { task: Task }) {
  const label = `${taskTitle(task.kind)}${task.message ? `: ${task.message}` : ''} (${task.progress} %)`;
  return <ProgressBar value={task.state === 'queued' ? null : task.progress} label={label} testid="task-progress" />;
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`badge badge-${state}`}>{state}</span>;
}
