import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';
import { parse as parsePlist, type PlistValue } from 'plist';
import { beforeAll, describe, expect, it } from 'vitest';
import { createSelfSignedCertificate } from '../../src/tls/index.js';
import {
  buildMobileconfig,
  buildMobileconfigPlist,
  checkSigner,
  MobileconfigError,
  mobileconfigFilename,
  signProfile,
  type ProfileSigner,
} from '../../src/setup/mobileconfig.js';
import { cmsVerify, INFO, opensslChain, opensslSigner } from './helpers.js';

const KEY = 'kg_' + 'A1b2C3d4'.repeat(5) + 'xyz' + 'QwErTy';
type Dict = { [key: string]: PlistValue };

function readProfile(xml: string): { profile: Dict; mail: Dict } {
  const profile = parsePlist(xml) as Dict;
  const content = profile.PayloadContent as Dict[];
  expect(content).toHaveLength(1);
  return { profile, mail: content[0]! };
}

describe('mobileconfig', () => {
  let rsa: ProfileSigner;
  let ec: ProfileSigner;
  beforeAll(() => {
    rsa = opensslSigner('rsa');
    ec = opensslSigner('ec');
  });

  it('signs a profile that `openssl cms -verify` accepts and that reads back as the expected plist', async () => {
    const der = buildMobileconfig({ address: 'alice@example.com', apiKey: KEY, connectionInfo: INFO, displayName: 'Alice Example', deviceId: 'iphone-1', signer: rsa });
    expect(der[0]).toBe(0x30); // DER SEQUENCE, not PEM or XML
    expect(der.includes(Buffer.from('<?xml'))).toBe(true); // enveloping, not detached

    const verified = await cmsVerify(der);
    expect(verified.ok, verified.stderr).toBe(true);
    const { profile, mail } = readProfile(verified.content);

    expect(profile.PayloadType).toBe('Configuration');
    expect(profile.PayloadVersion).toBe(1);
    expect(profile.PayloadIdentifier).toMatch(/^keygate\.[0-9a-f]{16}$/);
    expect(profile.PayloadUUID).toMatch(/^[0-9A-F-]{36}$/);
    expect(mail).toMatchObject({
      PayloadType: 'com.apple.mail.managed',
      PayloadVersion: 1,
      EmailAccountType: 'EmailTypeIMAP',
      EmailAddress: 'alice@example.com',
      EmailAccountName: 'Alice Example',
      IncomingMailServerHostName: 'imap.example.com',
      IncomingMailServerPortNumber: 993,
      IncomingMailServerUseSSL: true,
      IncomingMailServerUsername: 'alice@example.com',
      IncomingMailServerAuthentication: 'EmailAuthPassword',
      IncomingPassword: KEY,
      OutgoingMailServerHostName: 'mail.example.com',
      OutgoingMailServerPortNumber: 465,
      OutgoingMailServerUseSSL: true,
      OutgoingMailServerUsername: 'alice@example.com',
      OutgoingMailServerAuthentication: 'EmailAuthPassword',
      OutgoingPasswordSameAsIncomingPassword: true,
      OutgoingPassword: KEY,
    });
    expect(mail.PayloadIdentifier).toBe(`${profile.PayloadIdentifier as string}.mail`);
    expect(mail.PayloadUUID).not.toBe(profile.PayloadUUID);
  });

  it('verifies against the signer certificate as trust anchor (-CAfile signer.pem), and not against another', async () => {
    const der = buildMobileconfig({ address: 'a@example.com', apiKey: KEY, connectionInfo: INFO, signer: rsa });
    const trusted = await cmsVerify(der, rsa.certPem);
    expect(trusted.ok, trusted.stderr).toBe(true);
    expect(trusted.stderr).toMatch(/Verification successful/);
    const other = await cmsVerify(der, ec.certPem);
    expect(other.ok).toBe(false);
  });

  it('signs with Keygate’s own self-signed TLS certificate (the default signer)', async () => {
    const tlsPair = await createSelfSignedCertificate('keygate.example.com');
    const der = buildMobileconfig({ address: 'a@example.com', apiKey: KEY, connectionInfo: INFO, signer: tlsPair });
    // Its extended key usage is serverAuth only: openssl's S/MIME purpose check needs relaxing, the signature does not.
    expect((await cmsVerify(der, tlsPair.certPem)).stderr).toMatch(/unsuitable certificate purpose|unsupported certificate purpose/);
    const res = await cmsVerify(der, tlsPair.certPem, { purposeAny: true });
    expect(res.ok, res.stderr).toBe(true);
    expect(readProfile(res.content).mail.IncomingPassword).toBe(KEY);
  });

  it('signs with an ECDSA certificate (what Let’s Encrypt issues by default)', async () => {
    const der = buildMobileconfig({ address: 'a@example.com', apiKey: KEY, connectionInfo: INFO, signer: ec });
    const res = await cmsVerify(der, ec.certPem);
    expect(res.ok, res.stderr).toBe(true);
    expect(readProfile(res.content).mail.IncomingPassword).toBe(KEY);
  });

  it('signs with an RSA key whose chain holds a certificate forge cannot read (native path)', async () => {
    const signer = { certPem: rsa.certPem + ec.certPem, keyPem: rsa.keyPem };
    const der = buildMobileconfig({ address: 'a@example.com', apiKey: KEY, connectionInfo: INFO, signer });
    const res = await cmsVerify(der, rsa.certPem);
    expect(res.ok, res.stderr).toBe(true);
    expect(readProfile(res.content).mail.IncomingPassword).toBe(KEY);
  });

  it('carries the whole chain, so the profile verifies against the CA alone', async () => {
    const { ca, signer } = opensslChain();
    const der = buildMobileconfig({ address: 'a@example.com', apiKey: KEY, connectionInfo: INFO, signer });
    const res = await cmsVerify(der, ca);
    expect(res.ok, res.stderr).toBe(true);
    const p7 = forge.pkcs7.messageFromAsn1(forge.asn1.fromDer(der.toString('binary'))) as forge.pkcs7.PkcsSignedData;
    expect(p7.certificates).toHaveLength(2);
  });

  it('fails verification when one byte of the content changes', async () => {
    const der = buildMobileconfig({ address: 'a@example.com', apiKey: KEY, connectionInfo: INFO, signer: rsa });
    const at = der.indexOf(Buffer.from('imap.example.com'));
    const tampered = Buffer.from(der);
    tampered[at] = 'j'.charCodeAt(0);
    expect((await cmsVerify(tampered)).ok).toBe(false);
    const ecDer = signProfile(Buffer.from('<plist>same</plist>'), ec);
    const ecTampered = Buffer.from(ecDer);
    ecTampered[ecDer.indexOf(Buffer.from('same'))] = 'S'.charCodeAt(0);
    expect((await cmsVerify(ecDer)).ok).toBe(true);
    expect((await cmsVerify(ecTampered)).ok).toBe(false);
  });

  it('uses POP3 when IMAP is not advertised, STARTTLS ports when there is no implicit-TLS port', () => {
    const info = { ...INFO, imap: { ...INFO.imap, enabled: false }, smtp: { ...INFO.smtp, securePort: 0 } };
    const { mail } = readProfile(buildMobileconfigPlist({ address: 'a@example.com', apiKey: KEY, connectionInfo: info }));
    expect(mail).toMatchObject({
      EmailAccountType: 'EmailTypePOP',
      IncomingMailServerHostName: 'pop.example.com',
      IncomingMailServerPortNumber: 995,
      OutgoingMailServerPortNumber: 587,
      OutgoingMailServerUseSSL: true,
    });
    expect(mail.EmailAccountName).toBeUndefined();
  });

  it('keeps the identifier stable per account and device, so a new profile replaces the old one', () => {
    const id = (address: string, deviceId: string | null) =>
      readProfile(buildMobileconfigPlist({ address, apiKey: KEY, connectionInfo: INFO, deviceId })).profile.PayloadIdentifier;
    expect(id('a@example.com', 'd1')).toBe(id('A@example.com', 'd1'));
    expect(id('a@example.com', 'd1')).not.toBe(id('a@example.com', 'd2'));
    expect(id('a@example.com', 'd1')).not.toBe(id('b@example.com', 'd1'));
  });

  it('refuses what it cannot build or sign, with MobileconfigError', () => {
    const none = { ...INFO, imap: { ...INFO.imap, enabled: false }, pop3: { ...INFO.pop3, enabled: false } };
    expect(() => buildMobileconfigPlist({ address: 'a@example.com', apiKey: KEY, connectionInfo: none })).toThrow(MobileconfigError);
    const noSmtp = { ...INFO, smtp: { ...INFO.smtp, enabled: false } };
    expect(() => buildMobileconfigPlist({ address: 'a@example.com', apiKey: KEY, connectionInfo: noSmtp })).toThrow(/SMTP/);

    expect(() => checkSigner({ certPem: rsa.certPem, keyPem: ec.keyPem })).toThrow(/does not belong/);
    expect(() => checkSigner({ certPem: 'nothing', keyPem: rsa.keyPem })).toThrow(/no certificate/);
    expect(() => checkSigner({ certPem: rsa.certPem, keyPem: 'garbage' })).toThrow(MobileconfigError);
    const ed = generateKeyPairSync('ed25519');
    expect(() => checkSigner({ certPem: rsa.certPem, keyPem: ed.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string })).toThrow(/ed25519/);
    expect(() => checkSigner(rsa)).not.toThrow();
  });

  it('names the download after the address', () => {
    expect(mobileconfigFilename('alice@example.com')).toBe('alice@example.com.mobileconfig');
    expect(mobileconfigFilename('we"ird/..\\@x')).toBe('we_ird_.._@x.mobileconfig');
  });
});
