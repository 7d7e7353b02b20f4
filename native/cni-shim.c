// istio-cni-shim: the CNI binary of the fast path (docs/payload.md).
//
// The runtime executes this file as the `istio-cni` plugin. It forwards the request (the whole
// environment and stdin) to the node agent over the unix socket <cni_agent_run_dir>/cni-shim.sock,
// where the same handleCni function the standalone plugin runs answers, and prints the reply.
// The pod's netns goes along as a file descriptor (SCM_RIGHTS): CNI_NETNS is a path in the
// runtime's mount namespace, which the agent (in its own container) may not see.
// Whenever the agent cannot be trusted or does not answer properly it executes the standalone
// plugin (istio-cni-ts/istio-cni-plugin beside this file) with the same environment and stdin
// instead, through the payload's own dynamic loader and libraries (istio-cni-ts/lib/, glibc
// included), so it runs whatever C library the host has, and a pod never waits on an absent,
// restarting or hung agent:
//
//   - the socket (or its directory) is not root's, the socket is not mode 0600, the directory is
//     writable by others, or the peer is not root (SO_PEERCRED): not trusted, fallback;
//   - no socket, a stale socket (ECONNREFUSED), any I/O error: fallback;
//   - no acknowledgement within ACK_TIMEOUT (a hung agent), no reply within REPLY_TIMEOUT: fallback;
//   - a reply that is not a CNI result (bad frame, empty stdout where a result is due, output
//     that is not a JSON object): fallback.
//
// Wire format: SOCK_SEQPACKET records, integers big-endian u32, bodies in records of at most
// CHUNK bytes:
//   request  "ICTSCNI2" | env length | stdin length | netns state   (+ the netns fd, SCM_RIGHTS)
//            then env ("KEY=VALUE\0"...) and stdin
//   ack      "ICTSACK1"                      (sent by the agent once the request is read)
//   reply    "ICTSRES1" | exit code | stdout length, then stdout
// netns state: 0 no CNI_NETNS, 1 its fd attached (opened O_PATH here), 2 it could not be opened
// (the plugin would find it missing).
//
// Only libc; built by binding.gyp (target istio-cni-shim) as a static executable.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <elf.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_RUN_DIR "/var/run/istio-cni"
#define SOCKET_NAME "cni-shim.sock"
#define PAYLOAD_REL "istio-cni-ts/"
#define MANIFEST_NAME "MANIFEST"
#define MAX_MANIFEST 65536
#if defined(__x86_64__)
#define PAYLOAD_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define PAYLOAD_MACHINE EM_AARCH64
#else
#error "the payload's ELF machine is not known for this architecture"
#endif
#define MAX_STDIN (8u << 20)
#define MAX_ENV (1u << 20)
#define MAX_REPLY (8u << 20)
#define CHUNK 32768u
#define NETNS_NONE 0u
#define NETNS_FD 1u
#define NETNS_MISSING 2u
#define VERSION_STDIN_IDLE_MS 1000

static int debug_enabled;

