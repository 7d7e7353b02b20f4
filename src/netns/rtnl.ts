// rtnetlink sockets bound to a network namespace. The socket is created while the JS thread is
// briefly inside the target netns (one synchronous call that always switches back); afterwards
// it keeps talking to that netns from anywhere.
import { RtNetlinkSocket, createRtNetlink } from 'netlink';
import { withNetnsSync } from './nft';

export type Rtnl = RtNetlinkSocket;

/** Open an rtnetlink socket in `netnsPath`, or in the current netns when it is undefined. */
export function openRtnl(netnsPath?: string): Rtnl {
  return netnsPath ? withNetnsSync(netnsPath, () => createRtNetlink()) : createRtNetlink();
}

/** Run `fn` with a socket in `netnsPath` and always close it. */
export async function withRtnl<T>(netnsPath: string | undefined, fn: (rt: Rtnl) => Promise<T>): Promise<T> {
  const rt = openRtnl(netnsPath);
  try {
    return await fn(rt);
  } finally {
    rt.socket.close();
  }
}

export const AF_INET = 2;
export const AF_INET6 = 10;
/** NLM_F_CREATE | NLM_F_EXCL: create, and say so when it already exists. */
export const CREATE_EXCL = 0x400 | 0x200;

export async function loopbackIndex(rt: Rtnl): Promise<number> {
  const links = await rt.getLinks();
  const lo = links.find((l) => l.data.flags?.loopback);
  if (!lo || lo.data.index === undefined) throw new Error('no loopback interface in the network namespace');
  return lo.data.index;
}

export function isExists(e: unknown): boolean {
  return e instanceof Error && /EEXIST/.test(e.message);
}
