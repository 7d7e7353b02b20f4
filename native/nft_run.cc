// nftRun(netnsPath, script, dryRun, json) -> Promise<{output, error}>
//
// The netns file is opened on the JS thread, so a missing or wrong path is reported at once.
// The work then happens on a dedicated pthread made for this one call: it enters the netns,
// creates a libnftables context there (the context opens its netlink socket when created, so it
// must be created after setns), runs the script as one transaction, copies the output and error
// buffers, frees everything and ends. The thread never returns to any pool, so its netns change
// dies with it. A thread-safe function, released by the worker as its last act, brings us back
// to the JS thread, where the thread is joined and the Promise settled.

#include <errno.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include "common.h"

namespace icts {
namespace {

// libnftables 1.0.6 keeps process-wide state that is not safe to touch from two threads at
// once (a one-time init flag in nft_ctx_new, a global interface cache released by every run).
// Worker threads enter their namespaces in parallel, then take turns inside the library. The
// JS thread never takes this lock.
std::mutex nft_lock;

struct NftJob {
  napi_env env = nullptr;
  napi_deferred deferred = nullptr;
  napi_threadsafe_function tsfn = nullptr;
  pthread_t thread{};
  bool started = false;

  // Inputs.
  std::string path;
  int nsfd = -1;
  std::string script;
  bool dry_run = false;
  bool json = false;

  // Results, written by the worker before it releases the thread-safe function.
  int sys_errno = 0;       // non-zero: the worker could not get to run nft at all
  std::string sys_error;   // what failed, when sys_errno is set
  int rc = 0;              // nft_run_cmd_from_buffer's return value
  std::string output;
  std::string error;
};

// How the script is named in nft's diagnostics ("<script>:3:1-20: Error: ...").
constexpr char kScriptName[] = "<script>";

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

// Writes text into a new close-on-exec memfd and returns it, or -1 with *err set.
int WriteMemfd(const std::string& text, int* err) {
  int fd = memfd_create("nft-script", MFD_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *err = n < 0 ? errno : EIO;
      close(fd);
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  return fd;
}

void RunInNetns(NftJob* job) {
  if (setns(job->nsfd, CLONE_NEWNET) != 0) {
    job->sys_errno = errno;
    job->sys_error = "cannot enter network namespace " + job->path + ": setns: " + strerror(job->sys_errno);
    return;
  }
  std::lock_guard<std::mutex> guard(nft_lock);
  struct nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == nullptr) {
    job->sys_errno = errno != 0 ? errno : ENOMEM;
    job->sys_error = "nft_ctx_new failed in " + job->path;
    return;
  }
  if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
    job->sys_errno = errno != 0 ? errno : ENOMEM;
    job->sys_error = "cannot buffer libnftables output";
    nft_ctx_free(ctx);
    return;
  }
  nft_ctx_set_dry_run(ctx, job->dry_run);
  if (job->json) {
    nft_ctx_output_set_flags(ctx, nft_ctx_output_get_flags(ctx) | NFT_CTX_OUTPUT_JSON);
  }
  // The script goes in as a file, not a buffer: for buffer input libnftables 1.0.6 prints the
  // first line of the script under every error and no line number, while for a file it prints
  // "file:line:col" and the offending line. A memfd is that file; its /proc name is replaced by
  // kScriptName in the messages.
  int script_fd = WriteMemfd(job->script, &job->sys_errno);
  if (script_fd < 0) {
    job->sys_error = std::string("cannot hold the nft script in a memfd: ") + strerror(job->sys_errno);
    nft_ctx_free(ctx);
    return;
  }
  std::string file = "/proc/self/fd/" + std::to_string(script_fd);
  job->rc = nft_run_cmd_from_filename(ctx, file.c_str());
  const char* out = nft_ctx_get_output_buffer(ctx);
  const char* err = nft_ctx_get_error_buffer(ctx);
  job->output = out != nullptr ? out : "";
  job->error = ReplaceAll(err != nullptr ? err : "", file + ":", std::string(kScriptName) + ":");
  nft_ctx_free(ctx);
  close(script_fd);
}

void* WorkerMain(void* arg) {
  auto* job = static_cast<NftJob*>(arg);
  RunInNetns(job);
  close(job->nsfd);
  job->nsfd = -1;
  // Last touch of the job from this thread: after the release the JS thread may free it.
  napi_release_threadsafe_function(job->tsfn, napi_tsfn_release);
  return nullptr;
}

// Never called: the worker only releases the function. N-API wants one of a JS function or a
// call_js callback.
void NoCall(napi_env, napi_value, void*, void*) {}

Napi::Value ResultObject(Napi::Env env, const NftJob& job) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("output", Napi::String::New(env, job.output));
  o.Set("error", Napi::String::New(env, job.error));
  return o;
}