static void debugf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void debugf(const char *fmt, ...) {
  if (!debug_enabled) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("istio-cni-shim: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static long env_ms(const char *name, long dflt) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0') return dflt;
  char *end;
  long n = strtol(v, &end, 10);
  return (*end == '\0' && n > 0 && n <= 3600000) ? n : dflt;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// ---------------------------------------------------------------------------------------------
// A growable byte buffer.

struct buf {
  char *p;
  size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

static int buf_u32(struct buf *b, uint32_t v) {
  unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
  return buf_add(b, x, 4);
}

static uint32_t get_u32(const unsigned char *x) {
  return ((uint32_t)x[0] << 24) | ((uint32_t)x[1] << 16) | ((uint32_t)x[2] << 8) | x[3];
}

// ---------------------------------------------------------------------------------------------
// Stdin: read whole (VERSION may come without stdin: stop after an idle second, as the plugin does).

static int read_stdin(struct buf *in, int idle_ms) {
  if (isatty(0)) return 0;
  char chunk[65536];
  for (;;) {
    if (idle_ms > 0) {
      struct pollfd p = {.fd = 0, .events = POLLIN};
      int r = poll(&p, 1, idle_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) return 0;
    }
    ssize_t n = read(0, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EBADF ? 0 : -1;
    if (n == 0) return 0;
    if (in->len + (size_t)n > MAX_STDIN) return -1;
    if (buf_add(in, chunk, (size_t)n) != 0) return -1;
  }
}

// ---------------------------------------------------------------------------------------------
// A string value of a top-level key of the JSON object on stdin, or NULL. Enough JSON to skip
// nested values and strings correctly; anything it does not understand gives NULL (the caller
// then uses the default). Escapes other than \" \\ \/ give NULL too: the paths we look for have
// none in practice, and a wrong guess would only cost the fast path.
//
// Keys match as the plugin matches them (src/cni/json.ts, Go's encoding/json): without regard to
// ASCII case (the keys looked up here have no letter whose Unicode folding differs). A key given
// twice (in any case) is ambiguous, and so is a key spelled with escapes: NULL, the default. The
// agent answers with its own run dir and refuses a config that names another, so the shim and
// the agent never act on two different directories.

static const char *skip_ws(const char *s, const char *e) {
  while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
  return s;
}

static const char *skip_string(const char *s, const char *e) {  // s at the opening quote
  for (s++; s < e; s++) {
    if (*s == '\\') {
      s++;
      continue;
    }
    if (*s == '"') return s + 1;
  }
  return NULL;
}

static const char *skip_value(const char *s, const char *e) {
  s = skip_ws(s, e);
  if (s >= e) return NULL;
  if (*s == '"') return skip_string(s, e);
  if (*s == '{' || *s == '[') {
    int depth = 0;
    while (s < e) {
      if (*s == '"') {
        s = skip_string(s, e);
        if (s == NULL) return NULL;
        continue;
      }
      if (*s == '{' || *s == '[') depth++;
      if (*s == '}' || *s == ']') {
        if (--depth == 0) return s + 1;
      }
      s++;
    }
    return NULL;
  }
  while (s < e && *s != ',' && *s != '}' && *s != ']' && *s != ' ' && *s != '\n' && *s != '\r' && *s != '\t') s++;
  return s;
}

static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

static int key_matches(const char *k, size_t n, const char *key, size_t klen) {
  if (n != klen) return 0;
  for (size_t i = 0; i < n; i++) {
    if (ascii_lower((unsigned char)k[i]) != ascii_lower((unsigned char)key[i])) return 0;
  }
  return 1;
}

// The string at s (its opening quote) up to vend, unescaped; NULL for an escape we do not decode.
static char *copy_string(const char *s, const char *vend) {
  char *out = malloc((size_t)(vend - s));
  if (out == NULL) return NULL;
  size_t o = 0;
  for (const char *p = s + 1; p < vend - 1; p++) {
    if (*p == '\\') {
      p++;
      if (*p != '"' && *p != '\\' && *p != '/') {
        free(out);
        return NULL;
      }
    }
    if (*p == '\0') {
      free(out);
      return NULL;
    }
    out[o++] = *p;
  }
  out[o] = '\0';
  return out;
}

static char *json_top_string(const char *json, size_t len, const char *key) {
  const char *s = skip_ws(json, json + len), *e = json + len;
  if (s >= e || *s != '{') return NULL;
  s = skip_ws(s + 1, e);
  if (s < e && *s == '}') return NULL;
  size_t klen = strlen(key);
  const char *val = NULL, *vend = NULL;  // the one matching member's value
  int matches = 0, ambiguous = 0;
  for (;;) {
    s = skip_ws(s, e);
    if (s >= e || *s != '"') return NULL;
    const char *kstart = s + 1;
    const char *kend = skip_string(s, e);
    if (kend == NULL) return NULL;
    size_t kn = (size_t)(kend - 1 - kstart);
    if (memchr(kstart, '\\', kn) != NULL) ambiguous = 1;  // could decode to the key: cannot tell
    int match = key_matches(kstart, kn, key, klen);
    s = skip_ws(kend, e);
    if (s >= e || *s != ':') return NULL;
    s = skip_ws(s + 1, e);
    const char *vstart = s;
    s = skip_value(s, e);
    if (s == NULL) return NULL;
    if (match) {
      matches++;
      val = vstart;
      vend = s;
    }
    s = skip_ws(s, e);
    if (s < e && *s == ',') {
      s++;
      continue;
    }
    if (s < e && *s == '}') break;
    return NULL;
  }
  if (matches != 1 || ambiguous || *val != '"') return NULL;
  return copy_string(val, vend);
}

// ---------------------------------------------------------------------------------------------
// The agent's socket: trusted only when root owns it and its directory, the socket is 0600, the
// directory is not writable by group or others, and the process listening on it is root.

static int trusted_path(const char *dir, const char *sock) {
  struct stat st;
  if (lstat(dir, &st) != 0) {
    debugf("%s: %s", dir, strerror(errno));
    return 0;
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) != 0) {
    debugf("%s: not a root-owned directory closed to others (uid %u, mode %o)", dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
    return 0;
  }
  if (lstat(sock, &st) != 0) {
    debugf("%s: %s", sock, strerror(errno));
    return 0;
  }
  if (!S_ISSOCK(st.st_mode) || st.st_uid != 0 || (st.st_mode & 07777) != 0600) {
    debugf("%s: not a root-owned socket of mode 0600 (uid %u, mode %o)", sock, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
    return 0;
  }
  return 1;
}

static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, (int)(left > INT_MAX ? INT_MAX : left));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) errno = ETIMEDOUT;
    if (r <= 0) return -1;
    return 0;
  }
}

// Empty output is a CNI answer only for a successful DEL, CHECK, STATUS or GC.
static int reply_is_cni(const char *cmd, uint32_t code, const char *out, size_t len) {
  if (len == 0) {
    return code == 0 && cmd != NULL &&
           (strcmp(cmd, "DEL") == 0 || strcmp(cmd, "CHECK") == 0 || strcmp(cmd, "STATUS") == 0 || strcmp(cmd, "GC") == 0);
  }
  if (code > 255 || len < 3 || out[0] != '{' || out[len - 1] != '\n' || out[len - 2] != '}') return 0;
  if (memchr(out, '\0', len) != NULL) return 0;
  if (code != 0 && strstr(out, "\"code\":") == NULL) return 0;
  return 1;
}

// Sends one record, with `pass_fd` as SCM_RIGHTS when >= 0.
static int send_record(int fd, const void *data, size_t len, int pass_fd, int64_t deadline) {
  for (;;) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    union {
      char buf[CMSG_SPACE(sizeof(int))];
      struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (pass_fd >= 0) {
      memset(&ctl, 0, sizeof ctl);
      msg.msg_control = ctl.buf;
      msg.msg_controllen = sizeof ctl.buf;
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_fd(fd, POLLOUT, deadline) != 0) return -1;
      continue;
    }
    if (w >= 0 && w != (ssize_t)len) errno = EMSGSIZE;
    return w == (ssize_t)len ? 0 : -1;
  }
}

