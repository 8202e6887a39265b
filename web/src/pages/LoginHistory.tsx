import { useCallback, useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { FormError } from '../components/Field';
import { dateTime, inert, protocolLabel, relative } from '../format';

export interface LoginEvent {
  id: string;
  time: string;
  account: string | null;
  keyId: string | null;
  protocol: string;
  method: string | null;
  ip: string;
  result: 'success' | 'failure' | 'temporary_failure';
  reason: string | null;
  client: { name?: string; version?: string } | null;
  newNetwork: boolean;
}

interface Page {
  events: LoginEvent[];
  next: string | null;
}

/** Why a sign-in failed, in plain words (the API's reason codes are for operators). */
const REASON_WORDS: Record<string, string> = {
  malformed: 'Not a key (mistyped or another password)',
  unknown_key: 'Unknown or deleted key',
  revoked: 'Revoked key',
  expired: 'Expired key',
  ip_not_allowed: 'From an address the key does not allow',
  account_disabled: 'Account disabled',
  account_mismatch: 'Key of another account',
  missing_scope: 'Key does not allow this',
  rate_limited: 'Too many attempts: held back',
  store_unavailable: 'Server busy',
};

const RESULT_WORDS = { success: 'Signed in', failure: 'Refused', temporary_failure: 'Try again later' } as const;

/**
 * Recent sign-ins from the login history: one key's (`keyId`), or an
 * account's refused ones (`result="failure"`). `base` is the account's
 * events route (own or administrator).
 */
export function LoginHistory(props: { base: string; keyId?: string; result?: 'failure'; limit?: number; empty: string; label: string }) {
  const [events, setEvents] = useState<LoginEvent[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState('');
  const query = (cursor?: string): string => {
    const q = new URLSearchParams({ limit: String(props.limit ?? 20) });
    if (props.keyId) q.set('key', props.keyId);
    if (props.result) q.set('result', props.result);
    if (cursor) q.set('cursor', cursor);
    return `${props.base}?${q.toString()}`;
  };
  const load = useCallback(async () => {
    try {
      const page = await api<Page>(query());
      setEvents(page.events);
      setNext(page.next);
      setError('');
    } catch (err) {
      setError((err as Error).message);
    }
  }, [props.base, props.keyId, props.result]);
  useEffect(() => void load(), [load]);

  const more = async (): Promise<void> => {
    if (!next || !events) return;
    try {
      const page = await api<Page>(query(next));
      setEvents([...events, ...page.events]);
      setNext(page.next);
    } catch (err) {
      setError((err as Error).message);
    }
  };

  return (
    <div class="history">
      <FormError message={error} />
      {events && events.length === 0 && <p class="empty">{props.empty}</p>}
      {events && events.length > 0 && (
        <table class="list history">
          <caption class="sr-only">{props.label}</caption>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Result</th>
              <th scope="col">Over</th>
              <th scope="col">From</th>
              <th scope="col">App</th>
            </tr>
          </thead>
          <tbody>
            {events.map((e) => (
              <tr key={e.id} class={`result-${e.result}`}>
                <td data-label="When">
                  <time dateTime={e.time} title={dateTime(e.time)}>
                    {relative(e.time)}
                  </time>
                </td>
                <td data-label="Result">
                  {RESULT_WORDS[e.result]}
                  {e.reason && e.result !== 'success' && <span class="why"> — {REASON_WORDS[e.reason] ?? inert(e.reason)}</span>}
                </td>
                <td data-label="Over">{e.protocol === 'console' ? 'Console' : protocolLabel(e.protocol)}</td>
                <td data-label="From">
                  {inert(e.ip)}
                  {e.newNetwork && <span class="badge"> new network</span>}
                </td>
                <td data-label="App">
                  <bdi>{inert([e.client?.name, e.client?.version].filter(Boolean).join(' ')) || '—'}</bdi>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {next && (
        <button type="button" onClick={more}>
          Show older sign-ins
        </button>
      )}
    </div>
  );
}
