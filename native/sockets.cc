// Socket options Node does not expose: the original destination of a redirected connection,
// a transparent (IP_TRANSPARENT) listening socket for TPROXY, and a plain TCP listening socket
// whose accepts the caller drives (src/agent/listener.ts: Node's net.Server cannot stop
// accepting at a connection cap, it can only accept and close).

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "common.h"

namespace icts {
namespace {

// From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>; both are 80. Spelled
// out here because those headers do not mix well with glibc's.
constexpr int kSoOriginalDst = 80;
constexpr int kIp6tSoOriginalDst = 80;

Napi::Object AddressObject(Napi::Env env, const sockaddr_storage& ss) {
  char text[INET6_ADDRSTRLEN] = {0};
  int port = 0;
  const char* family = "";
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    port = ntohs(sin->sin_port);
    family = "IPv4";
  } else {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
    port = ntohs(sin6->sin6_port);
    family = "IPv6";
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", Napi::String::New(env, text));
  o.Set("port", Napi::Number::New(env, port));
  o.Set("family", Napi::String::New(env, family));
  return o;
}

// getOriginalDst(fd) -> {address, port, family}. The conntrack entry of an IPv4 connection
// answers SO_ORIGINAL_DST at SOL_IP, an IPv6 one IP6T_SO_ORIGINAL_DST at SOL_IPV6. An IPv6
// socket that accepted an IPv4 connection (v4-mapped local address) holds an IPv4 entry.
Napi::Value GetOriginalDst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "getOriginalDst(fd: number)");
  int fd = info[0].As<Napi::Number>().Int32Value();

  sockaddr_storage local{};
  socklen_t len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    int err = errno;
    throw ErrnoError(env, "getOriginalDst: getsockname(" + std::to_string(fd) + "): " + strerror(err), err);
  }
  bool v4 = local.ss_family == AF_INET;
  if (local.ss_family == AF_INET6) {
    v4 = IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6*>(&local)->sin6_addr);
  } else if (local.ss_family != AF_INET) {
    throw ErrnoError(env, "getOriginalDst: fd " + std::to_string(fd) + " is not an IPv4 or IPv6 socket", EAFNOSUPPORT);
  }

  sockaddr_storage orig{};
  len = sizeof orig;
  int rc = v4 ? getsockopt(fd, SOL_IP, kSoOriginalDst, &orig, &len)
              : getsockopt(fd, SOL_IPV6, kIp6tSoOriginalDst, &orig, &len);
  if (rc != 0) {
    int err = errno;
    std::string opt = v4 ? "SO_ORIGINAL_DST" : "IP6T_SO_ORIGINAL_DST";
    std::string hint = err == ENOENT ? " (no conntrack entry: was the connection redirected?)" : "";
    throw ErrnoError(env, "getOriginalDst: getsockopt(" + opt + ") on fd " + std::to_string(fd) + ": " +
                              strerror(err) + hint,
                     err);
  }
  return AddressObject(env, orig);
}

// createTransparentListenSocket(family, address, port, backlog) -> fd. A TCP socket with
// IP_TRANSPARENT (IPv4) or IPV6_TRANSPARENT + IPV6_V6ONLY (IPv6), bound and listening, so that
// a TPROXY rule can hand it connections addressed to other IPs and ports. The caller owns the
// fd (net.Server.listen({fd}) adopts it). The socket is made in the calling thread's netns:
// wrap the call in withNetnsSync to make it in a pod's.
Napi::Value CreateTransparentListenSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsNumber() ||
      !info[3].IsNumber()) {
    throw Napi::TypeError::New(env,
                               "createTransparentListenSocket(family: 4 | 6, address: string, port: number, backlog: number)");
  }
  int family = info[0].As<Napi::Number>().Int32Value();
  std::string address = info[1].As<Napi::String>().Utf8Value();
  int port = info[2].As<Napi::Number>().Int32Value();
  int backlog = info[3].As<Napi::Number>().Int32Value();
  if (family != 4 && family != 6) throw Napi::TypeError::New(env, "family must be 4 or 6");
  if (port < 0 || port > 65535) throw Napi::RangeError::New(env, "port must be 0-65535");

  sockaddr_storage ss{};
  socklen_t sslen;
  if (family == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, address.c_str(), &sin->sin_addr) != 1) {
      throw Napi::TypeError::New(env, "not an IPv4 address: \"" + address + "\"");
    }
    sslen = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, address.c_str(), &sin6->sin6_addr) != 1) {
      throw Napi::TypeError::New(env, "not an IPv6 address: \"" + address + "\"");
    }
    sslen = sizeof(sockaddr_in6);
  }

  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    int err = errno;
    throw ErrnoError(env, std::string("createTransparentListenSocket: socket: ") + strerror(err), err);
  }
  auto fail = [&](const char* step) {
    int err = errno;
    close(fd);
    return ErrnoError(env, std::string("createTransparentListenSocket(") + std::to_string(family) + ", " + address +
                               ", " + std::to_string(port) + "): " + step + ": " + strerror(err),
                      err);
  };
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) throw fail("SO_REUSEADDR");
  if (family == 4) {
    if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) != 0) throw fail("IP_TRANSPARENT");
  } else {
    if (setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) throw fail("IPV6_V6ONLY");
    if (setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one) != 0) throw fail("IPV6_TRANSPARENT");
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), sslen) != 0) throw fail("bind");
  if (listen(fd, backlog) != 0) throw fail("listen");
  return Napi::Number::New(env, fd);
}