// Receives one record into dst (at most cap bytes): its length, or one of these.
#define RECV_TIMEOUT (-1)
#define RECV_CLOSED (-2)
#define RECV_ERROR (-3)
#define RECV_OVERSIZED (-4)
static ssize_t recv_record(int fd, void *dst, size_t cap, int64_t deadline) {
  for (;;) {
    ssize_t r = recv(fd, dst, cap, MSG_TRUNC);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_fd(fd, POLLIN, deadline) != 0) return RECV_TIMEOUT;
      continue;
    }
    if (r < 0) return RECV_ERROR;
    if (r == 0) return RECV_CLOSED;
    if ((size_t)r > cap) return RECV_OVERSIZED;
    return r;
  }
}

// What went wrong with a record expected as `what`, in words (for ISTIO_CNI_SHIM_DEBUG).
static void explain_recv(ssize_t r, const char *what, long ms) {
  switch (r) {
    case RECV_TIMEOUT:
      debugf("no %s within %ld ms", what, ms);
      break;
    case RECV_CLOSED:
      debugf("the agent closed the connection before its %s (it drops requests it cannot take: see its log)", what);
      break;
    case RECV_ERROR:
      debugf("reading the agent's %s: %s", what, strerror(errno));
      break;
    case RECV_OVERSIZED:
      debugf("the agent's %s is larger than %u bytes", what, CHUNK);
      break;
    default:
      debugf("the agent's %s is malformed (%zd bytes)", what, r);
  }
}

