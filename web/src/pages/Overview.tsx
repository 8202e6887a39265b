import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { FormError } from '../components/Field';
import { dateTime } from '../format';

interface OverviewData {
  sessions: Record<string, number>;
  logins: { since: string; byProtocol: Record<string, { success: number; failure: number }> };
}

const NAMES: Record<string, string> = { imap: 'IMAP', pop3: 'POP3', smtp: 'SMTP', http: 'API', console: 'Console sign-in' };

/** Live mail sessions and the last hour's logins, refreshed every 10 seconds. */
export function Overview() {
  const [data, setData] = useState<OverviewData | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    let stop = false;
    const load = async (): Promise<void> => {
      try {
        const d = await api<OverviewData>('/api/console/overview');
        if (!stop) {
          setData(d);
          setError('');
        }
      } catch (err) {
        if (!stop) setError((err as Error).message);
      }
    };
    void load();
    const timer = setInterval(load, 10_000);
    return () => {
      stop = true;
      clearInterval(timer);
    };
  }, []);
  const protocols = data ? [...new Set([...Object.keys(data.sessions), ...Object.keys(data.logins.byProtocol)])].sort() : [];
  return (
    <section aria-labelledby="ov-h">
      <div class="page-head">
        <h1 id="ov-h">Overview</h1>
        <div class="actions">
          <a class="button" href="#/admin/accounts">
            Accounts
          </a>
          <a class="button" href="#/admin/tokens">
            Access tokens
          </a>
        </div>
      </div>
      <FormError message={error} />
      {data && (
        <>
          <div class="stats">
            {(['imap', 'pop3', 'smtp'] as const).map((p) => (
              <div class="stat card" key={p}>
                <span class="stat-value">{data.sessions[p] ?? 0}</span>
                <span class="stat-label">live {NAMES[p]} sessions</span>
              </div>
            ))}
          </div>
          <table class="list">
            <caption>Logins since {dateTime(data.logins.since)} (the last hour at most, this server)</caption>
            <thead>
              <tr>
                <th scope="col">Where</th>
                <th scope="col">Live sessions</th>
                <th scope="col">Logins</th>
                <th scope="col">Failures</th>
              </tr>
            </thead>
            <tbody>
              {protocols.map((p) => (
                <tr key={p}>
                  <th scope="row" data-label="Where">
                    {NAMES[p] ?? p}
                  </th>
                  <td data-label="Live sessions">{data.sessions[p] ?? '—'}</td>
                  <td data-label="Logins">{data.logins.byProtocol[p]?.success ?? 0}</td>
                  <td data-label="Failures">{data.logins.byProtocol[p]?.failure ?? 0}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
