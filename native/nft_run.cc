// nftRun(netnsPath, script, dryRun, json, opts?) -> Promise<{output, error, applied}>
//
// opts.ifAbsent (["family name", ...]) makes the job conditional: in the netns, on the job
// thread and with the same nft context, it first lists the tables and runs the script only if
// none of those exists; otherwise it answers {applied: false, listing} without running it, the
// listing being `nft -j list tables; list chains` (what src/nft/plan.ts parses). A fresh pod
// netns so gets its whole apply in one job, and a re-apply needs no listing job of its own.
//
// opts.ifPresent ([{table: "family name", script}, ...], with an empty `script` argument) makes
// the job piecewise: it lists the tables the same way and runs, as one transaction, the scripts
// of the tables that exist, in the given order; {applied, ran} says whether anything ran and
// for which tables. A removal (DEL, cleanup) so deletes only what is there, in one job. The
// scripts are src/nft's text; this file only picks among them.
//
// The netns file is opened on the JS thread, so a missing or wrong path is reported at once.
// Unless it runs inline (below), the job then joins a queue served by one dispatcher pthread of
// the addon's own (started when the queue is empty and a job arrives, ended when it has drained
// the queue; never a libuv pool thread, never the JS thread). The dispatcher never changes namespace and never calls
// libnftables: for each job it starts a job thread and waits for that job's result, then
// releases the job's thread-safe function, which brings us back to the JS thread where the
// Promise is settled. The dispatcher's last job joins it before settling, so once every call has
// settled no dispatcher is left.
//
// A job thread enters the job's netns, then leaves the process' shared fd table for a private
// one holding only fds 0-2 (close_range with CLOSE_RANGE_UNSHARE), and only then creates the
// libnftables context (whose netlink socket is opened at creation, so after setns) and the
// script's memfd. libnftables 1.0.6 waits on that socket with select(), and glibc aborts the
// whole process for an fd of FD_SETSIZE (1024) or more; in a private table the socket is fd 4
// whatever the agent has open. It returns to the dispatcher's netns before it posts its result,
// so once a call has settled no thread is in that call's netns. It may not signal the event loop
// itself: that is a write to libuv's eventfd, an fd of the shared table it no longer has (its
// number may even be reused in the private table). So it hands its result to the dispatcher,
// which still shares the table, through a mutex and condition variable (no fd). Only then does
// it close its netlink socket for the last time, which after a delete or flush waits for an RCU
// grace period in the kernel (RunNft): neither the caller nor the next job waits for that.
//
// opts.inline asks for the job to run on the JS thread, synchronously, when that is safe: no job
// is queued or running (order is kept and nft_lock is free), and the lowest free descriptor of
// the process is below kInlineFdCeiling (the netlink socket takes it, and libnftables selects on
// it). Otherwise the job is queued as any other. Only for jobs whose socket close costs no grace
// period (they delete or flush no existing object: listings, and a conditional job, which
// applies only to a netns without our tables): the close happens on the JS thread. It skips
// three thread hand-offs and two thread starts, which on a busy 2-vCPU VM cost more than the
// run itself (a fresh pod netns's apply: the run 0.8-1.6 ms, the call around it 1.1-2.5 ms).
//
// Why one job at a time and not a thread per call racing for the lock: libnftables 1.0.6 keeps
// process-global state that every run touches (below), so runs must not overlap anyway; and 50
// threads that all enter their namespaces and wait on one mutex made 50 applies slower (wall)
// than running them one after the other, while taking no less CPU (docs/payload.md, "Burst").

#include <errno.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <linux/netlink.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"

