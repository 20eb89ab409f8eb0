// Administration: the users (an administrator's) and the roles (anyone's
// to read: what each may do, as mgmtd's routes allow it).

import { useState } from 'preact/hooks';
import { ApiError, call } from '../api';
import type { Grant, Page, Role, RoleInfo, User } from '../api';
import { Card, ErrorBox, PageHeader, useFetch } from '../components/common';
import { Confirm, Dialog } from '../components/dialog';
import { time } from '../format';
import { useStore } from '../store';
import { PasswordFields, passwordProblem } from './account';

export const ROLE_LABEL: Record<Role, string> = { administrator: 'Administrator', 'read-only': 'Read-only' };

/** What a user name may hold (mgmtd's rule). */
const USER_NAME = /^[A-Za-z0-9._@-]{1,64}$/;

/** An API error said in a form's words: `known` by HTTP status, else the API's own message. */
export function formError(e: unknown, known: Record<number, string> = {}): string {
  if (e instanceof ApiError) return known[e.status] ?? e.message;
  return String(e);
}

function RoleSelect({ value, onChange }: { value: Role; onChange: (r: Role) => void }) {
  return (
    <select name="role" value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value as Role)}>
      <option value="read-only">{ROLE_LABEL['read-only']}: sees everything, changes nothing</option>
      <option value="administrator">{ROLE_LABEL.administrator}: manages everything</option>
    </select>
  );
}

function CreateUser({ onDone, onCancel }: { onDone: () => void; onCancel: () => void }) {
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('read-only');
  const [pw, setPw] = useState(['', '']);
  const [problems, setProblems] = useState<{ name?: string; password?: string }>({});
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const found = {
      name: USER_NAME.test(name) ? undefined : 'A user name is 1 to 64 letters, digits, dots, dashes, underscores or @.',
      password: passwordProblem(pw[0], pw[1]),
    };
    setProblems(found);
    if (found.name || found.password) return;
    setBusy(true);
    setError(null);
    try {
      await call('POST', '/users', { name, password: pw[0], role });
      onDone();
    } catch (err) {
      setError(formError(err, { 409: `A user named ${name} exists already.` }));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog label="New user" testid="user-create">
      <form onSubmit={submit} noValidate>
        <h3>New user</h3>
        <label>
          User name
          <input name="name" autocomplete="off" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} autofocus />
        </label>
        {problems.name && (
          <p class="field-error" role="alert">
            {problems.name}
          </p>
        )}
        <label>
          Role
          <RoleSelect value={role} onChange={setRole} />
        </label>
        <PasswordFields value={pw} onChange={setPw} problem={problems.password} label="Password" />
        <ErrorBox error={error} />
        <div class="dialog-actions">
          <button type="button" onClick={onCancel}>
            Cancel
          </button>
          <button class="primary" disabled={busy} data-testid="user-create-submit">
            Create user
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function ChangeRole({ user, onDone, onCancel }: { user: User; onDone: () => void; onCancel: () => void }) {
  const [role, setRole] = useState<Role>(user.role);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      await call('PATCH', `/users/${encodeURIComponent(user.name)}`, { role });
      onDone();
    } catch (err) {
      setError(formError(err, { 404: `User ${user.name} no longer exists.` }));
    }
  };
  return (
    <Dialog label={`Role of ${user.name}`} testid="user-role">
      <form onSubmit={submit}>
        <h3>Role of {user.name}</h3>
        <label>
          Role
          <RoleSelect value={role} onChange={setRole} />
        </label>
        <p class="muted small">The new role applies at once, to the user's sessions and API tokens on every host.</p>
        <ErrorBox error={error} />
        <div class="dialog-actions">
          <button type="button" onClick={onCancel}>
            Cancel
          </button>
          <button class="primary" disabled={role === user.role} data-testid="user-role-submit">
            Change role
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function ResetPassword({ user, onDone, onCancel }: { user: User; onDone: () => void; onCancel: () => void }) {
  const [pw, setPw] = useState(['', '']);
  const [problem, setProblem] = useState<string | undefined>();
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    const p = passwordProblem(pw[0], pw[1]);
    setProblem(p);
    if (p) return;
    try {
      await call('PATCH', `/users/${encodeURIComponent(user.name)}`, { password: pw[0] });
      onDone();
    } catch (err) {
      setError(formError(err, { 404: `User ${user.name} no longer exists.` }));
    }
  };
  return (
    <Dialog label={`Reset the password of ${user.name}`} testid="user-reset">
      <form onSubmit={submit} noValidate>
        <h3>Reset the password of {user.name}</h3>
        <p class="muted small">Their sessions on this host end; their API tokens keep working.</p>
        <PasswordFields value={pw} onChange={setPw} problem={problem} label="New password" />
        <ErrorBox error={error} />
        <div class="dialog-actions">
          <button type="button" onClick={onCancel}>
            Cancel
          </button>
          <button class="primary" data-testid="user-reset-submit">
            Reset password
          </button>
        </div>
      </form>
    </Dialog>
  );
}

type UserDialog = { kind: 'create' } | { kind: 'role' | 'reset' | 'delete'; user: User };

/** Why an administrator cannot change their own account here. */
const OWN = 'This is you: another administrator changes your role, resets your password or deletes you (so an administrator always remains). Change your own password under Change password.';

