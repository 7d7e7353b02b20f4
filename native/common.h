// Helpers shared by the addon's functions: errors that carry errno, and opening a netns path.
#pragma once

#include <napi.h>

#include <string>

namespace icts {

// An Error whose message is `what`, with `.code` set to the errno name (e.g. "ENOENT") and
// `.errno` to its number when `err` is non-zero. Extra string properties are added as given.
Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err);

// The errno name ("ENOENT") or "E<number>" when glibc does not know it.
std::string ErrnoName(int err);

// Opens a network namespace file (e.g. /run/netns/NAME or /proc/PID/ns/net) read-only,
// close-on-exec and non-blocking (a FIFO at the path never blocks the caller; anything but a
// regular file is refused before it is opened), and checks that it is an nsfs file of type
// CLONE_NEWNET. On failure returns -1
// and fills *message with a sentence that names the path, and *err with the errno.
int OpenNetns(const std::string& path, std::string* message, int* err);

// The calling thread's own netns file, and the way back to it: setns(saved_fd) and close it.
// Returning must not fail; if it somehow does, the JS thread would go on in a pod's namespace,
// so the process stops instead (both callers run on the JS thread).
extern const char kSelfNetns[];
void RestoreOrDie(int saved_fd, const char* who);

// Initialisers for each part of the addon, called from the module's Init.
void InitNft(Napi::Env env, Napi::Object exports);
void InitNetns(Napi::Env env, Napi::Object exports);
void InitSockets(Napi::Env env, Napi::Object exports);
void InitSeqpacket(Napi::Env env, Napi::Object exports);

}  // namespace icts
