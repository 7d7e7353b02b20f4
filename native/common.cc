#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sys/types.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace icts {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? std::string(name) : "E" + std::to_string(err);
}

Napi::Error ErrnoError(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what);
  if (err != 0) {
    e.Set("code", Napi::String::New(env, ErrnoName(err)));
    e.Set("errno", Napi::Number::New(env, err));
  }
  return e;
}

// "a FIFO", "a directory", ... for the file types a namespace file can never be.
static const char* KindOf(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

int OpenNetns(const std::string& path, std::string* message, int* err) {
  auto cannot_open = [&](int e) {
    *err = e;
    if (e == ENOENT) {
      *message = "network namespace " + path + " does not exist (no such file: was the netns deleted?)";
    } else {
      *message = "cannot open network namespace " + path + ": " + strerror(e);
    }
    return -1;
  };
  // A namespace file is a regular file on nsfs. Anything else is refused before it is opened:
  // opening a device can have side effects, and opening a FIFO without O_NONBLOCK waits for a
  // writer, on the JS thread. O_NONBLOCK below still covers a FIFO swapped in after the stat.
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return cannot_open(errno);
  if (!S_ISREG(st.st_mode)) {
    *err = EINVAL;
    *message = path + " is not a network namespace (it is " + KindOf(st.st_mode) + ")";
    return -1;
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return cannot_open(errno);
  // A netns bind mount that was unmounted leaves an ordinary empty file behind: opening it
  // succeeds, so check the file system type before anyone tries to setns into it.
  struct statfs fs;
  if (fstatfs(fd, &fs) != 0) {
    *err = errno;
    *message = "cannot stat network namespace " + path + ": " + strerror(*err);
    close(fd);
    return -1;
  }
  if (static_cast<unsigned long>(fs.f_type) != NSFS_MAGIC) {
    *err = EINVAL;
    *message = path + " is not a network namespace (not an nsfs file; its bind mount may have been removed)";
    close(fd);
    return -1;
  }
  int type = ioctl(fd, NS_GET_NSTYPE);
  if (type >= 0 && type != CLONE_NEWNET) {
    *err = EINVAL;
    *message = path + " is a namespace, but not a network namespace";
    close(fd);
    return -1;
  }
  return fd;
}

const char kSelfNetns[] = "/proc/thread-self/ns/net";

void RestoreOrDie(int saved_fd, const char* who) {
  if (setns(saved_fd, CLONE_NEWNET) != 0) {
    std::string why = std::string(who) + ": cannot return the JS thread to its network namespace: " + strerror(errno);
    Napi::Error::Fatal("istio-cni-ts native addon", why.c_str());
  }
  close(saved_fd);
}

}  // namespace icts
