// SOCK_SEQPACKET unix sockets with file descriptor passing, for the ZDS protocol between the node
// agent and ztunnel (Node's `net` only knows stream sockets and cannot carry SCM_RIGHTS).
//
// Every socket here is non-blocking and close-on-exec. Nothing blocks and no thread is started:
// each call does one system call and returns; a call that would block returns -1 (or null) and
// the caller waits for readiness with an FdWatcher, a libuv poll handle on the Node event loop.
//
//   seqpacketListen(path, backlog)          -> fd        socket + bind + listen
//   unixStreamListen(path, backlog)         -> fd        the same with SOCK_STREAM (HTTP over a unix socket)
//   seqpacketConnect(path)                  -> fd        socket + connect (for clients and tests)
//   seqpacketAccept(fd)                     -> fd | -1   accept4; -1 when nobody is waiting (any
//                                                        listening socket: exported as acceptConnection too)
//   peerCredentials(fd)                     -> {pid, uid, gid}  SO_PEERCRED of a connected unix socket
//   seqpacketSend(fd, data, passFd)         -> n | -1    one record; passFd >= 0 goes as SCM_RIGHTS
//   seqpacketRecv(fd, maxBytes, maxFds)     -> {data, fds, truncated, controlTruncated} | null
//   closeFd(fd)
//   dupFdAbove(fd, min)                     -> fd        fcntl(F_DUPFD_CLOEXEC): a copy numbered >= min
//   new FdWatcher(fd, (err, readable, writable) => ...)  .start(readable, writable) .stop() .close()
//                                                         .ref() .unref()

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace icts {
namespace {

Napi::Error SysError(Napi::Env env, const std::string& what, int err) {
  return ErrnoError(env, what + ": " + strerror(err), err);
}

bool UnixAddress(const std::string& path, sockaddr_un* sun, socklen_t* len, std::string* why) {
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  if (path.empty()) {
    *why = "the socket path is empty";
    return false;
  }
  if (path.size() >= sizeof sun->sun_path) {
    *why = "the socket path is longer than " + std::to_string(sizeof sun->sun_path - 1) + " bytes";
    return false;
  }
  if (path.find('\0') != std::string::npos) {
    *why = "the socket path contains a NUL byte";
    return false;
  }
  memcpy(sun->sun_path, path.data(), path.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return true;
}

int NewSocket(Napi::Env env, const char* what, int type = SOCK_SEQPACKET) {
  int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw SysError(env, std::string(what) + (type == SOCK_STREAM ? ": socket(AF_UNIX, SOCK_STREAM)" : ": socket(AF_UNIX, SOCK_SEQPACKET)"), errno);
  }
  return fd;
}

std::string PathArg(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), usage);
  return info[0].As<Napi::String>().Utf8Value();
}

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), usage);
  int fd = info[i].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::RangeError::New(info.Env(), std::string(usage) + ": fd must be >= 0");
  return fd;
}

// The socket file gets the process umask's mode at bind: callers set the umask around the call
// (src/netns/seqpacket.ts, src/agent/listener.ts) so it is 0600 from its creation.
Napi::Value ListenUnix(const Napi::CallbackInfo& info, int type, const char* name) {
  Napi::Env env = info.Env();
  std::string usage = std::string(name) + "(path: string, backlog: number)";
  std::string path = PathArg(info, usage.c_str());
  int backlog = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 16;
  sockaddr_un sun;
  socklen_t len;
  std::string why;
  if (!UnixAddress(path, &sun, &len, &why)) throw Napi::RangeError::New(env, std::string(name) + "(" + path + "): " + why);
  int fd = NewSocket(env, name, type);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sun), len) != 0) {
    int err = errno;
    close(fd);
    throw SysError(env, std::string(name) + ": bind " + path, err);
  }
  if (listen(fd, backlog) != 0) {
    int err = errno;
    close(fd);
    throw SysError(env, std::string(name) + ": listen " + path, err);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value Listen(const Napi::CallbackInfo& info) { return ListenUnix(info, SOCK_SEQPACKET, "seqpacketListen"); }

Napi::Value StreamListen(const Napi::CallbackInfo& info) { return ListenUnix(info, SOCK_STREAM, "unixStreamListen"); }

// Who is at the other end of a unix socket (as the kernel recorded it at connect): the servers
// serve only root, whatever the socket file's mode says.
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "peerCredentials(fd: number)");
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw SysError(env, "peerCredentials: getsockopt(SO_PEERCRED) on fd " + std::to_string(fd), errno);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, cred.pid));
  o.Set("uid", Napi::Number::New(env, cred.uid));
  o.Set("gid", Napi::Number::New(env, cred.gid));
  return o;
}

Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = PathArg(info, "seqpacketConnect(path: string)");
  sockaddr_un sun;
  socklen_t len;
  std::string why;
  if (!UnixAddress(path, &sun, &len, &why)) throw Napi::RangeError::New(env, "seqpacketConnect(" + path + "): " + why);
  int fd = NewSocket(env, "seqpacketConnect");
  // A unix connect completes at once or fails; EAGAIN means the listener's backlog is full.
  int rc;
  do {
    rc = connect(fd, reinterpret_cast<sockaddr*>(&sun), len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    close(fd);
    throw SysError(env, "seqpacketConnect: connect " + path, err);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value Accept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = FdArg(info, 0, "seqpacketAccept(fd: number)");
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return Napi::Number::New(env, fd);
    if (errno == EINTR) continue;
    // A connection that was reset while queued is not the listener's failure: report "none".
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return Napi::Number::New(env, -1);
    throw SysError(env, "seqpacketAccept: accept4", errno);
  }
}

Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "seqpacketSend(fd: number, data: Buffer, passFd: number)";
  int fd = FdArg(info, 0, usage);
  if (info.Length() < 3 || !info[1].IsBuffer() || !info[2].IsNumber()) throw Napi::TypeError::New(env, usage);
  Napi::Buffer<uint8_t> data = info[1].As<Napi::Buffer<uint8_t>>();
  int pass = info[2].As<Napi::Number>().Int32Value();

  iovec iov{data.Data(), data.Length()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (pass >= 0) {
    memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pass, sizeof(int));
  }
  for (;;) {
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return Napi::Number::New(env, static_cast<double>(n));
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    throw SysError(env, "seqpacketSend: sendmsg", errno);
  }
}