export function UsersPage() {
  const s = useStore();
  const me = s.session?.user;
  const admin = s.session?.role === 'administrator';
  const users = useFetch<Page<User>>(admin ? '/users?limit=500' : null);
  const [dialog, setDialog] = useState<UserDialog | null>(null);
  const [deleting, setDeleting] = useState({ busy: false, error: null as string | null });
  const header = <PageHeader icon="user" title="Users" subtitle="Administration" />;
  if (!admin)
    return (
      <div>
        {header}
        <p class="notice" data-testid="users-denied">
          Only administrators see and manage users: you ({me}) are read-only. You can see the roles, manage your own API tokens and change your password.
        </p>
      </div>
    );
  const done = () => {
    setDialog(null);
    users.reload();
  };
  const remove = async (u: User) => {
    setDeleting({ busy: true, error: null });
    try {
      await call('DELETE', `/users/${encodeURIComponent(u.name)}`);
      setDeleting({ busy: false, error: null });
      done();
    } catch (err) {
      setDeleting({ busy: false, error: formError(err) });
    }
  };
  const list = users.data?.items ?? [];
  return (
    <div>
      {header}
      <Card
        title={`Users (${list.length})`}
        actions={
          <button class="primary small" onClick={() => setDialog({ kind: 'create' })} data-testid="user-new">
            New user…
          </button>
        }
      >
        <ErrorBox error={users.error} />
        <table class="grid" data-testid="users">
          <thead>
            <tr>
              <th>Name</th>
              <th>Role</th>
              <th>Created</th>
              <th>Actions</th>
            </tr>
          </thead>
          <tbody>
            {list.map((u) => {
              const own = u.name === me;
              const reason = own ? OWN : undefined;
              return (
                <tr key={u.name} data-user={u.name} data-role={u.role}>
                  <td>
                    {u.name}
                    {own && <span class="muted"> (you)</span>}
                  </td>
                  <td>{ROLE_LABEL[u.role]}</td>
                  <td>{time(u.created_at)}</td>
                  <td class="row-actions">
                    <button class="small" disabled={own} title={reason} onClick={() => setDialog({ kind: 'role', user: u })} data-testid="user-role-open">
                      Change role…
                    </button>
                    <button class="small" disabled={own} title={reason} onClick={() => setDialog({ kind: 'reset', user: u })} data-testid="user-reset-open">
                      Reset password…
                    </button>
                    <button class="small danger" disabled={own} title={reason} onClick={() => setDialog({ kind: 'delete', user: u })} data-testid="user-delete-open">
                      Delete…
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
        <p class="muted small" data-testid="users-own-reason">
          {OWN}
        </p>
      </Card>
      {dialog?.kind === 'create' && <CreateUser onDone={done} onCancel={() => setDialog(null)} />}
      {dialog?.kind === 'role' && <ChangeRole user={dialog.user} onDone={done} onCancel={() => setDialog(null)} />}
      {dialog?.kind === 'reset' && <ResetPassword user={dialog.user} onDone={done} onCancel={() => setDialog(null)} />}
      {dialog?.kind === 'delete' && (
        <Confirm
          title={`Delete user ${dialog.user.name}?`}
          action="Delete user"
          busy={deleting.busy}
          error={deleting.error}
          onCancel={() => {
            setDeleting({ busy: false, error: null });
            setDialog(null);
          }}
          onConfirm={() => remove(dialog.user)}
        >
          <p>Their sessions and API tokens end on every host. This cannot be undone.</p>
        </Confirm>
      )}
    </div>
  );
}

/** What the areas of the API are, in words. */
const AREA: Record<string, string> = {
  session: 'Own session, API tokens and password',
  users: 'Users and roles',
  host: 'Host and its services',
  cluster: 'Cluster hosts',
  datastores: 'Datastores and volumes',
  networks: 'Switches, port groups and ports',
  vms: 'Virtual machines and their consoles',
  tasks: 'Tasks',
  events: 'Events',
  metrics: 'Performance charts',
  meta: 'API document and metrics',
};

const GRANT: Record<Grant, string> = { all: 'Yes', some: 'Partly', none: 'No' };

function GrantCell({ g, denied }: { g: Grant; denied: string[] }) {
  return (
    <td class={`grant-${g}`} title={g === 'some' ? `Except: ${denied.join(', ')}` : undefined}>
      {GRANT[g]}
    </td>
  );
}

export function RolesPage() {
  const s = useStore();
  const roles = useFetch<Page<RoleInfo>>('/roles');
  return (
    <div>
      <PageHeader icon="role" title="Roles" subtitle="Administration: what each role may do (roles are built in and cannot be edited)" />
      <ErrorBox error={roles.error} />
      <div class="cards">
        {(roles.data?.items ?? []).map((r) => (
          <Card key={r.name} title={`${ROLE_LABEL[r.name]}${s.session?.role === r.name ? ' (your role)' : ''}`}>
            <p class="muted">{r.description}</p>
            <table class="grid" data-testid={`role-${r.name}`}>
              <thead>
                <tr>
                  <th>Area</th>
                  <th>View</th>
                  <th>Change</th>
                </tr>
              </thead>
              <tbody>
                {r.privileges.map((p) => (
                  <tr key={p.area}>
                    <td>{AREA[p.area] ?? p.area}</td>
                    <GrantCell g={p.view} denied={p.denied} />
                    <GrantCell g={p.change} denied={p.denied} />
                  </tr>
                ))}
              </tbody>
            </table>
          </Card>
        ))}
      </div>
    </div>
  );
}
