// withNetnsSync(netnsPath, fn): runs fn() on the JS thread with that thread inside the given
// network namespace, and puts the thread back where it was before returning or rethrowing.
//
// One of the two places the JS thread changes namespace (the other: nftRun's inline run,
// nft_run.cc). It exists so that a socket (e.g. a netlink socket) can be created bound to a
// pod's netns: a socket keeps the namespace it was created in. Nothing asynchronous may run inside fn (no await): the switch lasts exactly as
// long as the synchronous call.

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <string>

#include "common.h"

namespace icts {
namespace {

Napi::Value WithNetnsSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsFunction()) {
    throw Napi::TypeError::New(env, "withNetnsSync(netnsPath: string, fn: () => T)");
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Function fn = info[1].As<Napi::Function>();

  std::string message;
  int err = 0;
  int target = OpenNetns(path, &message, &err);
  if (target < 0) throw ErrnoError(env, message, err);

  int saved = open(kSelfNetns, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (saved < 0) {
    err = errno;
    close(target);
    throw ErrnoError(env, std::string("cannot open ") + kSelfNetns + ": " + strerror(err), err);
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    err = errno;
    close(target);
    close(saved);
    throw ErrnoError(env, "cannot enter network namespace " + path + ": setns: " + strerror(err), err);
  }
  close(target);

  Napi::Value result;
  try {
    result = fn.Call(env.Undefined(), {});
  } catch (...) {
    RestoreOrDie(saved, "withNetnsSync");
    throw;
  }
  RestoreOrDie(saved, "withNetnsSync");
  return result;
}

}  // namespace

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("withNetnsSync", Napi::Function::New(env, WithNetnsSync, "withNetnsSync"));
}

}  // namespace icts