// Asks the agent. Returns 0 with *code/*out set on a proper answer, -1 to fall back.
static int ask_agent(const char *sock, const struct buf *body, uint32_t env_len, uint32_t stdin_len, uint32_t netns_state, int netns_fd,
                     const char *cmd, uint32_t *code, struct buf *out) {
  if (strlen(sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) return -1;
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  int ok = -1;
  char *chunk = NULL;
  long ack_ms = env_ms("ISTIO_CNI_SHIM_ACK_TIMEOUT_MS", 2000);
  long reply_ms = env_ms("ISTIO_CNI_SHIM_REPLY_TIMEOUT_MS", 200000);
  int64_t deadline = now_ms() + ack_ms;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strcpy(a.sun_path, sock);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    // A unix connect completes at once or fails (EAGAIN: the agent's backlog is full).
    debugf("connect %s: %s", sock, strerror(errno));
    goto done;
  }
  struct ucred cred;
  socklen_t cl = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
    debugf("%s: SO_PEERCRED: %s", sock, strerror(errno));
    goto done;
  }
  if (cred.uid != 0) {
    debugf("%s: the listening process is not root (uid %u)", sock, (unsigned)cred.uid);
    goto done;
  }
  struct buf head = {0};
  if (buf_add(&head, "ICTSCNI2", 8) != 0 || buf_u32(&head, env_len) != 0 || buf_u32(&head, stdin_len) != 0 ||
      buf_u32(&head, netns_state) != 0) {
    free(head.p);
    goto done;
  }
  int sent = send_record(fd, head.p, head.len, netns_state == NETNS_FD ? netns_fd : -1, deadline);
  free(head.p);
  for (size_t off = 0; sent == 0 && off < body->len; off += CHUNK) {
    size_t n = body->len - off < CHUNK ? body->len - off : CHUNK;
    sent = send_record(fd, body->p + off, n, -1, deadline);
  }
  if (sent != 0) {
    if (errno == EPIPE || errno == ECONNRESET) {
      debugf("the agent closed the connection while the request was being sent (it drops requests it cannot take: see its log)");
    } else {
      debugf("sending the request: %s", strerror(errno));
    }
    goto done;
  }
  chunk = malloc(CHUNK);
  if (chunk == NULL) goto done;
  ssize_t r = recv_record(fd, chunk, CHUNK, deadline);
  if (r != 8 || memcmp(chunk, "ICTSACK1", 8) != 0) {
    explain_recv(r, "acknowledgement", ack_ms);
    goto done;
  }
  deadline = now_ms() + reply_ms;
  r = recv_record(fd, chunk, CHUNK, deadline);
  if (r != 16 || memcmp(chunk, "ICTSRES1", 8) != 0) {
    explain_recv(r, "reply", reply_ms);
    goto done;
  }
  *code = get_u32((unsigned char *)chunk + 8);
  uint32_t len = get_u32((unsigned char *)chunk + 12);
  if (len > MAX_REPLY) {
    debugf("the agent's reply announces %u bytes, over the %u limit", len, MAX_REPLY);
    goto done;
  }
  out->len = 0;
  while (out->len < len) {
    ssize_t n = recv_record(fd, chunk, CHUNK, deadline);
    if (n <= 0 || out->len + (size_t)n > len) {
      explain_recv(n <= 0 ? n : RECV_OVERSIZED, "reply body", reply_ms);
      goto done;
    }
    if (buf_add(out, chunk, (size_t)n) != 0) goto done;
  }
  if (!reply_is_cni(cmd, *code, out->p, out->len)) {
    debugf("the agent's reply is not a CNI result");
    goto done;
  }
  ok = 0;
