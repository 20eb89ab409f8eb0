// A VM's power actions: the buttons, why each one is disabled when it is,
// and the confirmation of those that lose something (power off, reset).
//
// The icons are inline SVG, not text glyphs: the media-control characters
// (⏸ U+23F8, ⏵ U+23F5, ⏻ U+23FB) are missing from the fonts a server's
// browser has (DejaVu among them) and showed as empty boxes.

import type { ComponentChildren } from 'preact';
import type { Vm } from '../api';

export type PowerAction = 'on' | 'off' | 'reset' | 'pause' | 'resume' | 'shutdown' | 'reboot';

const ICONS: Record<string, ComponentChildren> = {
  on: <path d="M4 2.5v11l9-5.5z" />,
  off: <rect x="3" y="3" width="10" height="10" rx="1" />,
  pause: (
    <>
      <rect x="3.5" y="2.5" width="3" height="11" rx="0.5" />
      <rect x="9.5" y="2.5" width="3" height="11" rx="0.5" />
    </>
  ),
  resume: (
    <>
      <rect x="2.5" y="2.5" width="2.5" height="11" rx="0.5" />
      <path d="M7 2.5v11l7-5.5z" />
    </>
  ),
  reset: (
    <>
      <path d="M13.5 8A5.5 5.5 0 1 1 8 2.5" fill="none" stroke="currentColor" stroke-width="2" />
      <path d="M7 0l4 2.75L7 5.5z" />
      <circle cx="8" cy="8" r="1.5" />
    </>
  ),
  reboot: (
    <>
      <path d="M13.5 8A5.5 5.5 0 1 1 8 2.5" fill="none" stroke="currentColor" stroke-width="2" />
      <path d="M7 0l4 2.75L7 5.5z" />
    </>
  ),
  shutdown: (
    <>
      <path d="M8 1v7" stroke="currentColor" stroke-width="2" stroke-linecap="round" />
      <path d="M4.6 4A5.5 5.5 0 1 0 11.4 4" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" />
    </>
  ),
};

/** A 14-pixel icon of a power action, in the button's text colour. */
export function PowerIcon({ action }: { action: string }) {
  return (
    <svg class="power-icon" viewBox="0 0 16 16" width="14" height="14" fill="currentColor" aria-hidden="true" data-icon={action}>
      {ICONS[action]}
    </svg>
  );
}

/** Whether VMs under `driver` can be asked to shut down (an ACPI power button). */
export const hasPowerButton = (driver: string) => driver === 'qemu';

/**
 * Why `action` cannot be done on `vm` now, or null when it can: the title
 * a disabled button shows.
 */
export function whyNot(action: PowerAction | 'edit' | 'delete', vm: Vm, busy: boolean): string | null {
  if (busy) return 'Another operation on this VM is under way: wait for it to end';
  const s = vm.state;
  if (s === 'creating' || s === 'deleting') return `The VM is ${s}`;
  switch (action) {
    case 'on':
      if (s === 'paused') return 'The VM is paused: resume it';
      return s === 'stopped' ? null : 'The VM is running already';
    case 'off':
      return s === 'stopped' ? 'The VM is stopped already' : null;
    case 'pause':
    case 'reset':
      return s === 'running' ? null : `The VM is ${s}: only a running VM can be ${action === 'pause' ? 'paused' : 'reset'}`;
    case 'resume':
      return s === 'paused' ? null : `The VM is ${s}: only a paused VM can be resumed`;
    case 'shutdown':
    case 'reboot':
      if (!hasPowerButton(vm.driver)) return `This VM runs under ${vm.driver}, which has no ACPI power button: shut it down from inside the guest, or power it off`;
      if (s === 'paused') return 'The VM is paused: resume it first (a paused guest cannot see the power button)';
      return s === 'running' ? null : `The VM is ${s}: only a running guest can be ${action === 'shutdown' ? 'shut down' : 'restarted'}`;
    case 'edit':
      return null;
    case 'delete':
      return s === 'stopped' ? null : `The VM is ${s}: power it off (or shut down its guest) first`;
  }
}

/** What a confirmation says about an action that loses something. */
export const CONFIRMATIONS: Partial<Record<PowerAction, { title: string; lost: string; button: string }>> = {
  off: {
    title: 'Power off',
    lost: 'This pulls the power cord: the guest is stopped at once, without shutting down. What it has not written to its disks is lost, and its file systems may need checking at the next boot. "Shut down guest" asks the guest to stop cleanly instead.',
    button: 'Power off',
  },
  reset: {
    title: 'Reset',
    lost: 'This presses the reset button: the guest restarts at once, without shutting down. What it has not written to its disks is lost. "Restart guest" asks the guest to restart cleanly instead.',
    button: 'Reset',
  },
};

/** A modal that asks before an action that loses something. */
export function ConfirmDialog({
  title,
  children,
  button,
  onCancel,
  onConfirm,
}: {
  title: string;
  children: ComponentChildren;
  button: string;
  onCancel: () => void;
  onConfirm: () => void;
}) {
  return (
    <div class="dialog-backdrop">
      <div class="dialog" role="dialog" aria-modal="true" aria-label={title} data-testid="confirm-dialog">
        <h3>{title}</h3>
        {children}
        <div class="dialog-actions">
          <button onClick={onCancel} data-testid="confirm-cancel">
            Cancel
          </button>
          <button class="danger" onClick={onConfirm} data-testid="confirm-action">
            {button}
          </button>
        </div>
      </div>
    </div>
  );
}
