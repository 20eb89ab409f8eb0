// A modal dialog and its common case, a confirmation.

import type { ComponentChildren } from 'preact';
import { ErrorBox } from './common';

export function Dialog({ label, children, testid }: { label: string; children: ComponentChildren; testid?: string }) {
  return (
    <div class="dialog-backdrop">
      <div class="dialog" role="dialog" aria-modal="true" aria-label={label} data-testid={testid}>
        {children}
      </div>
    </div>
  );
}

/** Asks before something that cannot be undone; shows why it failed. */
export function Confirm({
  title,
  children,
  action,
  busy,
  error,
  onCancel,
  onConfirm,
}: {
  title: string;
  children: ComponentChildren;
  action: string;
  busy?: boolean;
  error?: string | null;
  onCancel: () => void;
  onConfirm: () => void;
}) {
  return (
    <Dialog label={title} testid="confirm-dialog">
      <h3>{title}</h3>
      {children}
      <ErrorBox error={error} />
      <div class="dialog-actions">
        <button onClick={onCancel}>Cancel</button>
        <button class="danger" disabled={busy} onClick={onConfirm} data-testid="confirm">
          {action}
        </button>
      </div>
    </Dialog>
  );
}