done:
  free(chunk);
  close(fd);
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Fallback: exec the standalone plugin with our environment and the stdin we already read.

static void print_error_code(const char *version, int code, const char *msg, const char *details) {
  // Our own text only (paths and strerror), escaped for JSON all the same.
  struct buf b = {0};
  const char *parts[] = {msg, details};
  char head[32];
  buf_add(&b, "{\"cniVersion\":\"", 15);
  buf_add(&b, version, strlen(version));
  int hl = snprintf(head, sizeof head, "\",\"code\":%d,\"msg\":\"", code);
  buf_add(&b, head, (size_t)hl);
  for (int i = 0; i < 2; i++) {
    for (const char *p = parts[i]; *p; p++) {
      char esc[8];
      if (*p == '"' || *p == '\\') {
        esc[0] = '\\';
        esc[1] = *p;
        buf_add(&b, esc, 2);
      } else if ((unsigned char)*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", (unsigned char)*p);
        buf_add(&b, esc, 6);
      } else {
        buf_add(&b, p, 1);
      }
    }
    if (i == 0) buf_add(&b, "\",\"details\":\"", 13);
  }
  buf_add(&b, "\"}\n", 3);
  if (b.p) (void)!write(1, b.p, b.len);
}

static void print_error(const char *version, const char *msg, const char *details) {
  print_error_code(version, 100, msg, details);
}

// The runtime may delete the pod's netns while the agent works on it: our descriptor keeps the
// namespace alive, so the agent's ADD succeeds into a namespace nobody can reach any more. The
// standalone plugin fails such an ADD with code 104; so do we, once the agent has answered.
static int netns_replaced(const char *path, int fd) {
  struct stat held, now;
  if (fstat(fd, &held) != 0) return 0;
  if (stat(path, &now) != 0) return 1;
  return held.st_dev != now.st_dev || held.st_ino != now.st_ino;
}

static const char *supported_version(const struct buf *in) {
  static const char *known[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
  char *v = json_top_string(in->p ? in->p : "", in->len, "cniVersion");
  const char *r = "1.1.0";
  for (size_t i = 0; v && i < sizeof known / sizeof *known; i++) {
    if (strcmp(v, known[i]) == 0) r = known[i];
  }
  free(v);
  return r;
}

// The payload's files, as install/package.js listed them in istio-cni-ts/MANIFEST ("kind size
// path" per line; kinds loader, plugin, native, lib). Before handing them to the loader each must
// exist, be a regular file of the listed size and an ELF file of this machine: a missing library,
// a truncated copy or a foreign file is our CNI error naming it, never a loader message on
// stdout. Size and header, not a hash: a hash of the ~110 MB executable would cost more than the
// plugin's start-up on every call; the installer replaces files atomically, so what differs from
// the manifest is an interrupted copy, a partial upgrade or someone else's file, which size and
// header catch.
struct payload {
  char loader[PATH_MAX];
  char plugin[PATH_MAX];
  char libdir[PATH_MAX];
};

static int check_elf(const char *file, char *why, size_t whylen) {
  unsigned char h[EI_NIDENT + 4];
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(why, whylen, "%s: %s", file, strerror(errno));
    return -1;
  }
  ssize_t n = read(fd, h, sizeof h);
  close(fd);
  if (n != (ssize_t)sizeof h || memcmp(h, ELFMAG, SELFMAG) != 0 || h[EI_CLASS] != ELFCLASS64 || h[EI_DATA] != ELFDATA2LSB ||
      (h[18] | (h[19] << 8)) != PAYLOAD_MACHINE) {
    snprintf(why, whylen, "%s is not an ELF file for this machine (truncated, or not from this payload)", file);
    return -1;
  }
  return 0;
}

