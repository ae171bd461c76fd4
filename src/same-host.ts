/**
 * Whether a redirect target would receive the registry's credentials: containers/image (podman,
 * skopeo, CRI-O), containerd and oras keep `Authorization` on a redirect whose host name equals
 * the registry's or is a subdomain of it (current Go ignores ports there, so this does too).
 *
 * Plain index arithmetic on the two strings, ASCII case-insensitive, no allocation: it runs on
 * every redirect.
 */

/** `[start, end)` of the host name in `authority` text (userinfo, port and trailing dots cut off). */
function hostBounds(text: string, start: number, end: number): [number, number] {
  const at = text.lastIndexOf('@', end - 1);
  if (at >= start) start = at + 1;
  if (text.charCodeAt(start) === 0x5b /* [ */) {
    const close = text.indexOf(']', start);
    return [start, close < 0 || close >= end ? end : close + 1];
  }
  const colon = text.lastIndexOf(':', end - 1);
  if (colon >= start) end = colon;
  while (end > start && text.charCodeAt(end - 1) === 0x2e /* . */) end--;
  return [start, end];
}

function lower(code: number): number {
  return code >= 0x41 && code <= 0x5a ? code + 0x20 : code;
}

/** ASCII case-insensitive equality of `a[aStart, aStart+length)` and `b[bStart, bStart+length)`. */
function sameText(a: string, aStart: number, b: string, bStart: number, length: number): boolean {
  for (let i = 0; i < length; i++) {
    if (lower(a.charCodeAt(aStart + i)) !== lower(b.charCodeAt(bStart + i))) return false;
  }
  return true;
}

/** `[start, end)` of the authority of an absolute `http(s)://` URL. */
function urlAuthority(url: string): [number, number] | undefined {
  const scheme = url.indexOf('://');
  if (scheme < 0) return undefined;
  const start = scheme + 3;
  let end = url.length;
  for (let i = start; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 0x2f /* / */ || c === 0x3f /* ? */ || c === 0x23 /* # */ || c === 0x5c /* \ */) {
      end = i;
      break;
    }
  }
  return [start, end];
}

/**
 * True when the host name of the absolute URL `location` equals the host name in `host` (a `Host`
 * header value, `name[:port]`), or is a subdomain of it. Ports never matter. `false` when `host`
 * is empty or missing.
 */
export function isSameHostOrSubdomain(location: string, host: string | undefined): boolean {
  if (!host) return false;
  const authority = urlAuthority(location);
  if (!authority) return false;
  const [ls, le] = hostBounds(location, authority[0], authority[1]);
  const [hs, he] = hostBounds(host, 0, host.length);
  const hostLength = he - hs;
  const locationLength = le - ls;
  if (hostLength === 0 || locationLength < hostLength) return false;
  if (locationLength === hostLength) return sameText(location, ls, host, hs, hostLength);
  // A subdomain: ".<host>" at the end (Go checks the same way, IPv4 text included); an IPv6
  // literal has none.
  if (host.charCodeAt(hs) === 0x5b || location.charCodeAt(le - hostLength - 1) !== 0x2e) return false;
  return sameText(location, le - hostLength, host, hs, hostLength);
}
