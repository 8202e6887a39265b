import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import { CopyBox } from '../components/Copy';
import { Confirm } from '../components/Dialog';
import { Field, FormError } from '../components/Field';
import { dateTime, inert, splitList } from '../format';
import { navigate } from '../router';
import type { Account } from './Accounts';
import { KeysPage } from './Keys';

/** One account for an administrator: its details, a sign-in link, its upstream route and its keys. */
export function AccountPage(props: { address: string }) {
  const path = `/api/accounts/${encodeURIComponent(props.address)}`;
  const [account, setAccount] = useState<Account | null>(null);
  const [error, setError] = useState('');
  const load = useCallback(async () => {
    try {
      setAccount(await api<Account>(path));
    } catch (err) {
      setError((err as Error).message);
    }
  }, [path]);
  useEffect(() => void load(), [load]);

  return (
    <div class="account">
      <p>
        <a href="#/admin/accounts">← All accounts</a>
      </p>
      <h1>
        <bdi>{inert(props.address)}</bdi>
      </h1>
      <FormError message={error} />
      {account && (
        <>
          <Details path={path} account={account} onChange={setAccount} />
          <KeysPage account={account.address} own={false} />
          <SignInLink path={path} />
          <Upstream path={path} />
        </>
      )}
    </div>
  );
}

function Details(props: { path: string; account: Account; onChange: (a: Account) => void }) {
  const a = props.account;
  const [displayName, setDisplayName] = useState(a.displayName ?? '');
  const [aliases, setAliases] = useState(a.aliases.join(', '));
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const [confirm, setConfirm] = useState<'delete' | 'disable' | null>(null);
  const patch = async (body: Record<string, unknown>, done: string): Promise<void> => {
    setError('');
    setFields({});
    try {
      props.onChange(await api<Account>(props.path, { method: 'PATCH', body }));
      setStatus(done);
    } catch (err) {
      const e2 = err as ApiError;
      if (e2.status === 409) setFields({ aliases: 'One of these aliases belongs to another account already.' });
      else {
        setFields(e2.fields);
        setError(Object.keys(e2.fields).length ? '' : e2.message);
      }
    }
  };
  return (
    <section class="card" aria-labelledby="det-h">
      <h2 id="det-h">Details</h2>
      <p>
        {a.disabled ? 'Disabled: none of its keys work.' : 'Active.'} Created {dateTime(a.createdAt)}.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void patch({ displayName: displayName.trim() || null, aliases: splitList(aliases).map((s) => s.toLowerCase()) }, 'Saved.');
        }}
      >
        <Field label="Display name" name="displayName" value={displayName} onInput={setDisplayName} error={fields.displayName} maxLength={200} />
        <Field label="Aliases" name="aliases" value={aliases} onInput={setAliases} error={fields.aliases} hint="Other addresses that log in as this account, separated by commas." />
        <FormError message={error} />
        {status && (
          <p class="notice" role="status">
            {status}
          </p>
        )}
        <div class="actions">
          <button class="primary" type="submit">
            Save
          </button>
          {a.disabled ? (
            <button type="button" onClick={() => patch({ disabled: false }, 'Enabled.')}>
              Enable account
            </button>
          ) : (
            <button type="button" onClick={() => setConfirm('disable')}>
              Disable account
            </button>
          )}
          <button type="button" class="danger" onClick={() => setConfirm('delete')}>
            Delete account
          </button>
        </div>
      </form>
      {confirm === 'disable' && (
        <Confirm
          title="Disable this account?"
          message="Every key of this account stops working and its open sessions end, until you enable it again."
          action="Disable account"
          danger
          onClose={() => setConfirm(null)}
          onConfirm={async () => {
            setConfirm(null);
            await patch({ disabled: true }, 'Disabled.');
          }}
        />
      )}
      {confirm === 'delete' && (
        <Confirm
          title="Delete this account?"
          message={
            <>
              <bdi>{inert(a.address)}</bdi> and all its keys are removed; apps using them stop at once. This cannot be undone.
            </>
          }
          action="Delete account"
          danger
          onClose={() => setConfirm(null)}
          onConfirm={async () => {
            try {
              await api(props.path, { method: 'DELETE' });
              navigate('/admin/accounts');
            } catch (err) {
              setError((err as Error).message);
              setConfirm(null);
            }
          }}
        />
      )}
    </section>
  );
}

function SignInLink(props: { path: string }) {
  const [link, setLink] = useState<{ url: string; expiresAt: string } | null>(null);
  const [error, setError] = useState('');
  return (
    <section class="card" aria-labelledby="link-h">
      <h2 id="link-h">One-time sign-in link</h2>
      <p>Lets the account holder sign in to this console once, without a password. Send it to them only.</p>
      <FormError message={error} />
      {link ? (
        <>
          <CopyBox label="Sign-in link" value={link.url} testId="sign-in-link" />
          <p class="hint">Works once, until {dateTime(link.expiresAt)}.</p>
        </>
      ) : (
        <button
          type="button"
          onClick={async () => {
            try {
              setLink(await api(`${props.path}/sign-in-links`, { method: 'POST' }));
            } catch (err) {
              setError((err as Error).message);
            }
          }}
        >
          Make a sign-in link
        </button>
      )}
    </section>
  );
}