Napi::Value Recv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "seqpacketRecv(fd: number, maxBytes: number, maxFds: number)";
  int fd = FdArg(info, 0, usage);
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsNumber()) throw Napi::TypeError::New(env, usage);
  int64_t max_bytes = info[1].As<Napi::Number>().Int64Value();
  int64_t max_fds = info[2].As<Napi::Number>().Int64Value();
  if (max_bytes < 1 || max_bytes > (1 << 20)) throw Napi::RangeError::New(env, "maxBytes must be 1..1048576");
  if (max_fds < 0 || max_fds > 64) throw Napi::RangeError::New(env, "maxFds must be 0..64");

  std::vector<uint8_t> buf(static_cast<size_t>(max_bytes));
  std::vector<char> control(max_fds > 0 ? CMSG_SPACE(sizeof(int) * static_cast<size_t>(max_fds)) : 0);
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!control.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
  }
  ssize_t n;
  for (;;) {
    n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    throw SysError(env, "seqpacketRecv: recvmsg", errno);
  }

  // Every descriptor that arrived becomes the caller's, even when the record is refused for
  // being truncated: the caller must close them.
  Napi::Array fds = Napi::Array::New(env);
  uint32_t nfds = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int got;
      memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.Set(nfds++, Napi::Number::New(env, got));
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(n)));
  o.Set("fds", fds);
  o.Set("truncated", Napi::Boolean::New(env, (msg.msg_flags & MSG_TRUNC) != 0));
  o.Set("controlTruncated", Napi::Boolean::New(env, (msg.msg_flags & MSG_CTRUNC) != 0));
  return o;
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "closeFd(fd: number)");
  // Linux releases the descriptor even when close reports EINTR: never retry.
  if (close(fd) != 0 && errno != EINTR) throw SysError(env, "closeFd(" + std::to_string(fd) + ")", errno);
  return env.Undefined();
}

// dupFdAbove(fd, min): a close-on-exec duplicate numbered at least `min`. The agent keeps the
// netns of every enrolled pod open; parked above FD_SETSIZE they leave the low numbers to code
// that still uses select() (libnftables' netlink socket: an fd of 1024 or more aborts there).
Napi::Value DupFdAbove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "dupFdAbove(fd: number, min: number)";
  int fd = FdArg(info, 0, usage);
  int min = FdArg(info, 1, usage);
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, min);
  if (copy < 0) throw SysError(env, "dupFdAbove: fcntl(F_DUPFD_CLOEXEC, " + std::to_string(min) + ")", errno);
  return Napi::Number::New(env, copy);
}

