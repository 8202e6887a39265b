import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import { CopyBox } from '../components/Copy';
import { Confirm, Dialog } from '../components/Dialog';
import { Field, FormError } from '../components/Field';
import { ACCOUNT_SCOPES, dateTime, inert, platformLabel, PLATFORMS, protocolLabel, relative, SCOPE_WORDS, scopeSummary, splitList } from '../format';
import { LoginHistory } from './LoginHistory';

interface Endpoint {
  serverName: string;
  port: number;
  securePort: number;
  enabled: boolean;
}
type ConnectionInfo = Record<'smtp' | 'imap' | 'pop3', Endpoint>;

export interface CredentialKey {
  id: string;
  name: string;
  createdAt: string;
  lastUsedAt: string | null;
  isActive: boolean;
  scopes: string[];
  expiresAt?: string;
  lastUsedIp?: string;
  lastUsedProtocol?: string;
  platform?: string;
  deviceId?: string;
  canary?: true;
  limits?: SendingLimits;
}

/** A key's SMTP sending limits (the API's `limits`). */
interface SendingLimits {
  messagesPerHour?: number;
  recipientsPerMessage?: number;
  recipientsPerDay?: number;
}

const LIMIT_FIELDS: { name: keyof SendingLimits; label: string }[] = [
  { name: 'messagesPerHour', label: 'Messages per hour' },
  { name: 'recipientsPerMessage', label: 'Recipients per message' },
  { name: 'recipientsPerDay', label: 'Recipients per day' },
];
const MAX_LIMIT = 1_000_000;

/** The filled-in limits as numbers (null when none), or an error message. */
function limitsOf(values: Record<keyof SendingLimits, string>): { limits: SendingLimits | null } | { error: string } {
  const out: SendingLimits = {};
  for (const { name } of LIMIT_FIELDS) {
    const v = values[name].trim();
    if (v === '') continue;
    const n = /^\d{1,7}$/.test(v) ? Number(v) : 0;
    if (n < 1 || n > MAX_LIMIT) return { error: 'Each limit is a whole number from 1 to 1,000,000.' };
    out[name] = n;
  }
  return { limits: Object.keys(out).length ? out : null };
}

function limitSummary(limits: SendingLimits): string {
  return [
    limits.messagesPerHour && `${limits.messagesPerHour} messages/hour`,
    limits.recipientsPerMessage && `${limits.recipientsPerMessage} recipients/message`,
    limits.recipientsPerDay && `${limits.recipientsPerDay} recipients/day`,
  ]
    .filter(Boolean)
    .join(', ');
}

interface Created extends CredentialKey {
  apiKey: string;
  setupUrl?: string;
  setupExpiresAt?: string;
  qrPngDataUrl?: string;
}

interface Listing {
  connectionInfo: ConnectionInfo;
  keys: CredentialKey[];
  nextCursor?: string | null;
}

type Modal =
  | { kind: 'create' }
  | { kind: 'device' }
  | { kind: 'created'; key: Created; title: string }
  | { kind: 'revoke'; key: CredentialKey }
  | { kind: 'rotate'; key: CredentialKey }
  | { kind: 'history'; key: CredentialKey }
  | null;