namespace icts {
namespace {

// libnftables 1.0.6's process-wide mutable state (read from the nftables sources and checked
// against the stores into .bss/.data in Debian's libnftables.so.1.1.0), and who touches it:
//   - init_once in nft_ctx_new (then gmp_init, xt_init): written by the first nft_ctx_new only.
//     LibraryInit below makes that first call once, before any job runs; after it,
//     nft_ctx_new only reads the flag and allocates per-context state (its own socket, its own
//     copies of the mark/realm/devgroup/ct label tables), so it runs outside the lock.
//   - the set, chain and flowtable id counters (set_alloc, chain_alloc, ...: plain ++ on a
//     static): every parse and evaluation. A lost update across threads could give two chains or
//     sets of one transaction the same id, and the kernel binds rules to chains and lookups to
//     sets by these ids within the batch.
//   - nft_genid, the generation the cache dumps are checked against (mnl_genid_get, check_genid):
//     every cache fill. Another thread's netns would make every dump look stale.
//   - the interface cache (iface_list, iface_cache_init): filled by any name <-> index lookup
//     (meta iif/oif and their printing), released at the end of every run and by nft_ctx_free.
//   - the JSON parser's statics (json input, tried first when JSON output is on), a cached
//     receive buffer size, and libxtables' globals when xt expressions are printed.
// The queue below already serialises every run (the dispatcher starts a job thread only once the
// previous one has posted its result), so nft_lock is never contended today. It stays around the run and nft_ctx_free, and around LibraryInit on the JS
// thread, so that any other caller of libnftables added later cannot race these globals.
std::mutex nft_lock;
std::once_flag library_init;

void LibraryInit() {
  std::lock_guard<std::mutex> guard(nft_lock);
  // Opens (and closes) a netfilter netlink socket in the caller's netns: cheap, and touches
  // nothing there.
  struct nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx != nullptr) nft_ctx_free(ctx);
}

struct NftJob {
  napi_env env = nullptr;
  napi_deferred deferred = nullptr;
  napi_threadsafe_function tsfn = nullptr;

  // Inputs.
  std::string path;
  int nsfd = -1;  // in the shared fd table; closed by the dispatcher once the job thread is done with it
  std::string script;
  bool dry_run = false;
  bool json = false;
  bool conditional = false;                // opts.ifAbsent was given
  std::vector<std::string> if_absent;      // "family name" of each table that must not exist
  bool inline_ok = false;                  // opts.inline: may run on the JS thread
  bool ran_inline = false;                 // it did
  bool piecewise = false;                  // opts.ifPresent was given: `script` is made from `pieces`
  std::vector<std::pair<std::string, std::string>> pieces;  // ("family name", script) in order
  std::vector<std::string> ran;            // the tables whose piece ran

  // Set on the last job a dispatcher served before it ended: Finish joins that dispatcher, so
  // no dispatcher outlives the settling of its last job.
  bool joins_worker = false;
  pthread_t worker{};

  // The dispatcher serving the job: the job thread returns to its netns.
  pid_t dispatcher_tid = 0;

  // Set by the job thread, under result_lock, when the results below are final; after that the
  // job thread never touches the job again.
  bool done = false;

  // Results, written by the job thread before it sets done.
  int sys_errno = 0;       // non-zero: the job thread could not get to run nft at all
  std::string sys_error;   // what failed, when sys_errno is set
  int rc = 0;              // nft_run_cmd_from_filename's return value
  bool listing_failed = false;  // rc/error are those of the conditional job's listing
  bool applied = true;     // false: a conditional job found a table and did not run the script
  std::string listing;     // the JSON listing, when !applied
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

// The context's netfilter netlink socket: the only one in the job thread's private table, which
// holds nothing but what this thread opened. -1 if not found.
int FindNetfilterSocket() {
  for (int fd = 3; fd < 64; fd++) {
    int domain = 0, protocol = 0;
    socklen_t len = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_NETLINK) continue;
    len = sizeof(protocol);
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == NETLINK_NETFILTER) return fd;
  }
  return -1;
}