// A libuv poll handle on the Node event loop: calls back (on the JS thread) when the fd becomes
// readable or writable, or with an error. The handle holds the fd only by number; it never
// closes it. Close the watcher before closing the fd.
class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {
                           InstanceMethod("start", &FdWatcher::Start),
                           InstanceMethod("stop", &FdWatcher::Stop),
                           InstanceMethod("close", &FdWatcher::Close),
                           InstanceMethod("ref", &FdWatcher::Ref_),
                           InstanceMethod("unref", &FdWatcher::Unref_),
                       });
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
      throw Napi::TypeError::New(env, "new FdWatcher(fd: number, cb: (err, readable, writable) => void)");
    }
    fd_ = info[0].As<Napi::Number>().Int32Value();
    if (fd_ < 0) throw Napi::RangeError::New(env, "FdWatcher: fd must be >= 0");
    env_ = env;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    async_context_ = std::make_unique<Napi::AsyncContext>(env, "icts:FdWatcher");
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      throw Napi::Error::New(env, "FdWatcher: no event loop");
    }
    handle_ = new uv_poll_t;
    int rc = uv_poll_init(loop, handle_, fd_);
    if (rc != 0) {
      delete handle_;
      handle_ = nullptr;
      throw Napi::Error::New(env, std::string("FdWatcher: uv_poll_init: ") + uv_strerror(rc));
    }
    handle_->data = this;
  }

  ~FdWatcher() override {
    // Only reached once the handle is closed (an active watcher holds a reference to itself),
    // or when the environment goes away: then let libuv free the handle on its own schedule.
    if (handle_ != nullptr) {
      handle_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(handle_), OnClosed);
      handle_ = nullptr;
    }
  }

 private:
  static void OnClosed(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<FdWatcher*>(h->data);
    if (self == nullptr || self->handle_ == nullptr) return;
    self->Deliver(status, events);
  }

  void Deliver(int status, int events) {
    Napi::Env env = env_;
    Napi::HandleScope scope(env);
    Napi::Value err = env.Null();
    if (status < 0) {
      Napi::Error e = Napi::Error::New(env, std::string("poll: ") + uv_strerror(status));
      e.Set("code", Napi::String::New(env, uv_err_name(status)));
      err = e.Value();
    }
    bool readable = (events & (UV_READABLE | UV_DISCONNECT)) != 0;
    bool writable = (events & UV_WRITABLE) != 0;
    // The JS callback may close this watcher; keep the object alive until the call returns.
    Napi::Object keep = Value();
    try {
      callback_.MakeCallback(keep, {err, Napi::Boolean::New(env, readable), Napi::Boolean::New(env, writable)},
                             *async_context_);
    } catch (const Napi::Error& e) {
      // Nobody up the stack can catch it here (we were called by libuv): treat it as Node
      // treats an exception thrown from any other event callback.
      napi_fatal_exception(env, e.Value());
    }
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (handle_ == nullptr) throw Napi::Error::New(env, "FdWatcher: already closed");
    bool r = info.Length() > 0 && info[0].ToBoolean().Value();
    bool w = info.Length() > 1 && info[1].ToBoolean().Value();
    int events = (r ? UV_READABLE | UV_DISCONNECT : 0) | (w ? UV_WRITABLE : 0);
    if (events == 0) return Stop(info);
    int rc = uv_poll_start(handle_, events, OnPoll);
    if (rc != 0) throw Napi::Error::New(env, std::string("FdWatcher: uv_poll_start: ") + uv_strerror(rc));
    if (!active_) {
      active_ = true;
      Ref();  // an active watcher stays alive even if JS drops it
    }
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    if (active_) {
      active_ = false;
      Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop(info);
    if (handle_ != nullptr) {
      handle_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(handle_), OnClosed);
      handle_ = nullptr;
    }
    // No call can come any more: let go of the callback, so whatever it closes over (usually
    // the object that owns this watcher) can be collected. A strong reference held until the
    // watcher itself is collected would form a cycle through a GC root and keep both for ever.
    callback_.Reset();
    return info.Env().Undefined();
  }

  // Whether an active watcher keeps the event loop (and so the process) alive.
  Napi::Value Ref_(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value Unref_(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Env env_ = Napi::Env(nullptr);
  int fd_ = -1;
  uv_poll_t* handle_ = nullptr;
  bool active_ = false;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
};

}  // namespace

void InitSeqpacket(Napi::Env env, Napi::Object exports) {
  exports.Set("seqpacketListen", Napi::Function::New(env, Listen, "seqpacketListen"));
  exports.Set("seqpacketConnect", Napi::Function::New(env, Connect, "seqpacketConnect"));
  exports.Set("seqpacketAccept", Napi::Function::New(env, Accept, "seqpacketAccept"));
  exports.Set("unixStreamListen", Napi::Function::New(env, StreamListen, "unixStreamListen"));
  exports.Set("acceptConnection", Napi::Function::New(env, Accept, "acceptConnection"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("seqpacketSend", Napi::Function::New(env, Send, "seqpacketSend"));
  exports.Set("seqpacketRecv", Napi::Function::New(env, Recv, "seqpacketRecv"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("dupFdAbove", Napi::Function::New(env, DupFdAbove, "dupFdAbove"));
  exports.Set("FdWatcher", FdWatcher::Define(env));
}

}  // namespace icts