static int check_payload(const char *dir, struct payload *p, char *why, size_t whylen) {
  char mpath[PATH_MAX];
  if (snprintf(mpath, sizeof mpath, "%s" PAYLOAD_REL MANIFEST_NAME, dir) >= (int)sizeof mpath) {
    snprintf(why, whylen, "%s: path too long", dir);
    return -1;
  }
  int fd = open(mpath, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(why, whylen, "%s: %s", mpath, strerror(errno));
    return -1;
  }
  static char text[MAX_MANIFEST + 1];
  ssize_t len = read(fd, text, MAX_MANIFEST + 1);
  close(fd);
  if (len <= 0 || len > MAX_MANIFEST) {
    snprintf(why, whylen, "%s: empty, unreadable or larger than %d bytes", mpath, MAX_MANIFEST);
    return -1;
  }
  text[len] = '\0';
  p->loader[0] = p->plugin[0] = '\0';
  int line = 0;
  for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    line++;
    // Parsed by hand: sscanf would add ~120 KB to this static binary.
    char *kind = l, *sp = strchr(l, ' '), *rel = NULL, *end = NULL;
    unsigned long long size = 0;
    if (sp) {
      *sp = '\0';
      size = strtoull(sp + 1, &end, 10);
      rel = end && *end == ' ' ? end + 1 : NULL;
    }
    char file[PATH_MAX];
    if (!rel || end == sp + 1 || *rel == '\0' || rel[0] == '/' || strchr(rel, ' ') || strstr(rel, "..") != NULL) {
      if (sp) *sp = ' ';
      snprintf(why, whylen, "%s line %d is not \"kind size path\": %.80s", mpath, line, l);
      return -1;
    }
    if (snprintf(file, sizeof file, "%s" PAYLOAD_REL "%s", dir, rel) >= (int)sizeof file) {
      snprintf(why, whylen, "%s line %d: path too long", mpath, line);
      return -1;
    }
    struct stat st;
    if (stat(file, &st) != 0) {
      snprintf(why, whylen, "%s (listed in %s): %s", file, mpath, strerror(errno));
      return -1;
    }
    if (!S_ISREG(st.st_mode) || (unsigned long long)st.st_size != size) {
      snprintf(why, whylen, "%s is %lld bytes, %s lists %llu (truncated or replaced)", file, (long long)st.st_size, mpath, size);
      return -1;
    }
    if (check_elf(file, why, whylen) != 0) return -1;
    if (strcmp(kind, "loader") == 0) snprintf(p->loader, sizeof p->loader, "%s", file);
    if (strcmp(kind, "plugin") == 0) snprintf(p->plugin, sizeof p->plugin, "%s", file);
  }
  if (p->loader[0] == '\0' || p->plugin[0] == '\0') {
    snprintf(why, whylen, "%s names no %s", mpath, p->loader[0] == '\0' ? "loader" : "plugin");
    return -1;
  }
  snprintf(p->libdir, sizeof p->libdir, "%s", p->loader);
  char *slash = strrchr(p->libdir, '/');
  if (slash) *slash = '\0';
  return 0;
}

static int exec_standalone(const struct buf *in, int stdin_consumed) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    print_error(supported_version(in), "istio-cni-shim cannot find the standalone plugin", "readlink /proc/self/exe failed");
    return 1;
  }
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash) slash[1] = '\0';
  // ISTIO_CNI_SHIM_PLUGIN (tests): an executable started as it is, without the payload's loader.
  const char *override = getenv("ISTIO_CNI_SHIM_PLUGIN");
  static struct payload p;
  char *argv[8] = {0};
  if (override && *override) {
    snprintf(p.plugin, sizeof p.plugin, "%s", override);
    snprintf(p.loader, sizeof p.loader, "%s", override);
    argv[0] = p.plugin;
  } else {
    char why[2 * PATH_MAX + 160];
    if (check_payload(self, &p, why, sizeof why) != 0) {
      print_error(supported_version(in), "the istio-cni node agent is not answering and the standalone plugin's payload is broken", why);
      return 1;
    }
    // The loader runs the plugin with the payload's libraries only; --argv0 keeps the name the
    // plugin would have had if executed directly (process.argv0).
    char *a[] = {p.loader, "--library-path", p.libdir, "--argv0", p.plugin, p.plugin, NULL};
    memcpy(argv, a, sizeof a);
  }
  if (stdin_consumed) {
    int mfd = memfd_create("cni-stdin", MFD_CLOEXEC);
    if (mfd < 0 || (in->len > 0 && write(mfd, in->p, in->len) != (ssize_t)in->len) || lseek(mfd, 0, SEEK_SET) != 0 ||
        dup2(mfd, 0) < 0) {
      print_error(supported_version(in), "istio-cni-shim cannot hand stdin to the standalone plugin", strerror(errno));
      return 1;
    }
    close(mfd);
  }
  fflush(stderr);
  execve(p.loader, argv, environ);
  char details[PATH_MAX + 128];
  snprintf(details, sizeof details, "exec %s: %s", p.loader, strerror(errno));
  print_error(supported_version(in), "the istio-cni node agent is not answering and the standalone plugin cannot run", details);
  return 1;
}