// Runs one command text on ctx (output and error buffered), with or without JSON output.
// Returns nft_run_cmd_from_buffer's value; the buffers are read (and so emptied) into out/err.
int RunText(struct nft_ctx* ctx, const char* text, bool json, std::string* out, std::string* err) {
  unsigned flags = nft_ctx_output_get_flags(ctx);
  nft_ctx_output_set_flags(ctx, json ? flags | NFT_CTX_OUTPUT_JSON : flags & ~NFT_CTX_OUTPUT_JSON);
  int rc = nft_run_cmd_from_buffer(ctx, text);
  nft_ctx_output_set_flags(ctx, flags);
  const char* o = nft_ctx_get_output_buffer(ctx);
  const char* e = nft_ctx_get_error_buffer(ctx);
  *out = o != nullptr ? o : "";
  *err = e != nullptr ? e : "";
  return rc;
}

// The tables of the netns as `list tables` prints them ("table FAMILY NAME" per line): the
// "FAMILY NAME" of each, in *tables. Returns the run's value (0 when listed).
int ListTableNames(struct nft_ctx* ctx, std::vector<std::string>* tables, std::string* err) {
  std::string text;
  int rc = RunText(ctx, "list tables", false, &text, err);
  for (size_t at = 0; rc == 0 && at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    if (text.compare(at, 6, "table ") == 0) tables->push_back(text.substr(at + 6, end - at - 6));
    at = end + 1;
  }
  return rc;
}

bool Listed(const std::vector<std::string>& tables, const std::string& t) {
  for (const std::string& x : tables) {
    if (x == t) return true;
  }
  return false;
}

// The precondition of a conditional job, under nft_lock on the job thread: true when none of
// job->if_absent is among the netns' tables (then the script runs). Otherwise false, with
// job->applied false and job->listing the JSON listing src/nft/plan.ts parses; or a failed
// listing, in job->rc with its error in *err. The text `list tables` is the cheap check; the
// JSON listing with chains is made only when it is needed.
bool ListIfAbsent(struct nft_ctx* ctx, NftJob* job, std::string* out, std::string* err) {
  std::vector<std::string> tables;
  int rc = ListTableNames(ctx, &tables, err);
  bool present = false;
  for (const std::string& t : job->if_absent) present = present || Listed(tables, t);
  if (rc == 0 && !present) return true;
  if (rc == 0) {
    job->applied = false;
    rc = RunText(ctx, "list tables\nlist chains\n", true, &job->listing, err);
  }
  if (rc != 0) {
    job->rc = rc;
    job->listing_failed = true;
  }
  out->clear();
  return false;
}

// The script of a piecewise job, under nft_lock on the job thread: the pieces of the tables
// listed, in their order, into job->script (their tables into job->ran). True when there is
// something to run; false when nothing is there (job->applied false) or the listing failed
// (job->rc, the error in *err).
bool ChoosePieces(struct nft_ctx* ctx, NftJob* job, std::string* err) {
  std::vector<std::string> tables;
  int rc = ListTableNames(ctx, &tables, err);
  if (rc != 0) {
    job->rc = rc;
    job->listing_failed = true;
    return false;
  }
  job->script.clear();
  for (const auto& piece : job->pieces) {
    if (!Listed(tables, piece.first)) continue;
    job->script += piece.second;
    job->ran.push_back(piece.first);
  }
  job->applied = !job->ran.empty();
  return job->applied;
}

