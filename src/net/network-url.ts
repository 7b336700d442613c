// How the agent names a network disk (NBD, RBD, iSCSI): one URL it builds itself,
// protocol://host:port/name, from libvirt's <source> or a caller's destination. A leaf: the
// destination policy checks these names, the libvirt XML reader produces them.

export interface NetworkTarget {
  protocol: 'nbd' | 'rbd' | 'iscsi';
  host: string;
  port: number;
  name: string;
}

const PROTOCOLS = ['nbd', 'rbd', 'iscsi'] as const;
// A DNS name or IPv4 address, or a bracketed IPv6 address: nothing that could carry a path,
// options or a second host.
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*|\[[0-9A-Fa-f:.]+\])$/;
// eslint-disable-next-line no-control-regex
const NAME = /^[^\u0000-\u001f\u007f-\u009f]{1,1024}$/;

export class NetworkError extends Error {}

function target(protocol: string, host: string, port: string, name: string): NetworkTarget {
  if (!(PROTOCOLS as readonly string[]).includes(protocol))
    throw new NetworkError(`network protocol '${protocol}' is not supported (${PROTOCOLS.join(', ')})`);
  if (!HOST.test(host)) throw new NetworkError(`host '${host}' is not a host name or address`);
  if (!/^[1-9][0-9]{0,4}$/.test(port) || Number(port) > 65535) throw new NetworkError(`port '${port}' is not a TCP port`);
  if (!NAME.test(name))
    throw new NetworkError('the network destination needs a name (export, pool/image or target/lun) without control characters');
  return { protocol: protocol as NetworkTarget['protocol'], host: host.toLowerCase(), port: Number(port), name };
}

/** The canonical URL of a network destination; throws NetworkError for a malformed part. */
export function networkUrl(p: { protocol: string; host: string; port: string; name: string }): string {
  const t = target(p.protocol, p.host, p.port, p.name);
  return `${t.protocol}://${t.host}:${t.port}/${t.name}`;
}

/** The parts of a URL networkUrl() built (or a caller wrote in the same form). */
export function parseNetworkUrl(url: string): NetworkTarget {
  const m = /^([a-z]+):\/\/(\[[^\]]*\]|[^/:]*):([^/]*)\/(.*)$/s.exec(url);
  if (!m) throw new NetworkError(`'${url}' is not protocol://host:port/name`);
  return target(m[1]!, m[2]!, m[3]!, m[4]!);
}
