// A pod is dual-stack when one of its non-loopback interfaces holds a global IPv6 address.
import { AF_INET6, Rtnl, withRtnl } from './rtnl';

const RT_SCOPE_UNIVERSE = 0;

export async function hasGlobalIPv6(rt: Rtnl): Promise<boolean> {
  const links = await rt.getLinks();
  const loopbacks = new Set(links.filter((l) => l.data.flags?.loopback).map((l) => l.data.index));
  const addrs = await rt.getAddresses();
  return addrs.some(
    (a) =>
      a.data.family === AF_INET6 &&
      a.data.scope === RT_SCOPE_UNIVERSE &&
      !loopbacks.has(a.data.index) &&
      !a.attrs.flags?.dadfailed,
  );
}

/** Dual-stack check inside the netns at `netnsPath` (the current one when undefined). */
export function isDualStack(netnsPath?: string): Promise<boolean> {
  return withRtnl(netnsPath, hasGlobalIPv6);
}
