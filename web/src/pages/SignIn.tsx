import { useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import { Field, FormError } from '../components/Field';
import type { Session } from '../session';

const OIDC_ERRORS: Record<string, string> = {
  refused: 'Sign-in through your organisation did not work. Your account may not exist here; ask your administrator.',
  unavailable: 'Sign-in through your organisation is not possible right now; try again in a few minutes.',
};

/** The three ways in: mailbox address and password, administrator key, and the organisation's identity provider. */
export function SignIn(props: { session: Session; query: URLSearchParams; onSignedIn: () => Promise<void> }) {
  const expired = props.query.get('expired') === '1' || props.query.has('next');
  const oidcError = OIDC_ERRORS[props.query.get('error') ?? ''];
  return (
    <div class="sign-in">
      <h1>Sign in to Keygate</h1>
      {expired && (
        <p class="notice" role="status">
          Please sign in; you will be taken back to the page you were on.
        </p>
      )}
      {oidcError && <FormError message={oidcError} />}
      <div class="sign-in-grid">
        <PasswordSignIn onSignedIn={props.onSignedIn} />
        <div>
          {props.session.oidc && (
            <section class="card" aria-labelledby="oidc-h">
              <h2 id="oidc-h">Your organisation</h2>
              <p>Sign in with your organisation’s account; your email address names your mailbox.</p>
              <a class="button primary" href="/api/console/oidc/start">
                Sign in with your organisation
              </a>
            </section>
          )}
          <KeySignIn onSignedIn={props.onSignedIn} />
        </div>
      </div>
    </div>
  );
}

function PasswordSignIn(props: { onSignedIn: () => Promise<void> }) {
  const [address, setAddress] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [unavailable, setUnavailable] = useState(false);
  const [busy, setBusy] = useState(false);

  const checkAvailable = async (): Promise<void> => {
    if (!/^[^\s@]+@[^\s@]+$/.test(address.trim())) return setUnavailable(false);
    try {
      const r = await api<{ available: boolean }>('/api/console/sign-in/password/available', { method: 'POST', body: { address: address.trim() }, signIn: true });
      setUnavailable(!r.available);
    } catch {
      setUnavailable(false);
    }
  };

  return (
    <section class="card" aria-labelledby="pw-h">
      <h2 id="pw-h">Your mailbox</h2>
      <p>Use your email address and your usual mailbox password. It is checked once with your mail server and never stored.</p>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          if (busy) return;
          setBusy(true);
          setError('');
          try {
            await api('/api/console/sign-in/password', { method: 'POST', body: { address: address.trim(), password }, signIn: true });
            setPassword('');
            await props.onSignedIn();
          } catch (err) {
            setPassword('');
            if (err instanceof ApiError && err.status === 409) setUnavailable(true);
            else setError(err instanceof ApiError && err.status === 400 ? 'Enter your email address and password.' : (err as Error).message);
          } finally {
            setBusy(false);
          }
        }}
      >
        <Field label="Email address" name="address" type="email" autocomplete="username" required value={address} onInput={setAddress} onBlur={checkAvailable} maxLength={254} />
        {unavailable && (
          <p class="notice" role="status" data-testid="password-unavailable">
            Signing in with the mailbox password is not available for this account. Ask your administrator for a one-time sign-in link.
          </p>
        )}
        <Field label="Password" name="password" type="password" autocomplete="current-password" required value={password} onInput={setPassword} maxLength={1024} />
        <FormError message={error} />
        <button class="primary" type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </section>
  );
}

function KeySignIn(props: { onSignedIn: () => Promise<void> }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  return (
    <section class="card" aria-labelledby="key-h">
      <h2 id="key-h">Administrator</h2>
      <p>Paste an administrator key. It is used to sign you in and is not kept in this browser.</p>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          if (busy) return;
          setBusy(true);
          setError('');
          try {
            await api('/api/console/sign-in/key', { method: 'POST', body: { key: key.trim() }, signIn: true });
            setKey('');
            await props.onSignedIn();
          } catch (err) {
            setKey('');
            setError(err instanceof ApiError && err.status === 400 ? 'Paste an administrator key.' : (err as Error).message);
          } finally {
            setBusy(false);
          }
        }}
      >
        <Field label="Administrator key" name="key" type="password" autocomplete="off" required value={key} onInput={setKey} maxLength={1024} />
        <FormError message={error} />
        <button class="primary" type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in as administrator'}
        </button>
      </form>
    </section>
  );
}
