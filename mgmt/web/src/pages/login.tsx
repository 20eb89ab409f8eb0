// The login page: user and password to a session cookie.

import { useState } from 'preact/hooks';
import { ApiError, call } from '../api';
import type { Session } from '../api';

export function Login({ onLogin }: { onLogin: (s: Session) => void }) {
  const [user, setUser] = useState('admin');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onLogin(await call<Session>('POST', '/session', { username: user, password }));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form onSubmit={submit} class="login-box" aria-label="Log in">
        <h1>
          <span class="logo" aria-hidden="true" />
          Sfera
        </h1>
        <p class="muted">Log in to manage this host's virtual machines, datastores and networks.</p>
        <label>
          User name
          <input name="username" autocomplete="username" value={user} onInput={(e) => setUser((e.target as HTMLInputElement).value)} required />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} required autofocus />
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        <p class="muted small">The first administrator's password is in the file sfera-mgmtd named when it first started (&lt;data dir&gt;/admin-password).</p>
      </form>
    </main>
  );
}
