import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import { Dialog } from '../components/Dialog';
import { Field, FormError } from '../components/Field';
import { inert } from '../format';
import { navigate } from '../router';

export interface Account {
  address: string;
  displayName: string | null;
  aliases: string[];
  disabled: boolean;
  createdAt: string;
}

/** Every account, searchable; pages through the API's `nextCursor` where it gives one. */
export function Accounts() {
  const [accounts, setAccounts] = useState<Account[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [query, setQuery] = useState('');
  const [error, setError] = useState('');
  const [creating, setCreating] = useState(false);

  const load = useCallback(async (after: string | null) => {
    try {
      const page = await api<{ accounts: Account[]; nextCursor?: string | null }>(`/api/accounts${after ? `?cursor=${encodeURIComponent(after)}` : ''}`);
      setAccounts((prev) => (after && prev ? [...prev, ...page.accounts] : page.accounts));
      setCursor(page.nextCursor ?? null);
    } catch (err) {
      setError((err as Error).message);
    }
  }, []);
  useEffect(() => void load(null), [load]);

  const q = query.trim().toLowerCase();
  const shown = (accounts ?? []).filter((a) => !q || a.address.includes(q) || a.aliases.some((x) => x.includes(q)) || (a.displayName ?? '').toLowerCase().includes(q));

  return (
    <section aria-labelledby="acc-h">
      <div class="page-head">
        <h1 id="acc-h">Accounts</h1>
        <div class="actions">
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            Create an account
          </button>
        </div>
      </div>
      <div class="search" role="search">
        <Field label="Search accounts" name="q" type="search" value={query} onInput={setQuery} placeholder="Address, alias or name" />
      </div>
      <FormError message={error} />
      {accounts && shown.length === 0 && <p class="empty">{q ? 'No account matches.' : 'No accounts yet.'}</p>}
      {shown.length > 0 && (
        <table class="list">
          <caption class="sr-only">Accounts</caption>
          <thead>
            <tr>
              <th scope="col">Address</th>
              <th scope="col">Name</th>
              <th scope="col">Aliases</th>
              <th scope="col">State</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((a) => (
              <tr key={a.address}>
                <th scope="row" data-label="Address">
                  <a href={`#/admin/accounts/${encodeURIComponent(a.address)}`}>
                    <bdi>{inert(a.address)}</bdi>
                  </a>
                </th>
                <td data-label="Name">
                  <bdi class="name">{inert(a.displayName) || '—'}</bdi>
                </td>
                <td data-label="Aliases">{a.aliases.length ? a.aliases.map(inert).join(', ') : '—'}</td>
                <td data-label="State">{a.disabled ? 'Disabled' : 'Active'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {cursor && (
        <button type="button" onClick={() => load(cursor)}>
          Show more accounts
        </button>
      )}
      {creating && <CreateAccountDialog onClose={() => setCreating(false)} onCreated={(a) => navigate(`/admin/accounts/${encodeURIComponent(a.address)}`)} />}
    </section>
  );
}

function CreateAccountDialog(props: { onClose: () => void; onCreated: (a: Account) => void }) {
  const [address, setAddress] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState('');
  return (
    <Dialog title="Create an account" onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setError('');
          setFields({});
          try {
            const body = { address: address.trim(), ...(displayName.trim() && { displayName: displayName.trim() }) };
            props.onCreated(await api<Account>('/api/accounts', { method: 'POST', body }));
          } catch (err) {
            const e2 = err as ApiError;
            if (e2.status === 409) setFields({ address: 'An account or alias with this address exists already.' });
            else {
              setFields(e2.fields);
              setError(Object.keys(e2.fields).length ? '' : e2.message);
            }
          }
        }}
      >
        <Field label="Address" name="address" type="email" value={address} onInput={setAddress} error={fields.address} required maxLength={254} />
        <Field label="Display name (optional)" name="displayName" value={displayName} onInput={setDisplayName} error={fields.displayName} maxLength={200} />
        <FormError message={error} />
        <div class="actions">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" type="submit">
            Create account
          </button>
        </div>
      </form>
    </Dialog>
  );
}
