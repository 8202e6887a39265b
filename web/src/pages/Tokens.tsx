import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import { CopyBox } from '../components/Copy';
import { Confirm, Dialog } from '../components/Dialog';
import { Field, FormError } from '../components/Field';
import { dateTime, inert, protocolLabel, relative, scopeSummary, TOKEN_SCOPES } from '../format';
import { endOfDay, ScopeChoices } from './Keys';

interface Token {
  id: string;
  description: string;
  account: string | null;
  scopes: string[];
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
  lastUsedIp: string | null;
  lastUsedProtocol: string | null;
  isActive: boolean;
}

type Modal = { kind: 'create' } | { kind: 'created'; token: string } | { kind: 'revoke'; token: Token } | { kind: 'export'; token: Token; blob: string } | null;

/** Access tokens (reference 002/003): every key, create, revoke, export. */
export function Tokens() {
  const [tokens, setTokens] = useState<Token[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState('');
  const [modal, setModal] = useState<Modal>(null);
  const load = useCallback(async (after: string | null) => {
    try {
      const page = await api<{ tokens: Token[]; nextCursor?: string | null }>(`/api/tokens${after ? `?cursor=${encodeURIComponent(after)}` : ''}`);
      setTokens((prev) => (after && prev ? [...prev, ...page.tokens] : page.tokens));
      setCursor(page.nextCursor ?? null);
    } catch (err) {
      setError((err as Error).message);
    }
  }, []);
  useEffect(() => void load(null), [load]);

  return (
    <section aria-labelledby="tok-h">
      <div class="page-head">
        <h1 id="tok-h">Access tokens</h1>
        <div class="actions">
          <button type="button" class="primary" onClick={() => setModal({ kind: 'create' })}>
            Create new
          </button>
        </div>
      </div>
      <p class="lead">Every key on this server. A token is shown once, when it is created; only its hash is kept.</p>
      <FormError message={error} />
      {tokens && tokens.length === 0 && <p class="empty">No tokens.</p>}
      {tokens && tokens.length > 0 && (
        <table class="list">
          <caption class="sr-only">Access tokens</caption>
          <thead>
            <tr>
              <th scope="col">Description</th>
              <th scope="col">Account</th>
              <th scope="col">Allows</th>
              <th scope="col">Created</th>
              <th scope="col">Last used</th>
              <th scope="col">State</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {tokens.map((t) => (
              <tr key={t.id}>
                <th scope="row" data-label="Description">
                  <bdi class="name">{inert(t.description)}</bdi>
                </th>
                <td data-label="Account">{t.account ? <bdi>{inert(t.account)}</bdi> : 'All (unbound)'}</td>
                <td data-label="Allows">{scopeSummary(t.scopes)}</td>
                <td data-label="Created">{dateTime(t.createdAt)}</td>
                <td data-label="Last used">
                  {t.lastUsedAt ? `${relative(t.lastUsedAt)}${t.lastUsedIp ? ` from ${t.lastUsedIp}` : ''}${t.lastUsedProtocol ? ` over ${protocolLabel(t.lastUsedProtocol)}` : ''}` : 'Never'}
                </td>
                <td data-label="State">{t.revokedAt ? 'Revoked' : t.isActive ? 'Active' : 'Expired'}</td>
                <td class="row-actions">
                  <button
                    type="button"
                    aria-label={`Export token ${inert(t.description)}`}
                    onClick={async () => {
                      try {
                        const r = await api<{ blob: string }>(`/api/tokens/${encodeURIComponent(t.id)}/export`);
                        setModal({ kind: 'export', token: t, blob: r.blob });
                      } catch (err) {
                        setError((err as Error).message);
                      }
                    }}
                  >
                    Export
                  </button>
                  {!t.revokedAt && (
                    <button type="button" class="danger" aria-label={`Revoke token ${inert(t.description)}`} onClick={() => setModal({ kind: 'revoke', token: t })}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {cursor && (
        <button type="button" onClick={() => load(cursor)}>
          Show more tokens
        </button>
      )}
      {modal?.kind === 'create' && (
        <CreateTokenDialog
          onClose={() => setModal(null)}
          onCreated={(token) => {
            setModal({ kind: 'created', token });
            void load(null);
          }}
        />
      )}
      {modal?.kind === 'created' && (
        <Dialog title="Your new access token" onClose={() => setModal(null)}>
          <p class="notice">Copy this token now: it is shown only once.</p>
          <CopyBox label="Access token" value={modal.token} testId="new-token" />
          <div class="actions">
            <button type="button" class="primary" onClick={() => setModal(null)}>
              Done
            </button>
          </div>
        </Dialog>
      )}
      {modal?.kind === 'export' && (
        <Dialog title="Export token" onClose={() => setModal(null)}>
          <p>
            The record of <bdi class="name">{inert(modal.token.description)}</bdi> for another Keygate (import, or the prepared-token setting). It holds the token’s hash, not the token.
          </p>
          <CopyBox label="Export blob" value={modal.blob} />
          <div class="actions">
            <button type="button" class="primary" onClick={() => setModal(null)}>
              Done
            </button>
          </div>
        </Dialog>
      )}
      {modal?.kind === 'revoke' && (
        <Confirm
          title="Revoke this token?"
          message={
            <>
              Everything using <bdi class="name">{inert(modal.token.description)}</bdi> loses access at once.
            </>
          }
          action="Revoke token"
          danger
          onClose={() => setModal(null)}
          onConfirm={async () => {
            try {
              await api(`/api/tokens/${encodeURIComponent(modal.token.id)}`, { method: 'DELETE' });
            } catch (err) {
              setError((err as Error).message);
            }
            setModal(null);
            await load(null);
          }}
        />
      )}
    </section>
  );
}

function CreateTokenDialog(props: { onClose: () => void; onCreated: (token: string) => void }) {
  const [description, setDescription] = useState('');
  const [scopes, setScopes] = useState<string[]>(['metrics']);
  const [account, setAccount] = useState('');
  const [expires, setExpires] = useState('');
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState('');
  return (
    <Dialog title="Create an access token" onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setError('');
          if (scopes.length === 0) return setFields({ scopes: 'Choose at least one thing this token may do.' });
          setFields({});
          try {
            const expiresAt = endOfDay(expires);
            const body = { description: description.trim(), scopes, ...(account.trim() && { account: account.trim() }), ...(expiresAt && { expiresAt }) };
            const r = await api<{ token: string }>('/api/tokens', { method: 'POST', body });
            props.onCreated(r.token);
          } catch (err) {
            const e2 = err as ApiError;
            setFields(e2.fields);
            setError(Object.keys(e2.fields).length ? '' : e2.message);
          }
        }}
      >
        <Field label="Description" name="description" value={description} onInput={setDescription} error={fields.description} required maxLength={100} hint="For example Prometheus." />
        <ScopeChoices scopes={TOKEN_SCOPES} value={scopes} onChange={setScopes} error={fields.scopes} />
        <Field label="Account (optional)" name="account" type="email" value={account} onInput={setAccount} error={fields.account} hint="Bind the token to one account; empty for a server-wide token." />
        <Field label="Expires on (optional)" name="expiresAt" type="date" value={expires} onInput={setExpires} error={fields.expiresAt} />
        <FormError message={error} />
        <div class="actions">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" type="submit">
            Create token
          </button>
        </div>
      </form>
    </Dialog>
  );
}
