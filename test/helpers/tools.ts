import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** True when `bin` runs and exits 0 with `args`. */
export function runs(bin: string, args: string[] = ['--version']): boolean {
  return spawnSync(bin, args, { stdio: 'ignore' }).status === 0;
}

/**
 * A program the tests drive. Missing altogether, the tests that need it skip,
 * saying so once (`.ci/run` installs it, so CI never skips). Present but
 * lacking a capability a test needs, it is a broken install, not a missing
 * one: the test fails, naming the Debian package that brings the capability.
 */
export class Tool {
  private isFound: boolean | undefined;
  private lack: string | null | undefined;
  private warned = false;

  /**
   * @param name the program, as the messages name it
   * @param packages the Debian packages that bring it
   * @param present whether the program itself is installed
   * @param lacking what the installed program cannot do, naming the package that brings it; null when nothing
   */
  constructor(
    readonly name: string,
    private readonly packages: string,
    private readonly present: () => boolean,
    private readonly lacking: () => string | null = () => null,
  ) {}

  /** Why tests that need this program are skipped. */
  get skipReason(): string {
    return `${this.name} not found (apt ${this.packages}): skipping the tests that need it`;
  }

  /** The program is installed; warns once with the skip reason when it is not. */
  get found(): boolean {
    this.isFound ??= this.present();
    if (!this.isFound && !this.warned) {
      this.warned = true;
      console.warn(this.skipReason);
    }
    return this.isFound;
  }

  /** What the installed program lacks, or null (probed once). */
  get missing(): string | null {
    this.lack ??= this.lacking();
    return this.lack;
  }

  /** Throws, naming the missing package, when the installed program cannot do what the tests need. */
  assertCapable(): void {
    const missing = this.missing;
    if (missing !== null) throw new Error(`${this.name} is installed but ${missing} (.ci/run does)`);
  }
}

/**
 * What keeps swaks from speaking TLS, naming the packages, or null. swaks
 * needs Perl's Net::SSLeay for TLS; without it every TLS step exits 10 with
 * `*** TLS not available: requires Net::SSLeay`.
 */
export function swaksTlsProblem(env: NodeJS.ProcessEnv = process.env): string | null {
  const support = spawnSync('swaks', ['--support'], { encoding: 'utf8', env });
  if (/^=== TLS supported/m.test(support.stdout)) return null;
  const why = /^\*\*\* TLS not available.*$/m.exec(`${support.stdout}\n${support.stderr}`)?.[0] ?? '`swaks --support` does not list TLS';
  return `cannot speak TLS (${why}): install the Debian packages libnet-ssleay-perl and libio-socket-ssl-perl`;
}

export const SWAKS = new Tool('swaks', 'swaks', () => runs('swaks'), () => swaksTlsProblem());

/** nginx's mail proxy is a dynamic module of its own package. */
export const NGINX_MAIL_MODULE = '/usr/lib/nginx/modules/ngx_mail_module.so';
export const NGINX = new Tool('nginx', 'nginx-light libnginx-mod-mail', () => runs('nginx', ['-v']), () =>
  existsSync(NGINX_MAIL_MODULE) ? null : `has no mail module (${NGINX_MAIL_MODULE}): install the Debian package libnginx-mod-mail`,
);