type Overlay = { host?: string; port?: number; tls?: string; login?: string };
interface RouteView {
  account: string;
  route: { imap?: Overlay; pop3?: Overlay; smtp?: Overlay; username: string | null; passwordSet: boolean } | null;
}
const PROTOCOLS = [
  ['imap', 'IMAP'],
  ['pop3', 'POP3'],
  ['smtp', 'SMTP'],
] as const;

/** The account's own upstream route; the stored password is never shown, only whether there is one. */
function Upstream(props: { path: string }) {
  const [view, setView] = useState<RouteView | null>(null);
  const [form, setForm] = useState<Record<string, string>>({});
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const fill = (v: RouteView): void => {
    setView(v);
    const f: Record<string, string> = { username: v.route?.username ?? '', password: '', login: v.route?.imap?.login ?? '' };
    for (const [p] of PROTOCOLS) {
      f[`${p}.host`] = v.route?.[p]?.host ?? '';
      f[`${p}.port`] = v.route?.[p]?.port ? String(v.route[p]!.port) : '';
      f[`${p}.tls`] = v.route?.[p]?.tls ?? '';
    }
    setForm(f);
  };
  useEffect(() => {
    api<RouteView>(`${props.path}/upstream`).then(fill, (err: Error) => setError(err.message));
  }, [props.path]);
  const set = (k: string) => (v: string) => setForm({ ...form, [k]: v });
  return (
    <section class="card" aria-labelledby="up-h">
      <h2 id="up-h">Upstream mail server</h2>
      <p>
        {view?.route ? 'This account has its own route.' : 'This account follows its domain’s route or the default one.'}{' '}
        {view?.route?.passwordSet ? 'An upstream password is stored (it is never shown).' : 'No upstream password is stored.'}
      </p>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setError('');
          setFields({});
          const body: Record<string, unknown> = {};
          for (const [p] of PROTOCOLS) {
            const o: Record<string, unknown> = {};
            if (form[`${p}.host`]) o.host = form[`${p}.host`]!.trim();
            if (form[`${p}.port`]) o.port = Number(form[`${p}.port`]);
            if (form[`${p}.tls`]) o.tls = form[`${p}.tls`];
            if (form.login && p !== 'smtp') o.login = form.login;
            if (Object.keys(o).length) body[p] = o;
          }
          if (form.username?.trim()) body.username = form.username.trim();
          if (form.password) body.password = form.password;
          try {
            fill(await api<RouteView>(`${props.path}/upstream`, { method: 'PUT', body }));
            setStatus('Saved.');
          } catch (err) {
            const e2 = err as ApiError;
            setFields(e2.fields);
            setError(e2.message);
          }
        }}
      >
        <div class="grid3">
          {PROTOCOLS.map(([p, label]) => (
            <fieldset key={p}>
              <legend>{label}</legend>
              <Field label={`${label} server`} name={`${p}.host`} value={form[`${p}.host`] ?? ''} onInput={set(`${p}.host`)} error={fields[p]} maxLength={253} />
              <Field label={`${label} port`} name={`${p}.port`} type="number" value={form[`${p}.port`] ?? ''} onInput={set(`${p}.port`)} />
              <div class="field">
                <label for={`tls-${p}`}>{label} security</label>
                <select id={`tls-${p}`} value={form[`${p}.tls`] ?? ''} onChange={(e) => set(`${p}.tls`)((e.currentTarget as HTMLSelectElement).value)}>
                  <option value="">(inherited)</option>
                  <option value="implicit">SSL/TLS</option>
                  <option value="starttls">STARTTLS</option>
                  <option value="none">None</option>
                </select>
              </div>
            </fieldset>
          ))}
        </div>
        <div class="field">
          <label for="login-mode">How Keygate logs in upstream (IMAP, POP3)</label>
          <select id="login-mode" value={form.login ?? ''} onChange={(e) => set('login')((e.currentTarget as HTMLSelectElement).value)}>
            <option value="">(inherited)</option>
            <option value="master">As the master user</option>
            <option value="account">With this account’s own user name and password</option>
          </select>
        </div>
        <Field label="Upstream user name (optional)" name="username" value={form.username ?? ''} onInput={set('username')} error={fields.username} hint="Empty means the account address." />
        <Field label="Upstream password" name="password" type="password" autocomplete="new-password" value={form.password ?? ''} onInput={set('password')} error={fields.password} hint="Leave empty to keep the stored one." />
        <FormError message={error} />
        {status && (
          <p class="notice" role="status">
            {status}
          </p>
        )}
        <div class="actions">
          <button class="primary" type="submit">
            Save route
          </button>
          {view?.route && (
            <button
              type="button"
              onClick={async () => {
                try {
                  await api(`${props.path}/upstream`, { method: 'DELETE' });
                  fill({ account: view.account, route: null });
                  setStatus('Removed: the domain’s or default route applies.');
                } catch (err) {
                  setError((err as Error).message);
                }
              }}
            >
              Remove own route
            </button>
          )}
        </div>
      </form>
    </section>
  );
}
