// The logged-in user's own account: their password and API tokens.

import { useRef, useState } from 'preact/hooks';
import { ApiError, call } from '../api';
import type { NewToken, Page, Token } from '../api';
import { Card, ErrorBox, PageHeader, useFetch } from '../components/common';
import { Confirm } from '../components/dialog';
import { ago, time } from '../format';
import { useStore } from '../store';

/** What is wrong with a new password and its repetition, in the form's words. */
export function passwordProblem(password: string, repeat: string): string | undefined {
  const n = [...password].length;
  if (n < 12) return 'The password must have at least 12 characters.';
  if (n > 256) return 'The password may have at most 256 characters.';
  if (password !== repeat) return 'The two passwords are not the same.';
  return undefined;
}

/** A new password typed twice. */
export function PasswordFields({ value, onChange, problem, label }: { value: string[]; onChange: (v: string[]) => void; problem?: string; label: string }) {
  return (
    <>
      <label>
        {label}
        <input type="password" name="new-password" autocomplete="new-password" value={value[0]} onInput={(e) => onChange([(e.target as HTMLInputElement).value, value[1]])} />
      </label>
      <span class="muted small">12 to 256 characters.</span>
      <label>
        Repeat the {label.toLowerCase()}
        <input type="password" name="repeat-password" autocomplete="new-password" value={value[1]} onInput={(e) => onChange([value[0], (e.target as HTMLInputElement).value])} />
      </label>
      {problem && (
        <p class="field-error" role="alert" data-testid="password-problem">
          {problem}
        </p>
      )}
    </>
  );
}

export function PasswordPage() {
  const s = useStore();
  const [current, setCurrent] = useState('');
  const [pw, setPw] = useState(['', '']);
  const [problem, setProblem] = useState<string | undefined>();
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setDone(false);
    setError(null);
    const p = !current ? 'Give your current password.' : pw[0] === current ? 'The new password must differ from the current one.' : passwordProblem(pw[0], pw[1]);
    setProblem(p);
    if (p) return;
    setBusy(true);
    try {
      await call('POST', '/session/password', { current_password: current, new_password: pw[0] });
      setDone(true);
      setCurrent('');
      setPw(['', '']);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'wrong_password') setError('The current password is wrong.');
      else setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div>
      <PageHeader icon="key" title="Change password" subtitle={`Administration: the password of ${s.session?.user ?? 'you'}`} />
      <form class="narrow-form" onSubmit={submit} noValidate aria-label="Change password">
        <label>
          Current password
          <input type="password" name="current-password" autocomplete="current-password" value={current} onInput={(e) => setCurrent((e.target as HTMLInputElement).value)} />
        </label>
        <PasswordFields value={pw} onChange={setPw} problem={problem} label="New password" />
        <ErrorBox error={error} />
        {done && (
          <p class="notice" role="status" data-testid="password-changed">
            Your password is changed. Use it the next time you log in; this session and your API tokens stay.
          </p>
        )}
        <button class="primary" disabled={busy} data-testid="password-submit">
          Change password
        </button>
      </form>
    </div>
  );
}

/** The secret of a token just made, with a copy button. */
function NewSecret({ token, onDone }: { token: NewToken; onDone: () => void }) {
  const input = useRef<HTMLInputElement>(null);
  const [copied, setCopied] = useState<string | null>(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(token.token);
      setCopied('Copied.');
    } catch {
      // No clipboard API (a page served over plain HTTP): select it instead.
      input.current?.select();
      setCopied(document.execCommand('copy') ? 'Copied.' : 'Selected: press Ctrl+C to copy it.');
    }
  };
  return (
    <div class="notice" data-testid="token-made">
      <strong>Token {token.name} is made.</strong> Copy its secret now: it will not be shown again.
      <div class="secret-box">
        <input ref={input} readOnly value={token.token} aria-label="Token secret" data-testid="token-secret" onFocus={(e) => (e.target as HTMLInputElement).select()} />
        <button type="button" class="small" onClick={copy} data-testid="token-copy">
          Copy
        </button>
        <button type="button" class="small" onClick={onDone}>
          Done
        </button>
      </div>
      <span class="muted small">
        Send it as <code>Authorization: Bearer …</code>. {copied}
      </span>
    </div>
  );
}

export function TokensPage() {
  const s = useStore();
  const tokens = useFetch<Page<Token>>('/tokens?limit=500');
  const [name, setName] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const [made, setMade] = useState<NewToken | null>(null);
  const [revoke, setRevoke] = useState<Token | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const create = async (e: Event) => {
    e.preventDefault();
    const n = [...name.trim()].length;
    if (n < 1 || n > 128) {
      setProblem('Give the token a name of 1 to 128 characters, such as what will use it.');
      return;
    }
    setProblem(null);
    try {
      setMade(await call<NewToken>('POST', '/tokens', { name: name.trim() }));
      setName('');
      tokens.reload();
    } catch (err) {
      setProblem(err instanceof ApiError ? err.message : String(err));
    }
  };
  const doRevoke = async (t: Token) => {
    try {
      await call('DELETE', `/tokens/${t.id}`);
      setRevoke(null);
      setRevokeError(null);
      tokens.reload();
    } catch (err) {
      setRevokeError(err instanceof ApiError && err.status === 404 ? `Token ${t.name} is revoked already.` : String(err instanceof Error ? err.message : err));
    }
  };
  const list = tokens.data?.items ?? [];
  return (
    <div>
      <PageHeader icon="token" title="API tokens" subtitle={`Administration: the tokens of ${s.session?.user ?? 'you'}, for scripts and the sfera CLI; each acts with your role`} />
      <Card title="New token">
        <form class="inline-form" onSubmit={create} noValidate>
          <label class="inline">
            Name
            <input name="token-name" value={name} placeholder="backup script" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          </label>
          <button class="primary small" data-testid="token-create">
            Create token
          </button>
          {problem && (
            <span class="field-error" data-testid="token-problem">
              {problem}
            </span>
          )}
        </form>
        {made && <NewSecret token={made} onDone={() => setMade(null)} />}
      </Card>
      <Card title={`Your tokens (${list.length})`}>
        <ErrorBox error={tokens.error} />
        {list.length === 0 ? (
          <p class="muted">You have no API tokens.</p>
        ) : (
          <table class="grid" data-testid="tokens">
            <thead>
              <tr>
                <th>ID</th>
                <th>Name</th>
                <th>Owner</th>
                <th>Created</th>
                <th>Last used</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {list.map((t) => (
                <tr key={t.id} data-token={t.name} data-token-id={t.id}>
                  <td>{t.id}</td>
                  <td>{t.name}</td>
                  <td>{t.user}</td>
                  <td>{time(t.created_at)}</td>
                  <td title={time(t.last_used_at)}>{t.last_used_at ? ago(t.last_used_at) : 'never'}</td>
                  <td>
                    <button class="small danger" onClick={() => setRevoke(t)} data-testid="token-revoke-open">
                      Revoke…
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Card>
      {revoke && (
        <Confirm
          title={`Revoke token ${revoke.name}?`}
          action="Revoke token"
          error={revokeError}
          onCancel={() => {
            setRevoke(null);
            setRevokeError(null);
          }}
          onConfirm={() => doRevoke(revoke)}
        >
          <p>Scripts that use it are refused from now on. This cannot be undone.</p>
        </Confirm>
      )}
    </div>
  );
}
