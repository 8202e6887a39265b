import { useState } from 'preact/hooks';
import { api } from '../api';
import { FormError } from '../components/Field';

/**
 * A one-time sign-in link lands here. Signing in takes a click, so a link
 * previewer that opens the URL does not use the link up.
 */
export function LinkSignIn(props: { token: string; onSignedIn: () => Promise<void> }) {
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  return (
    <section class="card narrow" aria-labelledby="link-h">
      <h1 id="link-h">Sign in with a link</h1>
      <p>Your administrator sent you a one-time sign-in link. It works once and for a short time.</p>
      <FormError message={error} />
      <button
        class="primary"
        type="button"
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          setError('');
          try {
            await api('/api/console/sign-in/link', { method: 'POST', body: { token: props.token }, signIn: true });
            await props.onSignedIn();
            // Replace the link's history entry: Back must not lead to a used link.
            location.replace('#/keys');
          } catch (err) {
            setError(`${(err as Error).message} The link may have been used already or expired; ask for a new one.`);
          } finally {
            setBusy(false);
          }
        }}
      >
        Sign in
      </button>
    </section>
  );
}
