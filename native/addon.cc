// nftables_napi: the native part of istio-cni-ts. One job per function:
//   nftRun                         libnftables inside a netns, on a dedicated pthread (nft_run.cc)
//   withNetnsSync                  a synchronous call with the JS thread inside a netns (netns_sync.cc)
//   getOriginalDst                 SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST (sockets.cc)
//   createTransparentListenSocket  an IP_TRANSPARENT listener for TPROXY (sockets.cc)
//   seqpacket*, closeFd, FdWatcher SOCK_SEQPACKET + SCM_RIGHTS for ZDS, on the event loop (seqpacket.cc)
// The typed surface is src/netns/nft.ts.

#include <napi.h>

#include "common.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  icts::InitNft(env, exports);
  icts::InitNetns(env, exports);
  icts::InitSockets(env, exports);
  icts::InitSeqpacket(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(nftables_napi, Init)
