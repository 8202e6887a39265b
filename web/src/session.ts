import { api, setCsrfToken } from './api';

export interface Session {
  signedIn: boolean;
  kind?: 'admin' | 'account';
  account?: string;
  displayName?: string | null;
  keyName?: string;
  csrfToken?: string;
  expiresAt?: string;
  oidc: boolean;
}

export async function loadSession(): Promise<Session> {
  const s = await api<Session>('/api/console/session');
  setCsrfToken(s.csrfToken ?? '');
  return s;
}

export async function signOut(): Promise<void> {
  await api<void>('/api/console/sign-out', { method: 'POST', signIn: true });
  setCsrfToken('');
}