int main(void) {
  debug_enabled = getenv("ISTIO_CNI_SHIM_DEBUG") != NULL;
  const char *cmd = getenv("CNI_COMMAND");
  struct buf in = {0};
  int stdin_consumed = !isatty(0);
  if (read_stdin(&in, cmd && strcmp(cmd, "VERSION") == 0 ? VERSION_STDIN_IDLE_MS : 0) != 0) {
    debugf("cannot read stdin (or larger than %u bytes)", MAX_STDIN);
    // What was read is gone from fd 0: the plugin gets exactly that, and decides.
    return exec_standalone(&in, stdin_consumed);
  }

  if (getenv("ISTIO_CNI_SHIM_STANDALONE") == NULL) {
    char *run_dir = json_top_string(in.p ? in.p : "", in.len, "cni_agent_run_dir");
    const char *dir = run_dir && run_dir[0] == '/' ? run_dir : DEFAULT_RUN_DIR;
    char sock[PATH_MAX];
    int fits = snprintf(sock, sizeof sock, "%s/%s", dir, SOCKET_NAME) < (int)sizeof sock;
    if (fits && trusted_path(dir, sock)) {
      struct buf req = {0};
      size_t env_len = 0;
      for (char **e = environ; *e; e++) env_len += strlen(*e) + 1;
      // The pod's netns, opened here where the runtime's mounts are visible (O_PATH: any kind of
      // file opens, so the agent sees exactly what a stat of CNI_NETNS would).
      const char *netns = getenv("CNI_NETNS");
      int netns_fd = -1;
      uint32_t netns_state = NETNS_NONE;
      if (netns != NULL && *netns != '\0') {
        netns_fd = open(netns, O_PATH | O_CLOEXEC);
        netns_state = netns_fd >= 0 ? NETNS_FD : NETNS_MISSING;
      }
      if (env_len <= MAX_ENV) {
        int okb = 1;
        for (char **e = environ; *e && okb; e++) okb = buf_add(&req, *e, strlen(*e) + 1) == 0;
        if (okb && (in.len == 0 || buf_add(&req, in.p, in.len) == 0)) {
          uint32_t code = 0;
          struct buf out = {0};
          if (ask_agent(sock, &req, (uint32_t)env_len, (uint32_t)in.len, netns_state, netns_fd, cmd, &code, &out) == 0) {
            if (code == 0 && netns_state == NETNS_FD && cmd && strcmp(cmd, "ADD") == 0 && netns_replaced(netns, netns_fd)) {
              char msg[PATH_MAX + 96];
              snprintf(msg, sizeof msg, "network namespace %s was removed while ADD ran", netns);
              print_error_code(supported_version(&in), 104, msg, "CNI_NETNS no longer names the namespace the rules were applied to");
              return 1;
            }
            size_t done = 0;
            while (done < out.len) {
              ssize_t w = write(1, out.p + done, out.len - done);
              if (w < 0 && errno == EINTR) continue;
              if (w <= 0) return 1;
              done += (size_t)w;
            }
            return (int)code;
          }
        }
      }
      free(req.p);
      if (netns_fd >= 0) close(netns_fd);
    }
    free(run_dir);
  }
  return exec_standalone(&in, stdin_consumed);
}
