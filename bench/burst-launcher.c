// Starts one process per netns at once, the way a runtime written in Go execs a CNI plugin
// (posix_spawn: glibc clones with CLONE_VM|CLONE_VFORK, so no copy of the launcher's memory),
// waits for all of them and prints the wall time from the first spawn to the last exit.
// bench/support/launch.ts compiles it (gcc) and runs every timed exec of the benchmarks through
// it, single runs (one netns) and bursts alike: Node's own spawn forks a 60 MB process for every
// child, which a runtime does not.
//
// usage: burst-launcher STDIN_FILE OUT_DIR PROGRAM [ARG...] -- NETNS...
//   each child: PROGRAM ARG... ("@NETNS@" in an ARG becomes its netns path), the environment of the
//   launcher plus CNI_NETNS=<its netns>, stdin from STDIN_FILE, stdout to OUT_DIR/<i>.out,
//   stderr to OUT_DIR/<i>.err; exit code in OUT_DIR/<i>.rc
// output: one line "wall_ms <ms>"
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  int sep = 4;
  while (sep < argc && strcmp(argv[sep], "--") != 0) sep++;
  if (argc < 6 || sep >= argc - 1) {
    fprintf(stderr, "usage: %s STDIN_FILE OUT_DIR PROGRAM [ARG...] -- NETNS...\n", argv[0]);
    return 2;
  }
  const char *in = argv[1], *out = argv[2], *prog = argv[3];
  int nargs = sep - 4;
  int n = argc - sep - 1;
  char **netns = argv + sep + 1;
  size_t envc = 0;
  while (environ[envc]) envc++;
  pid_t *pids = calloc(n, sizeof *pids);
  char ***envs = calloc(n, sizeof *envs);
  char ***argvs = calloc(n, sizeof *argvs);
  posix_spawn_file_actions_t *fa = calloc(n, sizeof *fa);
  char path[4096];
  // Everything per child is prepared before the clock starts.
  for (int i = 0; i < n; i++) {
    envs[i] = calloc(envc + 2, sizeof(char *));
    size_t k = 0;
    for (size_t j = 0; j < envc; j++)
      if (strncmp(environ[j], "CNI_NETNS=", 10) != 0) envs[i][k++] = environ[j];
    if (asprintf(&envs[i][k++], "CNI_NETNS=%s", netns[i]) < 0) return 2;
    argvs[i] = calloc(nargs + 2, sizeof(char *));
    argvs[i][0] = (char *)prog;
    for (int a = 0; a < nargs; a++) {
      const char *arg = argv[4 + a], *at = strstr(arg, "@NETNS@");
      argvs[i][1 + a] = (char *)arg;
      if (at && asprintf(&argvs[i][1 + a], "%.*s%s%s", (int)(at - arg), arg, netns[i], at + 7) < 0) return 2;
    }
    posix_spawn_file_actions_init(&fa[i]);
    posix_spawn_file_actions_addopen(&fa[i], 0, in, O_RDONLY, 0);
    snprintf(path, sizeof path, "%s/%d.out", out, i);
    posix_spawn_file_actions_addopen(&fa[i], 1, path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    snprintf(path, sizeof path, "%s/%d.err", out, i);
    posix_spawn_file_actions_addopen(&fa[i], 2, path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  }
  double t0 = now_ms();
  for (int i = 0; i < n; i++) {
    if (posix_spawnp(&pids[i], prog, &fa[i], NULL, argvs[i], envs[i]) != 0) {
      perror("posix_spawn");
      return 2;
    }
  }
  for (int left = n; left > 0; left--) {
    int status;
    pid_t p = wait(&status);
    if (p < 0) {
      perror("wait");
      return 2;
    }
    for (int i = 0; i < n; i++) {
      if (pids[i] != p) continue;
      snprintf(path, sizeof path, "%s/%d.rc", out, i);
      FILE *f = fopen(path, "w");
      if (f) {
        fprintf(f, "%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        fclose(f);
      }
    }
  }
  printf("wall_ms %.1f\n", now_ms() - t0);
  return 0;
}