// tcpListen(address, port, backlog) -> fd. Non-blocking, close-on-exec, SO_REUSEADDR, bound and
// listening. An empty address means every interface, as Node's listen() does it: "::" accepting
// IPv4 too, or 0.0.0.0 where the kernel has no IPv6.
Napi::Value TcpListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber()) {
    throw Napi::TypeError::New(env, "tcpListen(address: string, port: number, backlog: number)");
  }
  std::string address = info[0].As<Napi::String>().Utf8Value();
  int port = info[1].As<Napi::Number>().Int32Value();
  int backlog = info[2].As<Napi::Number>().Int32Value();
  if (port < 0 || port > 65535) throw Napi::RangeError::New(env, "port must be 0-65535");
  bool any = address.empty();
  for (int attempt = 0; attempt < 2; attempt++) {
    sockaddr_storage ss{};
    socklen_t sslen;
    int family;
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    std::string text = any ? (attempt == 0 ? "::" : "0.0.0.0") : address;
    if (inet_pton(AF_INET6, text.c_str(), &sin6->sin6_addr) == 1) {
      family = AF_INET6;
      sin6->sin6_family = AF_INET6;
      sin6->sin6_port = htons(static_cast<uint16_t>(port));
      sslen = sizeof(sockaddr_in6);
    } else if (inet_pton(AF_INET, text.c_str(), &sin->sin_addr) == 1) {
      family = AF_INET;
      sin->sin_family = AF_INET;
      sin->sin_port = htons(static_cast<uint16_t>(port));
      sslen = sizeof(sockaddr_in);
    } else {
      throw Napi::TypeError::New(env, "tcpListen: not an IP address: \"" + address + "\"");
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      int err = errno;
      if (any && attempt == 0 && err == EAFNOSUPPORT) continue;
      throw ErrnoError(env, std::string("tcpListen: socket: ") + strerror(err), err);
    }
    auto fail = [&](const char* step) {
      int err = errno;
      close(fd);
      return ErrnoError(env, "tcpListen(" + text + ", " + std::to_string(port) + "): " + step + ": " + strerror(err), err);
    };
    int one = 1, zero = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) throw fail("SO_REUSEADDR");
    if (family == AF_INET6 && setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, any ? &zero : &one, sizeof one) != 0) throw fail("IPV6_V6ONLY");
    if (bind(fd, reinterpret_cast<sockaddr*>(&ss), sslen) != 0) throw fail("bind");
    if (listen(fd, backlog) != 0) throw fail("listen");
    return Napi::Number::New(env, fd);
  }
  throw ErrnoError(env, "tcpListen: no address family to listen with", EAFNOSUPPORT);
}

// localAddress(fd) -> {address, port, family}: where a socket is bound (the port of port 0).
Napi::Value LocalAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "localAddress(fd: number)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    int err = errno;
    throw ErrnoError(env, "localAddress: getsockname(" + std::to_string(fd) + "): " + strerror(err), err);
  }
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) {
    throw ErrnoError(env, "localAddress: fd " + std::to_string(fd) + " is not an IPv4 or IPv6 socket", EAFNOSUPPORT);
  }
  return AddressObject(env, ss);
}

}  // namespace

void InitSockets(Napi::Env env, Napi::Object exports) {
  exports.Set("getOriginalDst", Napi::Function::New(env, GetOriginalDst, "getOriginalDst"));
  exports.Set("createTransparentListenSocket",
              Napi::Function::New(env, CreateTransparentListenSocket, "createTransparentListenSocket"));
  exports.Set("tcpListen", Napi::Function::New(env, TcpListen, "tcpListen"));
  exports.Set("localAddress", Napi::Function::New(env, LocalAddress, "localAddress"));
}

}  // namespace icts
