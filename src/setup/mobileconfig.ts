import { constants, createHash, createPrivateKey, privateEncrypt, randomUUID, sign as cryptoSign, X509Certificate, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { build as buildPlist, type PlistValue } from 'plist';
import { preferredServer, type ConnectionInfo } from './connection.js';

/**
 * Apple configuration profiles (`.mobileconfig`) for Mail on iOS, iPadOS and
 * macOS: a `Configuration` profile holding one `com.apple.mail.managed`
 * payload, signed as CMS / PKCS#7 SignedData so the device shows it as
 * verified (when the signer chains to a trusted root) and nobody can alter the
 * servers in transit.
 */

export const MOBILECONFIG_CONTENT_TYPE = 'application/x-apple-aspen-config';

/** Certificate (PEM; a chain is fine, leaf first) and its private key (PEM: PKCS#1, PKCS#8 or SEC1). Default in Keygate: the TLS pair. */
export interface ProfileSigner {
  certPem: string;
  keyPem: string;
}

export interface MobileconfigInput {
  /** The account address: the e-mail address and the username for IMAP/POP3 and SMTP. */
  address: string;
  /** The key: incoming password, and the outgoing password too. */
  apiKey: string;
  connectionInfo: ConnectionInfo;
  /** The person's name, used in sent mail (`EmailAccountName`); left out when absent. */
  displayName?: string | null;
  /** What Mail lists the account as; default the address. */
  accountDescription?: string;
  /** `PayloadOrganization`; default "Keygate". */
  organization?: string;
  /**
   * `PayloadIdentifier` of the profile. Installing a profile with the same
   * identifier replaces the earlier one, so the default is stable per account
   * and device: `keygate.<16 hex of sha256(address, deviceId)>`.
   */
  identifier?: string;
  /** Feeds the default identifier (one profile per device, as one live key per device). */
  deviceId?: string | null;
}

export interface SignedMobileconfigInput extends MobileconfigInput {
  signer: ProfileSigner;
  /** Signing time; default now. */
  now?: Date;
}

/** The profile cannot be built (no incoming or no outgoing server advertised) or signed (unusable signer). */
export class MobileconfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MobileconfigError';
  }
}

/**
 * The unsigned profile as an XML property list. IMAP is preferred; POP3 is
 * used only when IMAP is not advertised. Each server at its preferred port
 * (implicit TLS when offered), SSL always on.
 * @throws MobileconfigError when neither IMAP nor POP3, or not SMTP, is advertised.
 */
export function buildMobileconfigPlist(input: MobileconfigInput): string {
  const info = input.connectionInfo;
  const imap = preferredServer(info, 'imap');
  const incoming = imap ?? preferredServer(info, 'pop3');
  const outgoing = preferredServer(info, 'smtp');
  if (!incoming) throw new MobileconfigError('Neither IMAP nor POP3 is advertised (public.imap / public.pop3)');
  if (!outgoing) throw new MobileconfigError('SMTP is not advertised (public.smtp)');

  const identifier = input.identifier ?? defaultIdentifier(input.address, input.deviceId ?? null);
  const description = input.accountDescription ?? input.address;
  const mail: { [key: string]: PlistValue } = {
    PayloadType: 'com.apple.mail.managed',
    PayloadVersion: 1,
    PayloadIdentifier: `${identifier}.mail`,
    PayloadUUID: randomUUID().toUpperCase(),
    PayloadDisplayName: `Mail (${input.address})`,
    PayloadDescription: `Mail account ${input.address}`,
    EmailAccountDescription: description,
    ...(input.displayName ? { EmailAccountName: stripControls(input.displayName) } : {}),
    EmailAccountType: imap ? 'EmailTypeIMAP' : 'EmailTypePOP',
    EmailAddress: input.address,
    IncomingMailServerAuthentication: 'EmailAuthPassword',
    IncomingMailServerHostName: incoming.host,
    IncomingMailServerPortNumber: incoming.port,
    IncomingMailServerUseSSL: true,
    IncomingMailServerUsername: input.address,
    IncomingPassword: input.apiKey,
    OutgoingMailServerAuthentication: 'EmailAuthPassword',
    OutgoingMailServerHostName: outgoing.host,
    OutgoingMailServerPortNumber: outgoing.port,
    OutgoingMailServerUseSSL: true,
    OutgoingMailServerUsername: input.address,
    // Both: some macOS releases ignore SameAs… when the incoming password is supplied.
    OutgoingPasswordSameAsIncomingPassword: true,
    OutgoingPassword: input.apiKey,
  };
  const profile: { [key: string]: PlistValue } = {
    PayloadType: 'Configuration',
    PayloadVersion: 1,
    PayloadIdentifier: identifier,
    PayloadUUID: randomUUID().toUpperCase(),
    PayloadDisplayName: `Mail: ${input.address}`,
    PayloadDescription: `Sets up Mail for ${input.address}. The password in this profile is a Keygate key for this device; revoke it to disconnect the device.`,
    PayloadOrganization: input.organization ?? 'Keygate',
    PayloadRemovalDisallowed: false,
    PayloadContent: [mail],
  };
  return buildPlist(profile);
}

