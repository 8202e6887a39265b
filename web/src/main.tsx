import { render } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import { setSessionLostHandler } from './api';
import { inert } from './format';
import { AccountPage } from './pages/Account';
import { Accounts } from './pages/Accounts';
import { KeysPage } from './pages/Keys';
import { LinkSignIn } from './pages/LinkSignIn';
import { Overview } from './pages/Overview';
import { SignIn } from './pages/SignIn';
import { Tokens } from './pages/Tokens';
import { currentRoute, navigate, safeNext, useRoute, type Route } from './router';
import { loadSession, signOut, type Session } from './session';
import './styles.css';

/** Where the address must go before a page can be shown there, or null when the page it names can be shown. */
function redirectFor(session: Session, route: Route): string | null {
  const path = route.path;
  if (!session.signedIn && !path.startsWith('/sign-in') && !path.startsWith('/link/')) {
    return path === '/' ? '/sign-in' : `/sign-in?next=${encodeURIComponent(path)}`;
  }
  if (session.signedIn && (path === '/' || path.startsWith('/sign-in'))) {
    return safeNext(route.query.get('next')) ?? (session.kind === 'admin' ? '/admin' : '/keys');
  }
  return null;
}

function App() {
  const route = useRoute();
  const [session, setSession] = useState<Session | null>(null);
  const [loadError, setLoadError] = useState('');

  const refresh = useCallback(async () => {
    try {
      setSession(await loadSession());
      setLoadError('');
    } catch (err) {
      setLoadError((err as Error).message);
    }
  }, []);
  useEffect(() => {
    void refresh();
    // A request that finds the session gone sends the person to sign in, and back here after it.
    setSessionLostHandler(() => {
      const here = location.hash.replace(/^#/, '') || '/';
      setSession((s) => (s ? { ...s, signedIn: false } : s));
      if (!here.startsWith('/sign-in')) navigate(`/sign-in?next=${encodeURIComponent(here)}&expired=1`);
    });
  }, [refresh]);

  const path = route.path;
  const redirect = session ? redirectFor(session, route) : null;
  useEffect(() => {
    // Read the address again: a navigation made since this render (the session-lost handler's) is not overridden.
    const target = session ? redirectFor(session, currentRoute()) : null;
    if (target !== null) navigate(target);
  }, [session, path, redirect]);
  useEffect(() => {
    const main = document.getElementById('main');
    main?.focus();
  }, [path]);

  if (loadError) return <p class="form-error" role="alert">{loadError}</p>;
  // While the address is about to change, show no page: one drawn under the old address (Overview at #/sign-in) would flash, and a navigation made meanwhile would be undone.
  if (!session || redirect !== null) return <p class="loading">Loading…</p>;

  let page;
  let title = 'Keygate';
  if (path.startsWith('/link/')) {
    title = 'Sign in with a link';
    page = <LinkSignIn token={path.slice('/link/'.length)} onSignedIn={refresh} />;
  } else if (!session.signedIn) {
    title = 'Sign in';
    page = <SignIn session={session} query={route.query} onSignedIn={refresh} />;
  } else if (session.kind === 'admin') {
    const m = /^\/admin\/accounts\/(.+)$/.exec(path);
    if (m) {
      const address = decodeURIComponent(m[1]!);
      title = address;
      page = <AccountPage address={address} />;
    } else if (path === '/admin/accounts') {
      title = 'Accounts';
      page = <Accounts />;
    } else if (path === '/admin/tokens') {
      title = 'Access tokens';
      page = <Tokens />;
    } else {
      title = 'Overview';
      page = <Overview />;
    }
  } else {
    title = 'My keys';
    page = <KeysPage account={session.account!} own />;
  }
  document.title = `${title} · Keygate`;

  const nav =
    session.signedIn && session.kind === 'admin'
      ? [
          ['/admin', 'Overview'],
          ['/admin/accounts', 'Accounts'],
          ['/admin/tokens', 'Access tokens'],
        ]
      : session.signedIn
        ? [['/keys', 'My keys']]
        : [];
  const current = (href: string): boolean => (href === '/admin' ? path === '/admin' : path.startsWith(href));

  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Keygate</span>
        {nav.length > 0 && (
          <nav aria-label="Main">
            <ul>
              {nav.map(([href, label]) => (
                <li key={href}>
                  <a href={`#${href}`} aria-current={current(href!) ? 'page' : undefined}>
                    {label}
                  </a>
                </li>
              ))}
            </ul>
          </nav>
        )}
        {session.signedIn && (
          <div class="who">
            <span class="who-name">
              <bdi>{session.kind === 'admin' ? `Administrator (${inert(session.keyName)})` : inert(session.account)}</bdi>
            </span>
            <button
              type="button"
              onClick={async () => {
                await signOut().catch(() => undefined);
                setSession({ signedIn: false, oidc: session.oidc });
                navigate('/sign-in');
              }}
            >
              Sign out
            </button>
          </div>
        )}
      </header>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
