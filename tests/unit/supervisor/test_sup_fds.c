/*
 * What a worker inherits: sup__cloexec_scan, the fallback the supervisor
 * uses in the child when close_range(2) is missing or refused, must mark
 * every fd above the contract close-on-exec, so an exec'd worker sees only
 * fds 0-5.  The test execs a real program (/bin/sh checking /proc/$$/fd)
 * after the scan, as the supervisor's child does.  (The fast path,
 * close_range itself, is the kernel's.)
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/eq_fds.h"
#include "supervisor/sup.h"

START_TEST(test_scan_marks_inherited_fds_cloexec)
{
	int pfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* fds without CLOEXEC, as a careless parent would leave them. */
		char fds[6][16];
		/* Above the contract (fds 3-5 are the worker's by design). */
		for (int i = 0; i < 4; i++)
			snprintf(fds[i], sizeof(fds[i]), "%d",
			         fcntl(open("/dev/null", O_RDONLY), F_DUPFD, 10 + i));
		if (dup2(pfd[1], 1) == -1)
			_exit(2);
		snprintf(fds[4], sizeof(fds[4]), "%d", fcntl(pfd[0], F_DUPFD, 20));
		snprintf(fds[5], sizeof(fds[5]), "%d", fcntl(pfd[1], F_DUPFD, 21));
		if (sup__cloexec_scan(EQ_FD_LISTEN + 1) != 0)
			_exit(3);
		/* The exec'd shell names each of those fds that is still open. */
		execl("/bin/sh", "sh", "-c",
		      "for f; do [ -e /proc/$$/fd/$f ] && echo \"$f\"; done; echo end", "sh",
		      fds[0], fds[1], fds[2], fds[3], fds[4], fds[5], (char *)NULL);
		_exit(4);
	}
	close(pfd[1]);
	char buf[512] = "";
	size_t n = 0;
	ssize_t r;
	while ((r = read(pfd[0], buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
	close(pfd[0]);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
	/* Only the shell's closing line: none of the six fds crossed exec. */
	ck_assert_msg(strcmp(buf, "end\n") == 0, "fds survived exec:\n%s", buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sup_fds");
	TCase *tc = tcase_create("fds");
	tcase_add_test(tc, test_scan_marks_inherited_fds_cloexec);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
