import { useEffect, useState } from 'preact/hooks';

/** Hash routes (`#/keys`, `#/admin/accounts/a@b`): a sign-in link's token stays out of server logs and Referer headers. */
export interface Route {
  path: string;
  query: URLSearchParams;
}

export function currentRoute(): Route {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?', 2) as [string, string | undefined];
  return { path: path || '/', query: new URLSearchParams(query ?? '') };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const update = (): void => setRoute(currentRoute());
    addEventListener('hashchange', update);
    return () => removeEventListener('hashchange', update);
  }, []);
  return route;
}

export function navigate(path: string): void {
  location.hash = `#${path}`;
}

/** A `next` target after sign-in: only paths inside the console (never `//host`, which would name another site if it ever left the hash). */
export function safeNext(next: string | null): string | null {
  return next && /^\/(?!\/)[A-Za-z0-9/_.@%+-]*$/.test(next) && !next.startsWith('/sign-in') && !next.startsWith('/link/') ? next : null;
}