/** The keys of one account: the holder's own ("My keys") or any account's for an administrator. */
export function KeysPage(props: { account: string; own: boolean }) {
  const base = props.own ? '/api/smtp-credentials' : `/api/accounts/${encodeURIComponent(props.account)}/smtp-credentials`;
  const eventsBase = props.own ? '/api/smtp-credentials/events' : `/api/accounts/${encodeURIComponent(props.account)}/events`;
  const [listing, setListing] = useState<Listing | null>(null);
  const [more, setMore] = useState<string | null>(null);
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const [modal, setModal] = useState<Modal>(null);

  const load = useCallback(async () => {
    try {
      const l = await api<Listing>(base);
      setListing(l);
      setMore(l.nextCursor ?? null);
      setError('');
    } catch (err) {
      setError((err as Error).message);
    }
  }, [base]);
  useEffect(() => void load(), [load]);

  const loadMore = async (): Promise<void> => {
    if (!more || !listing) return;
    try {
      const l = await api<Listing>(`${base}?cursor=${encodeURIComponent(more)}`);
      setListing({ ...listing, keys: [...listing.keys, ...l.keys] });
      setMore(l.nextCursor ?? null);
    } catch (err) {
      setError((err as Error).message);
    }
  };

  const Heading = props.own ? 'h1' : 'h2';
  return (
    <section aria-labelledby="keys-h">
      <div class="page-head">
        <Heading id="keys-h">{props.own ? 'My keys' : 'Keys'}</Heading>
        <div class="actions">
          <button type="button" class="primary" onClick={() => setModal({ kind: 'create' })}>
            Create a key
          </button>
          <button type="button" onClick={() => setModal({ kind: 'device' })}>
            Add a phone or tablet
          </button>
        </div>
      </div>
      <p class="lead">
        Each mail app or device gets its own key, used as the password. Revoke a key and that app stops at once; your other apps keep working.
      </p>
      <p class="sr-only" role="status" aria-live="polite">
        {status}
      </p>
      {status && <p class="notice">{status}</p>}
      <FormError message={error} />
      {listing && (
        <KeyTable
          keys={listing.keys}
          onRevoke={(key) => setModal({ kind: 'revoke', key })}
          onRotate={(key) => setModal({ kind: 'rotate', key })}
          onHistory={(key) => setModal({ kind: 'history', key })}
        />
      )}
      {more && (
        <button type="button" onClick={loadMore}>
          Show more keys
        </button>
      )}
      <section class="card" aria-labelledby="failed-h">
        <h2 id="failed-h">Failed sign-ins</h2>
        <LoginHistory base={eventsBase} result="failure" label="Failed sign-ins" empty="No failed sign-ins recorded." />
      </section>
      {listing && <ConnectionSettings info={listing.connectionInfo} account={props.account} />}
      {modal?.kind === 'history' && (
        <Dialog title={`Sign-ins with ${inert(modal.key.name)}`} onClose={() => setModal(null)} wide>
          <LoginHistory base={eventsBase} keyId={modal.key.id} label={`Sign-ins with ${inert(modal.key.name)}`} empty="This key has not been used yet." />
          <div class="actions">
            <button type="button" onClick={() => setModal(null)}>
              Close
            </button>
          </div>
        </Dialog>
      )}

      {modal?.kind === 'create' && (
        <CreateKeyDialog
          base={base}
          onClose={() => setModal(null)}
          onCreated={(key) => {
            setModal({ kind: 'created', key, title: 'Your new key' });
            void load();
          }}
        />
      )}
      {modal?.kind === 'device' && (
        <AddDeviceDialog
          base={base}
          onClose={() => setModal(null)}
          onCreated={(key) => {
            setModal({ kind: 'created', key, title: `Set up ${inert(key.name)}` });
            void load();
          }}
        />
      )}
      {modal?.kind === 'created' && listing && <CreatedDialog title={modal.title} created={modal.key} info={listing.connectionInfo} account={props.account} onClose={() => setModal(null)} />}
      {modal?.kind === 'revoke' && (
        <Confirm
          title="Revoke this key?"
          message={
            <>
              Apps using <bdi class="name">{inert(modal.key.name)}</bdi> stop working at once, and open sessions end. This cannot be undone.
            </>
          }
          action="Revoke key"
          danger
          onClose={() => setModal(null)}
          onConfirm={async () => {
            try {
              await api(`${base}/${encodeURIComponent(modal.key.id)}`, { method: 'DELETE' });
              setStatus(`Revoked “${inert(modal.key.name)}”.`);
            } catch (err) {
              setError((err as Error).message);
            }
            setModal(null);
            await load();
          }}
        />
      )}
      {modal?.kind === 'rotate' && (
        <Confirm
          title="Replace this key?"
          message={
            <>
              A new key replaces <bdi class="name">{inert(modal.key.name)}</bdi>; the old one stops working at once. You will need to enter the new key in the app.
            </>
          }
          action="Replace key"
          onClose={() => setModal(null)}
          onConfirm={async () => {
            try {
              const key = await api<Created>(`${base}/${encodeURIComponent(modal.key.id)}/rotate`, { method: 'POST' });
              setModal({ kind: 'created', key, title: 'Your replacement key' });
            } catch (err) {
              setError((err as Error).message);
              setModal(null);
            }
            await load();
          }}
        />
      )}
    </section>
  );
}