/**
 * The signed profile, DER (`application/x-apple-aspen-config`).
 * @throws MobileconfigError as buildMobileconfigPlist and signProfile.
 */
export function buildMobileconfig(input: SignedMobileconfigInput): Buffer {
  return signProfile(Buffer.from(buildMobileconfigPlist(input), 'utf8'), input.signer, input.now);
}

/** A download name for the profile: the address with anything unusual replaced, `.mobileconfig`. */
export function mobileconfigFilename(address: string): string {
  const base = address.replace(/[^A-Za-z0-9._@+-]/g, '_').slice(0, 100) || 'keygate';
  return `${base}.mobileconfig`;
}

/** XML 1.0 cannot carry most control characters; a display name has no use for them. */
function stripControls(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f\ufffe\uffff]/g, '');
}

function defaultIdentifier(address: string, deviceId: string | null): string {
  const digest = createHash('sha256').update(address.toLowerCase()).update('\0').update(deviceId ?? '').digest('hex');
  return `keygate.${digest.slice(0, 16)}`;
}

// --- CMS SignedData -------------------------------------------------------

const OID = {
  data: '1.2.840.113549.1.7.1',
  signedData: '1.2.840.113549.1.7.2',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingTime: '1.2.840.113549.1.9.5',
  sha256: '2.16.840.1.101.3.4.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
} as const;

/**
 * Signs `content` as an enveloping (not detached) CMS SignedData, SHA-256,
 * with signed attributes (content type, signing time, message digest) and the
 * whole certificate chain included. RSA signers go through node-forge's
 * PKCS#7 implementation (native RSA); EC signers (e.g. Let's Encrypt's default
 * ECDSA certificates, which forge cannot handle) through the same structure
 * built with forge's ASN.1 and signed by node:crypto. A few ms either way.
 * @throws MobileconfigError when the PEM holds no certificate, the key does
 *   not match the first certificate, or the key type is neither RSA nor EC.
 */
export function signProfile(content: Buffer, signer: ProfileSigner, now: Date = new Date()): Buffer {
  const { certs, key, forgeCerts } = loadSigner(signer);
  if (forgeCerts) return signWithForge(content, forgeCerts, key, now);
  return signWithNodeCrypto(content, certs, key, now);
}

/**
 * Checks that `signer` can sign profiles (the cheap part of signProfile: read,
 * match, key type), without signing anything.
 * @throws MobileconfigError as signProfile.
 */
export function checkSigner(signer: ProfileSigner): void {
  loadSigner(signer);
}

interface LoadedSigner {
  certs: string[];
  key: KeyObject;
  /** Forge's view of the chain; null when forge cannot read one of them. */
  forgeCerts: forge.pki.Certificate[] | null;
}

// The signer rarely changes (the TLS pair, until it is renewed): keep the last one parsed.
let lastSigner: { certPem: string; keyPem: string; loaded: LoadedSigner } | null = null;

function loadSigner(signer: ProfileSigner): LoadedSigner {
  if (lastSigner && lastSigner.certPem === signer.certPem && lastSigner.keyPem === signer.keyPem) return lastSigner.loaded;
  const certs = pemCertificates(signer.certPem);
  if (certs.length === 0) throw new MobileconfigError('The signing certificate PEM holds no certificate');
  let key: KeyObject;
  try {
    key = createPrivateKey(signer.keyPem);
  } catch (err) {
    throw new MobileconfigError(`The signing key is not a usable private key: ${(err as Error).message}`, { cause: err });
  }
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certs[0]!);
  } catch (err) {
    throw new MobileconfigError(`The signing certificate cannot be read: ${(err as Error).message}`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec') {
    throw new MobileconfigError(`Cannot sign profiles with a ${key.asymmetricKeyType ?? 'unknown'} key; use an RSA or EC certificate`);
  }
  if (!leaf.checkPrivateKey(key)) throw new MobileconfigError('The signing key does not belong to the signing certificate');
  let forgeCerts: forge.pki.Certificate[] | null = null;
  if (key.asymmetricKeyType === 'rsa') {
    try {
      forgeCerts = certs.map((pem) => forge.pki.certificateFromPem(pem));
    } catch {
      forgeCerts = null;
    }
  }
  const loaded = { certs, key, forgeCerts };
  lastSigner = { certPem: signer.certPem, keyPem: signer.keyPem, loaded };
  return loaded;
}

/** DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2): what RSASSA-PKCS1-v1_5 signs, followed by the 32-byte hash. */
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