// Runs the job's script with libnftables. Called on the job thread, already inside the job's
// netns and in its private fd table, so every fd made here is a low one. *held_socket gets a
// second fd of the context's netlink socket (or -1), for the caller to close after the result
// is posted: the kernel waits for an RCU grace period when a netfilter netlink socket is
// released after a transaction that deleted or flushed objects (8.9-16.6 ms measured), while the
// transaction is committed by the time libnftables returns (the kernel processes the batch
// inside its sendmsg). With this fd held, nft_ctx_free's close is not the release, and takes no
// time under nft_lock.
// An inline run (on the JS thread) passes no held_socket: its jobs' close costs no grace period.
void RunNft(NftJob* job, int* held_socket) {
  struct nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == nullptr) {
    job->sys_errno = errno != 0 ? errno : ENOMEM;
    job->sys_error = "nft_ctx_new failed in " + job->path;
    return;
  }
  // Only in a job thread's private table is the context's socket the one netfilter socket to find.
  int socket_fd = held_socket != nullptr ? FindNetfilterSocket() : -1;
  if (held_socket != nullptr) *held_socket = socket_fd >= 0 ? fcntl(socket_fd, F_DUPFD_CLOEXEC, 0) : -1;
  int script_fd = -1;
  std::string file;
  std::string out, err;
  {
    std::lock_guard<std::mutex> guard(nft_lock);
    if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
      job->sys_errno = errno != 0 ? errno : ENOMEM;
      job->sys_error = "cannot buffer libnftables output";
    } else {
      bool run_script = true;
      if (job->conditional) {
        run_script = ListIfAbsent(ctx, job, &out, &err);
      } else if (job->piecewise) {
        run_script = ChoosePieces(ctx, job, &err);
      }
      // The script goes in as a file, not a buffer: for buffer input libnftables 1.0.6 prints
      // the first line of the script under every error and no line number, while for a file it
      // prints "file:line:col" and the offending line. A memfd is that file, named through
      // /proc/thread-self (/proc/self/fd would be the main thread's table, not this one); that
      // name is replaced by kScriptName in the messages.
      if (run_script) {
        script_fd = WriteMemfd(job->script, &job->sys_errno);
        if (script_fd < 0) {
          job->sys_error = std::string("cannot hold the nft script in a memfd: ") + strerror(job->sys_errno);
          run_script = false;
        }
      }
      if (run_script) {
        file = "/proc/thread-self/fd/" + std::to_string(script_fd);
        nft_ctx_set_dry_run(ctx, job->dry_run);
        if (job->json) {
          nft_ctx_output_set_flags(ctx, nft_ctx_output_get_flags(ctx) | NFT_CTX_OUTPUT_JSON);
        }
        job->rc = nft_run_cmd_from_filename(ctx, file.c_str());
        const char* o = nft_ctx_get_output_buffer(ctx);
        const char* e = nft_ctx_get_error_buffer(ctx);
        out = o != nullptr ? o : "";
        err = e != nullptr ? e : "";
      }
    }
    nft_ctx_free(ctx);
  }
  if (script_fd >= 0) close(script_fd);
  job->output = std::move(out);
  job->error = file.empty() ? err : ReplaceAll(err, file + ":", std::string(kScriptName) + ":");
}

// Guards every job's `done`; result_cv wakes the dispatcher. Static and never destroyed, so the
// job thread may still be unlocking it after the dispatcher has moved on and the job is freed.
std::mutex result_lock;
std::condition_variable result_cv;

void PostResult(NftJob* job) {
  std::lock_guard<std::mutex> guard(result_lock);
  job->done = true;
  result_cv.notify_all();
}

