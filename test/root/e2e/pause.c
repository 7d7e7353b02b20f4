/* The pod sandbox's only process for the e2e test: it holds the pod's namespaces open and does
 * nothing else. As PID 1 of the sandbox it reaps orphans, and it exits 0 on SIGTERM or SIGINT
 * (init ignores signals it has no handler for). Built static, so the image is this one file. */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction act;
  memset(&act, 0, sizeof act);
  act.sa_handler = quit;
  sigaction(SIGTERM, &act, 0);
  sigaction(SIGINT, &act, 0);
  act.sa_handler = reap;
  act.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigaction(SIGCHLD, &act, 0);
  for (;;) pause();
}