/**
 * node-forge's PKCS#7 SignedData (RSA signer, every certificate readable by
 * forge). Forge builds and encodes the structure; the one RSA operation is
 * native (privateEncrypt with PKCS#1 v1.5 type-1 padding over the DigestInfo
 * is exactly RSASSA-PKCS1-v1_5), because forge's pure-JS RSA takes ~75 ms and
 * would stall every listener in the process.
 */
function signWithForge(content: Buffer, certs: forge.pki.Certificate[], key: KeyObject, now: Date): Buffer {
  const nativeKey = {
    sign(md: forge.md.MessageDigest): string {
      const digest = Buffer.from(md.digest().getBytes(), 'binary');
      return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, digest])).toString('binary');
    },
  };
  const p7 = forge.pkcs7.createSignedData();
  p7.content = forge.util.createBuffer(content.toString('binary'));
  for (const c of certs) p7.addCertificate(c);
  p7.addSigner({
    key: nativeKey as unknown as forge.pki.rsa.PrivateKey,
    certificate: certs[0]!,
    digestAlgorithm: forge.pki.oids.sha256!,
    // In DER order (SET OF sorts by encoding): content type, signing time, message digest.
    authenticatedAttributes: [
      { type: forge.pki.oids.contentType!, value: forge.pki.oids.data! },
      { type: forge.pki.oids.signingTime!, value: now as unknown as string },
      { type: forge.pki.oids.messageDigest! },
    ],
  });
  p7.sign();
  return Buffer.from(forge.asn1.toDer(p7.toAsn1()).getBytes(), 'binary');
}

function signWithNodeCrypto(content: Buffer, certPems: string[], key: KeyObject, now: Date): Buffer {
  const { asn1 } = forge;
  const U = asn1.Class.UNIVERSAL;
  const T = asn1.Type;
  const seq = (v: forge.asn1.Asn1[]) => asn1.create(U, T.SEQUENCE, true, v);
  const set = (v: forge.asn1.Asn1[]) => asn1.create(U, T.SET, true, v);
  const oid = (o: string) => asn1.create(U, T.OID, false, asn1.oidToDer(o).getBytes());
  const int = (n: number) => asn1.create(U, T.INTEGER, false, asn1.integerToDer(n).getBytes());
  const octets = (bytes: string) => asn1.create(U, T.OCTETSTRING, false, bytes);
  const explicit0 = (v: forge.asn1.Asn1) => asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [v]);
  const der = (node: forge.asn1.Asn1) => asn1.toDer(node).getBytes();

  const certs = certPems.map((pem) => asn1.fromDer(forge.util.createBuffer(pemBody(pem))));
  const tbs = (certs[0]!.value as forge.asn1.Asn1[])[0]!;
  const tbsFields = tbs.value as forge.asn1.Asn1[];
  const offset = tbsFields[0]!.tagClass === asn1.Class.CONTEXT_SPECIFIC ? 1 : 0; // explicit version [0]
  const serial = tbsFields[offset]!;
  const issuer = tbsFields[offset + 2]!;

  const digest = createHash('sha256').update(content).digest().toString('binary');
  const attrs = [
    seq([oid(OID.contentType), set([oid(OID.data)])]),
    seq([oid(OID.signingTime), set([asn1.create(U, T.UTCTIME, false, asn1.dateToUtcTime(now))])]),
    seq([oid(OID.messageDigest), set([octets(digest)])]),
  ].sort((a, b) => Buffer.compare(Buffer.from(der(a), 'binary'), Buffer.from(der(b), 'binary')));
  // The signature covers the attributes encoded as a SET (tag 0x31), not as the [0] they are sent in.
  const signature = cryptoSign('sha256', Buffer.from(der(set(attrs)), 'binary'), key).toString('binary');
  const isEc = key.asymmetricKeyType === 'ec';
  const signatureAlgorithm = isEc ? seq([oid(OID.ecdsaWithSha256)]) : seq([oid(OID.rsaEncryption), asn1.create(U, T.NULL, false, '')]);

  const signerInfo = seq([
    int(1),
    seq([issuer, serial]),
    seq([oid(OID.sha256)]),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, attrs),
    signatureAlgorithm,
    octets(signature),
  ]);
  const signedData = seq([
    int(1),
    set([seq([oid(OID.sha256)])]),
    seq([oid(OID.data), explicit0(octets(content.toString('binary')))]),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, certs),
    set([signerInfo]),
  ]);
  return Buffer.from(der(seq([oid(OID.signedData), explicit0(signedData)])), 'binary');
}

/** Every CERTIFICATE block of a PEM bundle, in order. */
function pemCertificates(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** The DER of one PEM block as a binary string (forge's byte representation). */
function pemBody(pem: string): string {
  const b64 = pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
  return Buffer.from(b64, 'base64').toString('binary');
}