// Puts the job thread back in the dispatcher's netns (the process' own: the dispatcher never
// changes namespace), so no thread is left in a pod's netns once the job has settled. This
// cannot reasonably fail; if it did, the job's result would still be true, and the thread, which
// runs nothing else, would only end in the pod's netns instead.
void ReturnHome(pid_t dispatcher_tid) {
  std::string home = "/proc/self/task/" + std::to_string(dispatcher_tid) + "/ns/net";
  int fd = open(home.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  setns(fd, CLONE_NEWNET);
  close(fd);
}

// The job thread: setns with the job's fd (a shared-table number), then a private fd table
// with only 0-2 in it, then libnftables, then back to the dispatcher's netns; it posts the
// result and only then closes the netlink socket, so the caller does not wait for the kernel's
// grace period, nor does the next job: the dispatcher starts it as soon as the result is posted,
// and the closes of consecutive jobs wait for their grace periods side by side, as the closes of
// concurrent nft processes do.
void* JobMain(void* arg) {
  auto* job = static_cast<NftJob*>(arg);
  pid_t dispatcher_tid = job->dispatcher_tid;
  int held_socket = -1;
  if (setns(job->nsfd, CLONE_NEWNET) != 0) {
    job->sys_errno = errno;
    job->sys_error = "cannot enter network namespace " + job->path + ": setns: " + strerror(job->sys_errno);
  } else {
    // The kernel copies only fds 0-2 into the new table (the rest are in the closed range).
    if (close_range(3, ~0U, CLOSE_RANGE_UNSHARE) != 0) {
      job->sys_errno = errno;
      job->sys_error = std::string("cannot give the nft thread its own fd table: close_range: ") + strerror(job->sys_errno);
    } else {
      RunNft(job, &held_socket);
    }
    ReturnHome(dispatcher_tid);
  }
  PostResult(job);  // the job is the dispatcher's (and the JS thread's) from here on
  if (held_socket >= 0) close(held_socket);
  return nullptr;
}

// Runs one job on a new, detached job thread and waits until its result is posted. The job
// thread inherits the dispatcher's mask: every signal blocked.
void RunJob(NftJob* job) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  job->dispatcher_tid = gettid();
  int rc = pthread_create(&thread, &attr, JobMain, job);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    job->sys_errno = rc;
    job->sys_error = std::string("cannot start an nft job thread: ") + strerror(rc);
    return;
  }
  std::unique_lock<std::mutex> guard(result_lock);
  result_cv.wait(guard, [job] { return job->done; });
}

// The queue of jobs and whether a dispatcher is serving it; both under queue_lock (held only to
// push or pop, never while a job runs).
std::mutex queue_lock;
std::deque<NftJob*> queue;
bool worker_running = false;

// Serves the queue until it is empty. Started by Enqueue with the first job already queued.
void* DispatcherMain(void*) {
  NftJob* job;
  {
    std::lock_guard<std::mutex> guard(queue_lock);
    job = queue.front();
    queue.pop_front();
  }
  for (;;) {
    RunJob(job);
    close(job->nsfd);
    job->nsfd = -1;
    NftJob* next = nullptr;
    {
      std::lock_guard<std::mutex> guard(queue_lock);
      if (queue.empty()) {
        // This dispatcher ends: a job queued from now on starts a new one. The JS thread joins
        // this one when it settles this job.
        worker_running = false;
        job->joins_worker = true;
        job->worker = pthread_self();
      } else {
        next = queue.front();
        queue.pop_front();
      }
    }
    // Last touch of the job from this thread: after the release the JS thread may free it.
    napi_release_threadsafe_function(job->tsfn, napi_tsfn_release);
    if (next == nullptr) return nullptr;
    job = next;
  }
}

// Starts a dispatcher with every signal blocked (signals stay with Node's own threads).
int StartWorker() {
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  pthread_t thread;
  int rc = pthread_create(&thread, nullptr, DispatcherMain, nullptr);
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  return rc;
}

// Queues the job and makes sure a dispatcher serves the queue. 0, or pthread_create's error
// (then the job is not queued).
int Enqueue(NftJob* job) {
  std::lock_guard<std::mutex> guard(queue_lock);
  queue.push_back(job);
  if (worker_running) return 0;
  int rc = StartWorker();
  if (rc != 0) {
    queue.pop_back();
    return rc;
  }
  worker_running = true;
  return 0;
}

// Never called: the dispatcher only releases the function. N-API wants one of a JS function or a
// call_js callback.
void NoCall(napi_env, napi_value, void*, void*) {}

