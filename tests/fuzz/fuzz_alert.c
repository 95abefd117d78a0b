/*
 * fuzz_alert: the alert formatters of eq-prober (workers/prober/pb_alert.h):
 * the generic webhook JSON, Slack, PagerDuty Events v2 and the mail
 * headers.  The outside bytes are what an alert carries from elsewhere: a
 * backend's error text (the cause), the host name, the routing key and the
 * mail recipient from the config.  Every JSON payload must parse back
 * (jansson) with the cause inside it; the mail must have no header line
 * injected (every line before the blank one is a known header) and
 * sendmail's argv must never take an option from the recipient.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workers/prober/pb_alert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Splits the input at the first three NUL bytes: cause, host, routing
 * key, recipient (missing parts are empty). */
static void split(const uint8_t *data, size_t size, char parts[4][512])
{
	size_t p = 0, k = 0;

	memset(parts, 0, 4 * 512);
	for (size_t i = 0; i < size && p < 4; i++) {
		if (data[i] == '\0' && p < 3) {
			p++;
			k = 0;
			continue;
		}
		if (k < 511)
			parts[p][k++] = (char)data[i];
	}
}

static void check_json(char *s, size_t len)
{
	json_error_t e;
	json_t *j;

	if (s == NULL)
		return;                      /* out of memory, or refused: fine */
	if (strlen(s) != len)
		abort();
	j = json_loadb(s, len, 0, &e);
	if (j == NULL)
		abort();
	json_decref(j);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char parts[4][512];
	struct pb_alert_event ev;
	size_t len;

	if (size < 3)
		return 0;
	split(data + 3, size - 3, parts);
	/* The first bytes choose the event: action, severity, subject, states
	 * and mode (out-of-range values included: the names say "?"). */
	pb_alert_event_init(&ev, data[0] & 1 ? PB_ACT_TRIGGER : PB_ACT_RESOLVE,
	                    (enum pb_severity)((data[0] >> 1) % 3), data[1] % (PB_SUBJECT__COUNT + 1),
	                    data[2] & 0x0f, (data[2] >> 4) & 0x0f, (data[0] >> 3) % (EQ_MODE__COUNT + 1),
	                    parts[1], parts[0], 1700000000000ULL + data[1]);
	check_json(pb_alert_fmt_webhook(&ev, &len), len);
	check_json(pb_alert_fmt_slack(&ev, &len), len);
	check_json(pb_alert_fmt_pagerduty(&ev, parts[2], &len), len);

	char *mail = pb_alert_fmt_email(&ev, parts[3], &len);
	if (mail != NULL) {
		if (strlen(mail) != len)
			abort();
		/* Exactly these header lines, then an empty line: nothing the
		 * recipient, the host or the cause hold can add one. */
		static const char *const hdr[] = { "To: ", "Subject: ", "Date: ", "MIME-Version: ",
		                                   "Content-Type: ", "Auto-Submitted: ",
		                                   "X-Equilibrium-Dedup-Key: " };
		char *line = mail;
		for (size_t i = 0; i < sizeof(hdr) / sizeof(hdr[0]); i++) {
			char *nl = strchr(line, '\n');
			if (nl == NULL || strncmp(line, hdr[i], strlen(hdr[i])) != 0)
				abort();
			line = nl + 1;
		}
		if (*line != '\n')
			abort();
		free(mail);
	}

	/* sendmail's argv: the command, "-i", then recipients, none of which
	 * may read as an option. */
	char **argv = NULL;
	if (pb_alert_sendmail_argv("/usr/sbin/sendmail", parts[3], &argv) == 0) {
		if (strcmp(argv[0], "/usr/sbin/sendmail") != 0 || strcmp(argv[1], "-i") != 0)
			abort();
		for (size_t i = 2; argv[i] != NULL; i++)
			if (argv[i][0] == '-' || argv[i][0] == '\0')
				abort();
		free(argv);
	}
	return 0;
}