function state(key: CredentialKey): string {
  if (!key.isActive) return 'Inactive';
  // A canary logs in nowhere: it is there to be stolen and noticed.
  const base = key.canary ? 'Canary (grants nothing)' : key.expiresAt ? `Active, expires ${relative(key.expiresAt)}` : 'Active';
  return key.limits ? `${base}; at most ${limitSummary(key.limits)}` : base;
}

export function KeyTable(props: { keys: CredentialKey[]; onRevoke: (key: CredentialKey) => void; onRotate: (key: CredentialKey) => void; onHistory?: (key: CredentialKey) => void }) {
  if (props.keys.length === 0) return <p class="empty">No keys yet. Create one for each mail app or device.</p>;
  return (
    <table class="list keys">
      <caption class="sr-only">Keys</caption>
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col">Device</th>
          <th scope="col">Allows</th>
          <th scope="col">Created</th>
          <th scope="col">Expires</th>
          <th scope="col">Last used</th>
          <th scope="col">State</th>
          <th scope="col">
            <span class="sr-only">Actions</span>
          </th>
        </tr>
      </thead>
      <tbody>
        {props.keys.map((k) => (
          <tr key={k.id} data-key-id={k.id}>
            <th scope="row" data-label="Name">
              <bdi class="name">{inert(k.name)}</bdi>
            </th>
            <td data-label="Device">{platformLabel(k.platform)}</td>
            <td data-label="Allows">{scopeSummary(k.scopes)}</td>
            <td data-label="Created">
              <time dateTime={k.createdAt}>{dateTime(k.createdAt)}</time>
            </td>
            <td data-label="Expires">{k.expiresAt ? <time dateTime={k.expiresAt}>{dateTime(k.expiresAt)}</time> : 'Never'}</td>
            <td data-label="Last used" class="last-used">
              {k.lastUsedAt ? (
                <>
                  <time dateTime={k.lastUsedAt} title={dateTime(k.lastUsedAt)}>
                    {relative(k.lastUsedAt)}
                  </time>
                  {k.lastUsedIp && <span class="where"> from {k.lastUsedIp}</span>}
                  {k.lastUsedProtocol && <span class="how"> over {protocolLabel(k.lastUsedProtocol)}</span>}
                </>
              ) : (
                'Never'
              )}
            </td>
            <td data-label="State">{state(k)}</td>
            <td class="row-actions">
              {props.onHistory && (
                <button type="button" onClick={() => props.onHistory!(k)} aria-label={`History of key ${inert(k.name)}`}>
                  History
                </button>
              )}
              <button type="button" onClick={() => props.onRotate(k)} aria-label={`Replace key ${inert(k.name)}`}>
                Replace
              </button>
              <button type="button" class="danger" onClick={() => props.onRevoke(k)} aria-label={`Revoke key ${inert(k.name)}`}>
                Revoke
              </button>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Scope checkboxes, each described in plain words. */
export function ScopeChoices(props: { scopes: string[]; value: string[]; onChange: (v: string[]) => void; error?: string | undefined }) {
  return (
    <fieldset class={props.error ? 'field invalid' : 'field'} aria-describedby={props.error ? 'scopes-err' : undefined}>
      <legend>What may this key do?</legend>
      {props.scopes.map((s) => (
        <label class="check" key={s}>
          <input
            type="checkbox"
            name="scopes"
            value={s}
            checked={props.value.includes(s)}
            onChange={(e) => {
              const on = (e.currentTarget as HTMLInputElement).checked;
              props.onChange(on ? [...props.value, s] : props.value.filter((x) => x !== s));
            }}
          />
          {SCOPE_WORDS[s] ?? s}
        </label>
      ))}
      {props.error && (
        <p class="error" id="scopes-err" role="alert">
          {props.error}
        </p>
      )}
    </fieldset>
  );
}

/** `<input type=date>` value → the end of that day, local time, as ISO; '' → null. */
export function endOfDay(date: string): string | null {
  if (!date) return null;
  const d = new Date(`${date}T23:59:59`);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

function CreateKeyDialog(props: { base: string; onClose: () => void; onCreated: (key: Created) => void }) {
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState<string[]>(['smtp', 'imap']);
  const [expires, setExpires] = useState('');
  const [ips, setIps] = useState('');
  const [limitValues, setLimitValues] = useState<Record<keyof SendingLimits, string>>({ messagesPerHour: '', recipientsPerMessage: '', recipientsPerDay: '' });
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  return (
    <Dialog title="Create a key" onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          if (busy) return;
          const local: Record<string, string> = {};
          if (!name.trim()) local.name = 'Give the key a name, such as the app it is for.';
          if (scopes.length === 0) local.scopes = 'Choose at least one thing this key may do.';
          const limits = limitsOf(limitValues);
          if ('error' in limits) local.limits = limits.error;
          setFields(local);
          if (Object.keys(local).length) return;
          setBusy(true);
          setError('');
          try {
            // Absent, not null: the API's type coercion reads a null list as [""].
            const expiresAt = endOfDay(expires);
            const sending = 'limits' in limits ? limits.limits : null;
            const body = { name: name.trim(), scopes, ...(expiresAt && { expiresAt }), ...(ips.trim() && { allowedIps: splitList(ips) }), ...(sending && { limits: sending }) };
            props.onCreated(await api<Created>(props.base, { method: 'POST', body }));
          } catch (err) {
            const e2 = err as ApiError;
            setFields(e2.fields ?? {});
            setError(e2.fields && Object.keys(e2.fields).length ? '' : e2.message);
          } finally {
            setBusy(false);
          }
        }}
      >
        <Field label="Name" name="name" value={name} onInput={setName} error={fields.name} hint="For example Thunderbird, or Work laptop." maxLength={100} required />
        <ScopeChoices scopes={ACCOUNT_SCOPES} value={scopes} onChange={setScopes} error={fields.scopes} />
        <Field label="Expires on (optional)" name="expiresAt" type="date" value={expires} onInput={setExpires} error={fields.expiresAt} hint="Leave empty for a key that does not expire." />
        <Field
          label="Only from these addresses (optional)"
          name="allowedIps"
          multiline
          value={ips}
          onInput={setIps}
          error={fields.allowedIps}
          hint="IP addresses or ranges such as 192.0.2.0/24, separated by commas or new lines. Leave empty to allow any."
        />
        <fieldset class={fields.limits ? 'field invalid' : 'field'}>
          <legend>Sending limits (optional)</legend>
          {LIMIT_FIELDS.map((f) => (
            <Field
              key={f.name}
              label={f.label}
              name={f.name}
              type="number"
              value={limitValues[f.name]}
              onInput={(v) => setLimitValues({ ...limitValues, [f.name]: v })}
              hint={f.name === 'recipientsPerDay' ? 'Sending past a limit is refused until the hour or day is over. Leave empty for no limit.' : undefined}
            />
          ))}
          {fields.limits && (
            <p class="error" role="alert">
              {fields.limits}
            </p>
          )}
        </fieldset>
        <FormError message={error} />
        <div class="actions">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" type="submit" disabled={busy}>
            Create key
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function AddDeviceDialog(props: { base: string; onClose: () => void; onCreated: (key: Created) => void }) {
  const [name, setName] = useState('');
  const [platform, setPlatform] = useState('ios');
  const [fields, setFields] = useState<Record<string, string>>({});
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const apple = PLATFORMS.find((p) => p.value === platform)?.apple ?? false;
  return (
    <Dialog title="Add a phone or tablet" onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          if (busy) return;
          if (!name.trim()) return setFields({ name: 'Give the device a name, such as iPhone 15.' });
          setBusy(true);
          setError('');
          setFields({});
          try {
            const body = { name: name.trim(), platform, deviceId: crypto.randomUUID(), ...(apple && { setupLink: true }) };
            props.onCreated(await api<Created>(`${props.base}/mobile`, { method: 'POST', body }));
          } catch (err) {
            const e2 = err as ApiError;
            setFields(e2.fields ?? {});
            setError(e2.fields && Object.keys(e2.fields).length ? '' : e2.message);
          } finally {
            setBusy(false);
          }
        }}
      >
        <Field label="Device name" name="name" value={name} onInput={setName} error={fields.name} hint="For example iPhone 15." maxLength={100} required />
        <div class="field">
          <label for="platform">Kind of device</label>
          <select id="platform" name="platform" value={platform} onChange={(e) => setPlatform((e.currentTarget as HTMLSelectElement).value)}>
            {PLATFORMS.map((p) => (
              <option key={p.value} value={p.value}>
                {p.label}
              </option>
            ))}
          </select>
        </div>
        <p class="hint">
          {apple
            ? 'You will get a QR code to scan with the device’s camera; it installs the mail settings with a new key.'
            : 'You will get a new key and the settings to type into the device’s mail app.'}{' '}
          The key can send and read mail, nothing else.
        </p>
        <FormError message={error} />
        <div class="actions">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button class="primary" type="submit" disabled={busy}>
            Add device
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/** The one time a key is shown: the key with a copy button, and how to use it. */
function CreatedDialog(props: { title: string; created: Created; info: ConnectionInfo; account: string; onClose: () => void }) {
  const c = props.created;
  return (
    <Dialog title={props.title} onClose={props.onClose} wide>
      {c.setupUrl && c.qrPngDataUrl ? (
        <div class="setup">
          <p>Scan this code with the camera of {platformLabel(c.platform)}, open the link and install the profile. The link works once{c.setupExpiresAt ? `, until ${dateTime(c.setupExpiresAt)}` : ''}.</p>
          <img class="qr" src={c.qrPngDataUrl} alt="QR code of the one-time setup link" width={240} height={240} data-testid="setup-qr" />
          <p>
            <a class="button" href={c.setupUrl} download="keygate.mobileconfig">
              Download the profile (.mobileconfig)
            </a>
          </p>
          <details>
            <summary>Set up by hand instead</summary>
            <CopyBox label="Key" value={c.apiKey} />
            <ConnectionSettings info={props.info} account={props.account} compact />
          </details>
        </div>
      ) : (
        <>
          <p class="notice">
            Copy this key now: it is shown only once. If you lose it, replace or revoke the key and create another.
          </p>
          <CopyBox label="Key" value={c.apiKey} testId="new-key" />
          <ConnectionSettings info={props.info} account={props.account} compact />
        </>
      )}
      <div class="actions">
        <button type="button" class="primary" onClick={props.onClose}>
          Done
        </button>
      </div>
    </Dialog>
  );
}

/** What to type into a mail app by hand. */
export function ConnectionSettings(props: { info: ConnectionInfo; account: string; compact?: boolean }) {
  const rows = (['imap', 'smtp', 'pop3'] as const).filter((p) => props.info[p].enabled);
  const Heading = props.compact ? 'h3' : 'h2';
  return (
    <section class={props.compact ? 'settings compact' : 'settings card'} aria-label="Connection settings">
      <Heading>Connection settings</Heading>
      <p>
        User name: <strong><bdi>{inert(props.account)}</bdi></strong>. Password: the key.
      </p>
      <table class="list">
        <caption class="sr-only">Servers</caption>
        <thead>
          <tr>
            <th scope="col">Protocol</th>
            <th scope="col">Server</th>
            <th scope="col">SSL/TLS port</th>
            <th scope="col">STARTTLS port</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((p) => (
            <tr key={p}>
              <th scope="row" data-label="Protocol">
                {p === 'imap' ? 'Incoming (IMAP)' : p === 'pop3' ? 'Incoming (POP3)' : 'Outgoing (SMTP)'}
              </th>
              <td data-label="Server">{props.info[p].serverName}</td>
              <td data-label="SSL/TLS port">{props.info[p].securePort}</td>
              <td data-label="STARTTLS port">{props.info[p].port}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