// Runs on the JS thread once the worker has released the thread-safe function (or when it
// could not be started). Joins the worker, then settles the Promise.
void Finish(napi_env raw_env, void* data, void*) {
  auto* job = static_cast<NftJob*>(data);
  if (job->started) pthread_join(job->thread, nullptr);
  if (job->nsfd >= 0) close(job->nsfd);
  Napi::Env env(raw_env);
  Napi::HandleScope scope(env);
  napi_value settle_with;
  bool ok = false;
  if (job->sys_errno != 0) {
    Napi::Error e = ErrnoError(env, job->sys_error, job->sys_errno);
    e.Set("netnsPath", Napi::String::New(env, job->path));
    settle_with = e.Value();
  } else if (job->rc != 0) {
    std::string msg = "nft failed in network namespace " + job->path;
    if (!job->error.empty()) msg += ":\n" + job->error;
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", Napi::String::New(env, "ENFT"));
    e.Set("netnsPath", Napi::String::New(env, job->path));
    e.Set("nftError", Napi::String::New(env, job->error));
    e.Set("nftOutput", Napi::String::New(env, job->output));
    settle_with = e.Value();
  } else {
    settle_with = ResultObject(env, *job);
    ok = true;
  }
  if (ok) {
    napi_resolve_deferred(raw_env, job->deferred, settle_with);
  } else {
    napi_reject_deferred(raw_env, job->deferred, settle_with);
  }
  delete job;
}

Napi::Value NftRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsString() || !info[2].IsBoolean() ||
      !info[3].IsBoolean()) {
    throw Napi::TypeError::New(env, "nftRun(netnsPath: string, script: string, dryRun: boolean, json: boolean)");
  }
  auto* job = new NftJob();
  job->env = env;
  job->path = info[0].As<Napi::String>().Utf8Value();
  job->script = info[1].As<Napi::String>().Utf8Value();
  job->dry_run = info[2].As<Napi::Boolean>().Value();
  job->json = info[3].As<Napi::Boolean>().Value();

  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &job->deferred, &promise), Napi::Value());

  std::string message;
  int err = 0;
  job->nsfd = OpenNetns(job->path, &message, &err);
  if (job->nsfd < 0) {
    job->sys_errno = err;
    job->sys_error = message;
    Finish(env, job, nullptr);
    return Napi::Value(env, promise);
  }

  napi_value name = Napi::String::New(env, "icts:nftRun");
  napi_status st = napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, job, Finish, job, NoCall,
                                                   &job->tsfn);
  if (st != napi_ok) {
    job->sys_errno = EAGAIN;
    job->sys_error = "cannot create a thread-safe function for the nft worker";
    Finish(env, job, nullptr);
    return Napi::Value(env, promise);
  }

  // The worker blocks every signal: signals stay with Node's own threads.
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  int rc = pthread_create(&job->thread, nullptr, WorkerMain, job);
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (rc != 0) {
    job->sys_errno = rc;
    job->sys_error = std::string("cannot start the nft worker thread: ") + strerror(rc);
    // Releasing the last reference runs Finish on the JS thread, which rejects.
    napi_release_threadsafe_function(job->tsfn, napi_tsfn_release);
    return Napi::Value(env, promise);
  }
  job->started = true;
  return Napi::Value(env, promise);
}

}  // namespace

void InitNft(Napi::Env env, Napi::Object exports) {
  exports.Set("nftRun", Napi::Function::New(env, NftRun, "nftRun"));
}

}  // namespace icts