Napi::Value ResultObject(Napi::Env env, const NftJob& job) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("output", Napi::String::New(env, job.output));
  o.Set("error", Napi::String::New(env, job.error));
  o.Set("applied", Napi::Boolean::New(env, job.applied));
  if (!job.applied) o.Set("listing", Napi::String::New(env, job.listing));
  o.Set("onJsThread", Napi::Boolean::New(env, job.ran_inline));
  if (job.piecewise) {
    Napi::Array ran = Napi::Array::New(env, job.ran.size());
    for (uint32_t i = 0; i < job.ran.size(); i++) ran.Set(i, Napi::String::New(env, job.ran[i]));
    o.Set("ran", ran);
  }
  return o;
}

// Runs on the JS thread once the dispatcher has released the job's thread-safe function (or when it
// could not be queued). Joins the dispatcher if this was its last job, then settles the Promise.
void Finish(napi_env raw_env, void* data, void*) {
  auto* job = static_cast<NftJob*>(data);
  // Its last act after the release is to return: a short wait at most.
  if (job->joins_worker) pthread_join(job->worker, nullptr);
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
    std::string msg = std::string(job->listing_failed ? "listing nft tables failed" : "nft failed") +
                      " in network namespace " + job->path;
    if (!job->error.empty()) msg += ":\n" + job->error;
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", Napi::String::New(env, "ENFT"));
    e.Set("netnsPath", Napi::String::New(env, job->path));
    e.Set("nftError", Napi::String::New(env, job->error));
    e.Set("nftOutput", Napi::String::New(env, job->output));
    e.Set("nftStage", Napi::String::New(env, job->listing_failed ? "list" : "apply"));
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

// The lowest free descriptor must be below this for an inline run: the netlink socket takes it
// (or one just above, if another thread opens something meanwhile) and must stay under
// FD_SETSIZE (1024) for libnftables' select().
constexpr int kInlineFdCeiling = 1000;

// Runs the job on the JS thread if it is safe (see the top of this file); false: queue it.
bool TryRunInline(NftJob* job) {
  {
    std::lock_guard<std::mutex> guard(queue_lock);
    if (worker_running || !queue.empty()) return false;
  }
  int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (probe < 0) return false;
  close(probe);
  if (probe >= kInlineFdCeiling) return false;
  int saved = open(kSelfNetns, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (saved < 0) return false;
  job->ran_inline = true;
  if (setns(job->nsfd, CLONE_NEWNET) != 0) {
    job->sys_errno = errno;
    job->sys_error = "cannot enter network namespace " + job->path + ": setns: " + strerror(job->sys_errno);
    close(saved);
    return true;
  }
  RunNft(job, nullptr);
  RestoreOrDie(saved, "nftRun");
  return true;
}

constexpr char kUsage[] =
    "nftRun(netnsPath: string, script: string, dryRun: boolean, json: boolean, opts?: {ifAbsent?: string[], inline?: boolean} | "
    "{ifPresent?: {table: string, script: string}[]})";

// "family name", as `nft list tables` prints it after "table ": the key of ifAbsent and ifPresent.
bool IsTableKey(const std::string& t) {
  size_t space = t.find(' ');
  return space != std::string::npos && space != 0 && space + 1 != t.size() &&
         t.find_first_of(" \n", space + 1) == std::string::npos;
}

Napi::Value NftRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsString() || !info[2].IsBoolean() ||
      !info[3].IsBoolean()) {
    throw Napi::TypeError::New(env, kUsage);
  }
  std::vector<std::string> if_absent;
  std::vector<std::pair<std::string, std::string>> pieces;
  bool conditional = false;
  bool piecewise = false;
  bool inline_ok = false;
  if (info.Length() > 4 && !info[4].IsUndefined()) {
    if (!info[4].IsObject() || info[4].IsArray()) throw Napi::TypeError::New(env, kUsage);
    Napi::Value list = info[4].As<Napi::Object>().Get("ifAbsent");
    Napi::Value present = info[4].As<Napi::Object>().Get("ifPresent");
    if (!list.IsArray() && !list.IsUndefined()) throw Napi::TypeError::New(env, kUsage);
    if (!present.IsArray() && !present.IsUndefined()) throw Napi::TypeError::New(env, kUsage);
    if (list.IsArray() && present.IsArray()) throw Napi::TypeError::New(env, "nftRun: opts.ifAbsent and opts.ifPresent exclude each other");
    Napi::Value in = info[4].As<Napi::Object>().Get("inline");
    if (!in.IsBoolean() && !in.IsUndefined()) throw Napi::TypeError::New(env, kUsage);
    if (in.IsBoolean() && in.As<Napi::Boolean>().Value() && present.IsArray()) {
      throw Napi::TypeError::New(env, "nftRun: opts.inline is not for a piecewise job (its removals wait for a grace period on close)");
    }
    inline_ok = in.IsBoolean() && in.As<Napi::Boolean>().Value();
    if (list.IsArray()) {
      conditional = true;
      Napi::Array a = list.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value v = a.Get(i);
        std::string t = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
        if (!IsTableKey(t)) {
          throw Napi::TypeError::New(env, "nftRun: opts.ifAbsent[" + std::to_string(i) + "] must be \"family name\"");
        }
        if_absent.push_back(t);
      }
    }
    if (present.IsArray()) {
      piecewise = true;
      Napi::Array a = present.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value v = a.Get(i);
        Napi::Value t = v.IsObject() ? v.As<Napi::Object>().Get("table") : Napi::Value();
        Napi::Value sc = v.IsObject() ? v.As<Napi::Object>().Get("script") : Napi::Value();
        std::string key = !t.IsEmpty() && t.IsString() ? t.As<Napi::String>().Utf8Value() : "";
        if (!IsTableKey(key) || sc.IsEmpty() || !sc.IsString()) {
          throw Napi::TypeError::New(env, "nftRun: opts.ifPresent[" + std::to_string(i) + "] must be {table: \"family name\", script: string}");
        }
        pieces.emplace_back(key, sc.As<Napi::String>().Utf8Value());
      }
    }
  }
  auto* job = new NftJob();
  job->env = env;
  job->path = info[0].As<Napi::String>().Utf8Value();
  job->script = info[1].As<Napi::String>().Utf8Value();
  job->dry_run = info[2].As<Napi::Boolean>().Value();
  job->json = info[3].As<Napi::Boolean>().Value();
  job->conditional = conditional;
  job->if_absent = std::move(if_absent);
  job->piecewise = piecewise;
  job->pieces = std::move(pieces);
  job->inline_ok = inline_ok;
  if (piecewise && !job->script.empty()) {
    delete job;
    throw Napi::TypeError::New(env, "nftRun: with opts.ifPresent the script argument must be empty (the pieces are the script)");
  }

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

  std::call_once(library_init, LibraryInit);
  if (job->inline_ok && TryRunInline(job)) {
    Finish(env, job, nullptr);
    return Napi::Value(env, promise);
  }

  napi_value name = Napi::String::New(env, "icts:nftRun");
  napi_status st = napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, job, Finish, job, NoCall,
                                                   &job->tsfn);
  if (st != napi_ok) {
    job->sys_errno = EAGAIN;
    job->sys_error = "cannot create a thread-safe function for the nft dispatcher";
    Finish(env, job, nullptr);
    return Napi::Value(env, promise);
  }

  int rc = Enqueue(job);
  if (rc != 0) {
    job->sys_errno = rc;
    job->sys_error = std::string("cannot start the nft dispatcher thread: ") + strerror(rc);
    // Releasing the last reference runs Finish on the JS thread, which rejects.
    napi_release_threadsafe_function(job->tsfn, napi_tsfn_release);
  }
  return Napi::Value(env, promise);
}

}  // namespace

void InitNft(Napi::Env env, Napi::Object exports) {
  exports.Set("nftRun", Napi::Function::New(env, NftRun, "nftRun"));
}

}  // namespace icts
